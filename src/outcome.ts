/**
 * The one place that knows the outcomes an old key can have. Each scanned old key ends in exactly one
 * of them; the summary, the metrics and the migration scripts all derive from this list.
 *
 * @module
 */

/** Every outcome, in summary order. */
export const OUTCOMES = [
  "migrated",
  "repaired",
  "skipped_exists",
  "skipped_invalid",
  "skipped_gone",
  "filtered",
  "errors",
] as const;

/** What happened to one old key. */
export type Outcome = typeof OUTCOMES[number];

/** Counts of old keys per outcome, plus `scanned`, which is their sum. */
export type Counters = { scanned: number } & Record<Outcome, number>;

/** A fresh set of counters, all zero. */
export function emptyCounters(): Counters {
  return {
    scanned: 0,
    migrated: 0,
    repaired: 0,
    skipped_exists: 0,
    skipped_invalid: 0,
    skipped_gone: 0,
    filtered: 0,
    errors: 0,
  };
}

/** Why an old key is `skipped_invalid`: the one list of reasons (metrics and logs use it). */
export const INVALID_REASONS = [
  "not_hash",
  "no_workspace_id",
  "invalid_workspace_id",
  "empty_job_id",
] as const;

/** Why an old key is invalid. */
export type InvalidReason = typeof INVALID_REASONS[number];

/** The result for one old key, as the migration strategy reports it. */
export interface KeyResult {
  /** What happened. */
  outcome: Outcome;
  /** The job's workspace id when it is valid; `undefined` otherwise (never an invalid id). */
  workspace?: string;
  /** For `skipped_invalid`: why (left out by strategies that do not tell). */
  invalidReason?: InvalidReason;
  /**
   * For `skipped_invalid` only: the old key's name, so the first invalid keys can be logged
   * (escaped). Other results leave it out: a batch must not hold every key name twice.
   */
  key?: string | Uint8Array;
}

/** Adds a batch's results to `counters` (mutates and returns it). */
export function countResults(counters: Counters, results: readonly KeyResult[]): Counters {
  for (const result of results) {
    counters[result.outcome]++;
    counters.scanned++;
  }
  return counters;
}
