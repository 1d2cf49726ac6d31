/**
 * The time budget of one `verify --full` script call, as Redis counts it. The script's own clock
 * (TIME at its first and last line) misses what Redis does around it: finding the script, building
 * ARGV (one Lua string per key), and turning the reply into RESP (one entry per key). INFO
 * commandstats counts those too, about 10 µs a call plus 0.75 µs a key on the benchmark machine
 * (`usec_per_call` against the script's own mean, for 1 to 64 keys a call), so a call sized to
 * 250 µs of its own time held Redis ~270 µs. Calls are sized to a share of the budget, so that
 * calls that run slower than predicted still stay under it, and the script stops early when its
 * own clock says the next keys would overrun the whole budget.
 *
 * @module
 */

/** Redis time of a call outside the script's own clock: per call, and per key it carries. */
export const OUTSIDE_SCRIPT_US = { perCall: 10, perKey: 0.75 } as const;

/**
 * Calls are sized to this share of the budget: the sizing follows the last calls, and a call that
 * runs 10% slower than they did is still within the budget.
 */
export const TARGET_SHARE = 0.9;

/**
 * The script's own time a call of `keys` keys may take so that, with the time outside its clock,
 * it holds Redis at most `budgetUs` (never below 1 µs: one key is always answered).
 *
 * @example
 * ```ts
 * import { ownTimeLimitUs } from "./call_budget.ts";
 * ownTimeLimitUs(250, 20); // 225: 250 − 10 per call − 20 × 0.75
 * ```
 */
export function ownTimeLimitUs(budgetUs: number, keys: number): number {
  return Math.max(1, budgetUs - OUTSIDE_SCRIPT_US.perCall - keys * OUTSIDE_SCRIPT_US.perKey);
}

/**
 * Keys a call should carry to take {@linkcode TARGET_SHARE} of `budgetUs` in Redis, given the
 * script's own time per key measured on a recent call (at least 1).
 *
 * @example
 * ```ts
 * import { keysForBudget } from "./call_budget.ts";
 * keysForBudget(250, 11.5); // 17: (225 − 10) / (11.5 + 0.75)
 * ```
 */
export function keysForBudget(budgetUs: number, ownUsPerKey: number): number {
  const target = budgetUs * TARGET_SHARE - OUTSIDE_SCRIPT_US.perCall;
  const perKey = Math.max(ownUsPerKey, 0.01) + OUTSIDE_SCRIPT_US.perKey;
  return Math.max(1, Math.floor(target / perKey));
}

/**
 * Weights of a call's pace in the moving average: a slower pace moves it half-way at once, a
 * faster one a fifth of the way.
 */
const PACE_WEIGHT = { slower: 0.5, faster: 0.2 } as const;

/**
 * The moving average of a call pace (µs per key or per unit) after one more call's `pace`: it
 * follows a slower pace fast and a faster one gently (one fast call must not make the next ones
 * overrun), and a pace counts as at most 4× the average (one stalled call does not shrink the next
 * dozen). `undefined` before the first call.
 *
 * @example
 * ```ts
 * import { followPace } from "./call_budget.ts";
 * followPace(10, 20); // 15: slower, half-way
 * followPace(10, 5); // 9: faster, a fifth of the way
 * ```
 */
export function followPace(average: number | undefined, pace: number): number {
  const from = average ?? pace;
  const weight = pace > from ? PACE_WEIGHT.slower : PACE_WEIGHT.faster;
  return from + weight * (Math.min(pace, from * 4) - from);
}
