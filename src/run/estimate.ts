/**
 * How far a SCAN has come, from its cursor alone: its place in SCAN's reverse-binary walk is the
 * share of buckets already visited. That turns "keys seen so far" into an estimate of the total,
 * refined as the scan goes.
 *
 * @module
 */
import { scanOrder } from "../checkpoint/batch_position.ts";
import type { Redis } from "../redis/ioredis.ts";

/** Share (0..1) of the table a SCAN has visited when it is at `cursor` ("0": none yet). */
export function scanFraction(cursor: string): number {
  const order = scanOrder(cursor);
  return order === 1n << 64n ? 0 : Number(order) / 2 ** 64;
}

/**
 * Estimated number of old keys in this run: the initial guess until the scan has covered 2% of the
 * table, then `seen / covered share`.
 */
export function estimateTotal(options: {
  initial: number;
  seen: number;
  startFraction: number;
  fraction: number;
  done: boolean;
}): number {
  if (options.done) return options.seen;
  const covered = options.fraction - options.startFraction;
  if (covered < 0.02) return Math.max(options.initial, options.seen);
  const remaining = 1 - options.startFraction;
  return Math.max(options.seen, Math.round((options.seen / covered) * remaining));
}

/**
 * First guess of the old keys (starting with `oldPrefix`): each node's DBSIZE × the share of old
 * keys among 64 random keys (read-only, O(1) each).
 */
export async function initialEstimate(nodes: readonly Redis[], oldPrefix: string): Promise<number> {
  const guesses = await Promise.all(nodes.map(async (node) => {
    const size = await node.dbsize();
    if (size === 0) return 0;
    const pipeline = node.pipeline();
    for (let draw = 0; draw < 64; draw++) pipeline.randomkey();
    const replies = (await pipeline.exec()) ?? [];
    const old = replies.filter(([, key]) => typeof key === "string" && key.startsWith(oldPrefix));
    return Math.round((size * old.length) / Math.max(replies.length, 1));
  }));
  return guesses.reduce((a, b) => a + b, 0);
}
