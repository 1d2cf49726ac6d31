/**
 * The checks of a verify run: which keys form each population, how a batch of old keys (jobs) or
 * new keys (orphans) is read and judged, and the rechecks that let a dual write in flight land
 * before a difference counts. Reads only, paced by the limiter.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { delay } from "../async/delay.ts";
import type { RateLimiter } from "../control/rate_limit.ts";
import {
  asBuffer,
  isWrongType,
  readAll,
  type Reply,
  rethrow,
  toFieldMap,
} from "../redis/read_raw.ts";
import type { Cluster, Redis } from "../redis/ioredis.ts";
import { isSameWorkspace, type KeySchema } from "../schema.ts";
import { compareJob, type JobVerdict, type KeyState } from "./compare.ts";
import { orphanReason } from "./full/compare.ts";
import { KeyCode } from "./full/scripts.ts";
import type { KeyPopulation } from "./sample.ts";

/** Keys checked per pipelined round trip (fewer when `--rps` is lower, see `batchSize`). */
const CHECK_BATCH = 500;

/** The verify options the checks use (see `VerifyOptions` in run.ts). */
export interface CheckOptions {
  workspace?: string;
  /** The key mapping and the workspace rule. */
  keys: KeySchema;
  ttlToleranceSeconds: number;
  recheck: number;
  recheckDelayMs: number;
}

/** What every check of one verify run shares. */
export interface CheckContext {
  reader: Redis | Cluster;
  options: CheckOptions;
  batch: number;
  limiter: Pick<RateLimiter, "acquire">;
  signal: AbortSignal | undefined;
  /** Seconds spent waiting for the limiter so far. */
  waited: number;
}

/**
 * Batch size under `--rps`: a quarter of a second's budget, so pacing is smooth and a batch always
 * fits the limiter's one-second window.
 */
export function batchSize(rps: number): number {
  return rps > 0 ? Math.max(1, Math.min(CHECK_BATCH, Math.floor(rps / 4))) : CHECK_BATCH;
}

/** Old keys (optionally of one workspace, confirmed by reading `workspace_id`). */
export function oldPopulation(ctx: CheckContext): KeyPopulation {
  const { workspace, keys: schema } = ctx.options;
  return {
    match: schema.oldMatch,
    isCandidate: (key) => schema.idOf(key) !== undefined,
    confirm: workspace === undefined ? undefined : (keys) =>
      inBatches(keys, ctx, async (batch) => {
        const replies = await readAll(
          ctx.reader,
          batch.map((key) => ["HGET", key, schema.workspaceField]),
        );
        return replies.map(([error, raw]) => {
          // A key that is not a hash, or has no workspace_id, is a job of no workspace.
          if (isWrongType(error) || raw === null) return false;
          rethrow(error);
          return schema.checkWorkspace(asBuffer(raw)) === workspace;
        });
      }),
  };
}

/** New keys; with a workspace, only that workspace's (the name tells, no read needed). */
export function newPopulation(keys: KeySchema, workspace: string | undefined): KeyPopulation {
  return {
    match: workspace === undefined ? keys.newMatch : keys.newMatchFor(workspace),
    isCandidate: (key) => {
      const parsed = keys.parseNewKey(key);
      return parsed !== undefined &&
        (workspace === undefined || isSameWorkspace(parsed.workspace, workspace));
    },
  };
}

/** Checks old keys: read the old hashes, then the new hashes and both TTLs side by side. */
export async function checkJobs(keys: readonly Buffer[], ctx: CheckContext): Promise<JobVerdict[]> {
  const schema = ctx.options.keys;
  return await inBatches(keys, ctx, async (batch) => {
    const oldReplies = await readAll(ctx.reader, batch.map((key) => ["HGETALL", key]));
    const verdicts: (JobVerdict | undefined)[] = [];
    const pending: { index: number; key: Buffer; newKey: Buffer; fields: Map<string, Buffer> }[] =
      [];
    oldReplies.forEach(([error, reply], index) => {
      const key = batch[index] as Buffer;
      // Not a hash: the backfill skips it as invalid.
      if (isWrongType(error)) {
        verdicts[index] = { kind: "invalid" };
        return;
      }
      rethrow(error);
      const fields = toFieldMap(reply);
      const workspace = schema.checkWorkspace(fields.get(schema.workspaceField));
      const newKey = workspace === undefined ? undefined : schema.newKeyOf(key, [workspace]);
      if (fields.size === 0) verdicts[index] = { kind: "gone" };
      else if (newKey === undefined) verdicts[index] = { kind: "invalid" };
      else pending.push({ index, key, newKey, fields });
    });
    // PTTL of old and new are read next to each other, so the time between the two round trips
    // does not show up as a TTL difference.
    const replies = await readAll(
      ctx.reader,
      pending.flatMap(({ key, newKey }) => [["HGETALL", newKey], ["PTTL", newKey], ["PTTL", key]]),
    );
    pending.forEach(({ index, fields }, i) => {
      const [newError, newReply] = replies[i * 3] as Reply;
      const [newTtlError, newTtl] = replies[i * 3 + 1] as Reply;
      const [oldTtlError, oldTtl] = replies[i * 3 + 2] as Reply;
      rethrow(newTtlError);
      rethrow(oldTtlError);
      let fresh: KeyState;
      if (isWrongType(newError)) fresh = { type: "other" };
      else {
        rethrow(newError);
        const newFields = toFieldMap(newReply);
        fresh = newFields.size === 0
          ? { type: "absent" }
          : { type: "hash", fields: newFields, pttl: Number(newTtl) };
      }
      const old: KeyState = { type: "hash", fields, pttl: Number(oldTtl) };
      verdicts[index] = compareJob(old, fresh, ctx.options.ttlToleranceSeconds);
    });
    return verdicts as JobVerdict[];
  });
}

