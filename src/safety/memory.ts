/**
 * Memory headroom. The copy roughly doubles the memory of every migrated job, and a Redis at
 * `maxmemory` rejects the application's writes (OOM) or evicts its keys. So the copy is estimated
 * before writing and refused when it would not fit (the health check watches during the run).
 *
 * @module
 */
import { SafetyRefusal } from "../errors.ts";
import type { Redis } from "../redis/ioredis.ts";
import type { Logger } from "../run_events.ts";
import { Buffer } from "node:buffer";
import type { KeySchema } from "../schema.ts";

/** The fields of `INFO memory` used here; `max` is `maxmemory` (0: no limit). */
export interface MemoryInfo {
  used: number;
  max: number;
  policy: string;
}

/** Parses `INFO memory`. */
export function parseMemoryInfo(info: string): MemoryInfo {
  const field = (name: string) => info.match(new RegExp(`^${name}:(.*)$`, "m"))?.[1]?.trim() ?? "";
  return {
    used: Number(field("used_memory")) || 0,
    max: Number(field("maxmemory")) || 0,
    policy: field("maxmemory_policy") || "noeviction",
  };
}

/** What the copy would do to memory (pure). */
export function headroom(memory: MemoryInfo, estimateBytes: number, maxPct: number): {
  limit: number;
  projected: number;
  fits: boolean;
} {
  const limit = memory.max * (maxPct / 100);
  const projected = memory.used + estimateBytes;
  return { limit, projected, fits: memory.max === 0 || projected <= limit };
}

/** True for policies under which a full Redis silently drops keys (maybe jobs). */
export function isEvicting(policy: string): boolean {
  return policy !== "noeviction" && policy !== "";
}

/** Bytes as MiB with one decimal. */
export function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/**
 * Bytes the copy will add on one node (read-only): the mean `MEMORY USAGE` of a sample of old keys
 * with no new key yet, times the node's estimated count of such keys.
 */
async function estimateCopyBytes(node: Redis, keys: KeySchema): Promise<number> {
  const sampleSize = 64;
  const oldPrefix = keys.oldPrefix.toString();
  const size = await node.dbsize();
  if (size === 0) return 0;
  // Random keys give an unbiased share of old keys; a first SCAN page backs them up when old keys
  // are too rare for RANDOMKEY to find.
  const random = node.pipeline();
  for (let i = 0; i < sampleSize; i++) random.randomkey();
  const drawn = ((await random.exec()) ?? []).map(([, key]) => key as string | null);
  let old = drawn.filter((key): key is string => key?.startsWith(oldPrefix) ?? false);
  const oldShare = old.length / Math.max(drawn.length, 1);
  if (old.length < 8) {
    const [, scanned] = await node.scan("0", "MATCH", keys.oldMatch, "COUNT", 1000);
    old = scanned.slice(0, sampleSize);
  }
  if (old.length === 0) return 0;
  const probe = node.pipeline();
  for (const key of old) {
    probe.call("MEMORY", "USAGE", key);
    for (const field of keys.fields) probe.hget(key, field);
  }
  const replies = (await probe.exec()) ?? [];
  const check = node.pipeline();
  const pending: number[] = [];
  // Per old key: its usage, then the values of the fields its new key's name reads.
  const stride = 1 + keys.fields.length;
  for (let i = 0; i < old.length; i++) {
    const usage = Number(replies[stride * i]?.[1] ?? 0);
    const values = replies.slice(stride * i + 1, stride * (i + 1)).map(([, value]) => value);
    const newKey = values.every((value) => typeof value === "string")
      ? keys.newKeyOf(Buffer.from(old[i]!), values as string[])
      : undefined;
    if (newKey === undefined) continue;
    pending.push(usage);
    check.exists(newKey);
  }
  const exists = pending.length > 0 ? (await check.exec()) ?? [] : [];
  // An error (a cluster's MOVED: the new key lives on another node) counts as "to copy".
  const usages = pending.filter((_, i) => exists[i]?.[1] !== 1);
  const share = usages.length / old.length;
  const mean = usages.length === 0 ? 0 : usages.reduce((a, b) => a + b, 0) / usages.length;
  const oldKeys = oldShare > 0 ? size * oldShare : old.length;
  return Math.round(mean * share * oldKeys);
}

/** Options of {@linkcode checkHeadroom}. */
interface HeadroomOptions {
  /** `--max-memory-pct`: the share of maxmemory the copy may fill up to. */
  maxPct: number;
  /** Refuse when a node lacks the headroom (`--execute`); a dry run only reports the verdict. */
  enforce: boolean;
  logger: Logger;
  nameOf: (node: Redis) => string;
  keys: KeySchema;
}

/**
 * Estimates the copy on every node before the run and refuses when it would pass the bound.
 *
 * @throws {SafetyRefusal} when `enforce` and a node lacks the headroom.
 */
export async function checkHeadroom(nodes: Redis[], options: HeadroomOptions): Promise<void> {
  const { logger, maxPct, enforce } = options;
  for (const node of nodes) {
    const name = options.nameOf(node);
    const [memory, estimate] = await Promise.all([
      node.info("memory").then(parseMemoryInfo),
      estimateCopyBytes(node, options.keys),
    ]);
    if (isEvicting(memory.policy) && memory.max > 0) {
      logger.log(
        "warn",
        "memory_evicting_policy",
        `Redis at ${name} has maxmemory-policy ${memory.policy}: at the limit it evicts keys ` +
          `(possibly jobs) instead of refusing writes; consider noeviction during the backfill`,
        { node: name },
      );
    }
    const verdict = headroom(memory, estimate, maxPct);
    if (!verdict.fits) {
      const detail = `used ${mib(memory.used)} + about ${mib(estimate)} to copy = ` +
        `${mib(verdict.projected)}, over ${maxPct}% of maxmemory (${mib(verdict.limit)})`;
      if (enforce) {
        throw new SafetyRefusal(
          `not enough memory headroom on ${name}: ${detail}; raise maxmemory, free memory, ` +
            `or migrate per --workspace`,
        );
      }
      logger.log("warn", "memory_headroom", `execute would be refused: ${detail}`, {
        node: name,
      });
      continue;
    }
    const bound = memory.max === 0
      ? ` (used ${mib(memory.used)}, no maxmemory set)`
      : `: ${mib(verdict.projected)} of ${mib(memory.max)} maxmemory (bound ${maxPct}%)`;
    logger.log(
      "info",
      "memory_estimate",
      `the copy needs about ${mib(estimate)} more on ${name}${bound}`,
      { node: name, estimate_bytes: estimate, used_bytes: memory.used },
    );
  }
}
