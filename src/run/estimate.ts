/**
 * How far a SCAN has come, from its cursor alone. Redis walks the hash table in reverse-binary
 * order: the cursor's bits, reversed within the table size, give the share of buckets already
 * visited. That turns "keys seen so far" into an estimate of the total, refined as the scan goes.
 *
 * @module
 */
import type { Redis } from "../redis/ioredis.ts";

/** Share (0..1) of the table a SCAN has visited when it is at `cursor`, for a table of ~`keys` keys. */
export function scanFraction(cursor: string, keys: number): number {
  const value = BigInt(cursor);
  if (value === 0n) return 0;
  let bits = Math.max(1, Math.ceil(Math.log2(Math.max(keys, 2))));
  while (value >> BigInt(bits) !== 0n) bits++;
  let reversed = 0n;
  for (let i = 0; i < bits; i++) reversed = (reversed << 1n) | ((value >> BigInt(i)) & 1n);
  return Number(reversed) / 2 ** bits;
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
 * The nodes' DBSIZE in all, and a first guess of the old keys (starting with `oldPrefix`) on them:
 * each node's DBSIZE × the share of old keys among 64 random keys (read-only, O(1) each).
 */
export async function initialEstimate(
  nodes: readonly Redis[],
  oldPrefix: string,
): Promise<{ dbsize: number; estimate: number }> {
  const guesses = await Promise.all(nodes.map(async (node) => {
    const size = await node.dbsize();
    if (size === 0) return { size, old: 0 };
    const pipeline = node.pipeline();
    for (let draw = 0; draw < 64; draw++) pipeline.randomkey();
    const replies = (await pipeline.exec()) ?? [];
    const old = replies.filter(([, key]) => typeof key === "string" && key.startsWith(oldPrefix));
    return { size, old: Math.round((size * old.length) / Math.max(replies.length, 1)) };
  }));
  return {
    dbsize: guesses.reduce((sum, guess) => sum + guess.size, 0),
    estimate: guesses.reduce((sum, guess) => sum + guess.old, 0),
  };
}