/** The verdict on one sampled new key. */
export type OrphanVerdict = "ok" | "orphan" | "gone";

/**
 * Checks new keys: does the new key still exist, and does its old twin, naming the same
 * workspace? A copy under another workspace than its old key's is an orphan, by the same rule as
 * `verify --full` (`orphanReason`).
 */
export async function checkOrphans(
  keys: readonly Buffer[],
  ctx: CheckContext,
): Promise<OrphanVerdict[]> {
  const schema = ctx.options.keys;
  return await inBatches(keys, ctx, async (batch) => {
    const parsed = batch.map((key) => schema.parseNewKey(key)!);
    const replies = await readAll(
      ctx.reader,
      batch.flatMap((key, i) => {
        const old = parsed[i]!.oldKey;
        return [["EXISTS", key], ["EXISTS", old], ["HGET", old, schema.workspaceField]];
      }),
    );
    return batch.map((_, i) => {
      const [newError, newExists] = replies[i * 3] as Reply;
      const [oldError, oldExists] = replies[i * 3 + 1] as Reply;
      const [ownerError, owner] = replies[i * 3 + 2] as Reply;
      rethrow(newError);
      rethrow(oldError);
      if (Number(newExists) === 0) return "gone";
      if (!isWrongType(ownerError)) rethrow(ownerError);
      const code = Number(oldExists) === 0
        ? KeyCode.absent
        : isWrongType(ownerError)
        ? KeyCode.notHash
        : owner === null
        ? KeyCode.noWorkspace
        : KeyCode.hash;
      // parseNewKey gives the workspace as latin1: back to the exact bytes of the key name.
      const workspace = Buffer.from(parsed[i]!.workspace, "latin1");
      return orphanReason(workspace, [code, owner]) === undefined ? "ok" : "orphan";
    });
  });
}

/**
 * Checks `keys`, then rechecks the failures up to `recheck` times with a pause, keeping the last
 * verdict: a difference counts only if it survives every recheck. `transient` counts failures
 * that stopped failing.
 */
export async function withRechecks<V>(
  keys: readonly Buffer[],
  check: (keys: readonly Buffer[]) => Promise<V[]>,
  failed: (verdict: V) => boolean,
  ctx: CheckContext,
): Promise<{ verdicts: V[]; transient: number }> {
  const verdicts = await check(keys);
  let pending = indicesWhere(verdicts, failed);
  const firstFailures = pending.length;
  for (let round = 0; round < ctx.options.recheck && pending.length > 0; round++) {
    await delay(ctx.options.recheckDelayMs, { signal: ctx.signal });
    const again = await check(pending.map((i) => keys[i] as Buffer));
    pending.forEach((index, j) => verdicts[index] = again[j] as V);
    pending = pending.filter((index) => failed(verdicts[index] as V));
  }
  return { verdicts, transient: firstFailures - pending.length };
}

function indicesWhere<V>(items: readonly V[], predicate: (item: V) => boolean): number[] {
  const out: number[] = [];
  items.forEach((item, i) => predicate(item) && out.push(i));
  return out;
}

/** Runs `work` over `keys` in batches of `ctx.batch`, each after the limiter admits it. */
async function inBatches<T>(
  keys: readonly Buffer[],
  ctx: CheckContext,
  work: (batch: Buffer[]) => Promise<T[]>,
): Promise<T[]> {
  const out: T[] = [];
  for (let start = 0; start < keys.length; start += ctx.batch) {
    ctx.signal?.throwIfAborted();
    const batch = keys.slice(start, start + ctx.batch);
    ctx.waited += await ctx.limiter.acquire(batch.length, ctx.signal);
    out.push(...await work(batch));
  }
  return out;
}
