/**
 * The one place that knows the outcomes an old key can have: each scanned old key ends in exactly
 * one, and the summary, the metrics and the migration scripts derive from this list.
 *
 * @module
 */

/** What the summary and the metrics show of one outcome. */
export interface OutcomeInfo {
  /** The label of its line in the text summary. */
  readonly label: string;
  /** Dry-run counts it without writing: the text summary says "(counted, not written)". */
  readonly writes: boolean;
  /** Counted in `relay_backfill_skipped_total` under this `reason` (skipped outcomes only). */
  readonly skipReason?: "exists" | "invalid" | "gone";
}

/** The one table of outcomes, in summary order. */
export const OUTCOME_TABLE = {
  migrated: { label: "Migrated", writes: true },
  repaired: { label: "Repaired", writes: true },
  skipped_exists: { label: "Skipped (exists)", writes: false, skipReason: "exists" },
  skipped_invalid: { label: "Skipped (invalid)", writes: false, skipReason: "invalid" },
  skipped_gone: { label: "Skipped (gone)", writes: false, skipReason: "gone" },
  filtered: { label: "Filtered", writes: false },
  errors: { label: "Errors", writes: false },
} as const satisfies Record<string, OutcomeInfo>;

export type Outcome = keyof typeof OUTCOME_TABLE;

export const OUTCOMES: readonly Outcome[] = Object.keys(OUTCOME_TABLE) as Outcome[];

export function outcomeInfo(outcome: Outcome): OutcomeInfo {
  return OUTCOME_TABLE[outcome];
}

/** Counts of old keys per outcome, plus `scanned`, which is their sum. */
export type Counters = { scanned: number } & Record<Outcome, number>;

export function emptyCounters(): Counters {
  const counters = { scanned: 0 } as Counters;
  for (const outcome of OUTCOMES) counters[outcome] = 0;
  return counters;
}

/** Why an old key is `skipped_invalid`: the one list of reasons (metrics and logs use it). */
export const INVALID_REASONS = [
  "not_hash",
  "no_workspace_id",
  "invalid_workspace_id",
  "empty_job_id",
] as const;

export type InvalidReason = typeof INVALID_REASONS[number];

/** The result for one old key, as the migration strategy reports it. */
export interface KeyResult {
  outcome: Outcome;
  /** The job's workspace id when it is valid (never an invalid id). */
  workspace?: string;
  /** For `skipped_invalid`: why (left out by strategies that do not tell). */
  invalidReason?: InvalidReason;
  /**
   * For `skipped_invalid` only: the old key's name, so the first invalid keys can be logged.
   * Other results leave it out: a batch must not hold every key name twice.
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

/** Names each invalid key on its result (`keys[i]` for `results[i]`), so the first can be logged. */
export function nameInvalidKeys<T extends KeyResult>(
  keys: readonly Uint8Array[],
  results: T[],
): T[] {
  results.forEach((result, i) => {
    if (result.outcome === "skipped_invalid") result.key = keys[i];
  });
  return results;
}
