/**
 * The one exponential backoff: `first × 2^attempt`, capped. Every retry loop takes its delays
 * from here.
 *
 * @module
 */

/** Shape of a backoff, in ms: the delay before the first retry, and the largest delay. */
export interface Backoff {
  firstMs: number;
  maxMs: number;
}

/**
 * Milliseconds to wait before retry number `attempt` (0-based).
 *
 * @example
 * ```ts
 * import { backoffMs } from "./backoff.ts";
 * backoffMs(3, { firstMs: 100, maxMs: 2_000 }); // 800
 * ```
 */
export function backoffMs(attempt: number, backoff: Backoff): number {
  return Math.min(backoff.firstMs * 2 ** Math.max(attempt, 0), backoff.maxMs);
}

/** Reconnects and waits for a lost node: 100 ms, doubling, at most 2 s. */
export const RECONNECT: Backoff = { firstMs: 100, maxMs: 2_000 };
