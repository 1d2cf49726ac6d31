/**
 * `backfill status` over every runner of a progress key: the status of a run over the whole
 * deployment (`<P>:status`) and one per `--shard` runner (`<P>:status:<I>/<N>`, listed in
 * `<P>:status:shards`), each read with its own age, plus a total over the shards. With no
 * sharded runner the output is exactly the one-run form of status.ts.
 *
 * @module
 */
import type { Cluster, Redis } from "../redis/ioredis.ts";
import { parseShard, type Shard, shardLabel } from "../redis/shard.ts";
import {
  type ReadStatus,
  readStatus,
  renderStatus,
  type RunStatus,
  statusShardsKey,
} from "./status.ts";

/** One runner's status; `shard` is undefined for a run over the whole deployment. */
export interface RunnerStatus extends ReadStatus {
  shard?: Shard;
}

/** Every published status of `progressKey`: the unsharded one first, then shards by N and I. */
export async function readAllStatuses(
  client: Redis | Cluster,
  progressKey: string,
): Promise<RunnerStatus[]> {
  const labels = await client.smembers(statusShardsKey(progressKey));
  const shards = labels.flatMap((label) => {
    try {
      return [parseShard(label)];
    } catch {
      return []; // not written by us: ignore
    }
  }).filter((shard) => shard.count > 1)
    .sort((a, b) => a.count - b.count || a.index - b.index);
  const reads = await Promise.all([
    readStatus(client, progressKey).then((read) => read && { ...read }),
    ...shards.map(async (shard) => {
      const read = await readStatus(client, progressKey, shard);
      return read && { ...read, shard };
    }),
  ]);
  return reads.filter((read): read is RunnerStatus => read !== undefined);
}

/** Sums over runners (pure). */
export interface StatusTotal {
  runners: number;
  active: number;
  stale: number;
  finished: number;
  counts: Record<string, number>;
  estimated_total: number;
  /** Sum of the active runners' rates; null when one of them runs unlimited. */
  rps: number | null;
}

/** The total over `reads` (pure). */
export function totalOf(reads: readonly RunnerStatus[]): StatusTotal {
  const counts: Record<string, number> = {};
  let rps: number | null = 0;
  for (const { status, state } of reads) {
    for (const [name, n] of Object.entries(status.counts)) counts[name] = (counts[name] ?? 0) + n;
    if (state !== "active") continue;
    if (status.rate.paused) continue;
    rps = status.rate.rps === 0 || rps === null ? null : rps + status.rate.rps;
  }
  return {
    runners: reads.length,
    active: reads.filter((r) => r.state === "active").length,
    stale: reads.filter((r) => r.state === "stale").length,
    finished: reads.filter((r) => r.state === "finished").length,
    counts,
    estimated_total: reads.reduce((sum, r) => sum + r.status.estimated_total, 0),
    rps,
  };
}

/** `backfill status` as text (pure): one block per runner, then a total line. */
export function renderAllStatuses(reads: readonly RunnerStatus[]): string {
  if (reads.length === 0 || (reads.length === 1 && reads[0]!.shard === undefined)) {
    return renderStatus(reads[0]);
  }
  const blocks = reads.map((read) =>
    `${read.shard ? `shard ${shardLabel(read.shard)}` : "all masters"}: ${renderStatus(read)}`
  );
  const total = totalOf(reads);
  const scanned = total.counts.scanned ?? 0;
  const pct = total.estimated_total > 0
    ? ` (${Math.min(100, (scanned / total.estimated_total) * 100).toFixed(1)}%)`
    : "";
  const rate = total.rps === null ? "unlimited" : `${total.rps}/s`;
  const counts = Object.entries(total.counts).map(([name, n]) => `${name}=${n}`).join(" ");
  const line = `total: ${total.runners} runners (${total.active} active, ${total.stale} stale, ` +
    `${total.finished} finished); scanned ${scanned} of ~${total.estimated_total}${pct}; ` +
    `rate ${rate}; ${counts}`;
  return `${blocks.join("\n")}\n${line}\n`;
}

/**
 * `status --json`: with no sharded runner, the one-run object (`{"state":"none"}` when nothing is
 * published); otherwise `{state, active, runners: [...], total}`, where `state` is `active` when
 * any runner is, else `stale` when any is, else `finished`.
 */
export function allStatusesJson(reads: readonly RunnerStatus[]): Record<string, unknown> {
  if (reads.length === 0 || (reads.length === 1 && reads[0]!.shard === undefined)) {
    return oneJson(reads[0]);
  }
  const total = totalOf(reads);
  const state = total.active > 0 ? "active" : total.stale > 0 ? "stale" : "finished";
  return {
    state,
    active: state === "active",
    runners: reads.map((read) => ({
      shard: read.shard ? shardLabel(read.shard) : null,
      ...oneJson(read),
    })),
    total,
  };
}

/** One run's status object: the published fields with its state and age. */
function oneJson(read: ReadStatus | undefined): Record<string, unknown> {
  if (read === undefined) return { state: "none", active: false };
  const status: RunStatus = read.status;
  return {
    state: read.state,
    active: read.state === "active",
    age_seconds: read.age_seconds,
    ...status,
  };
}
