/**
 * The running totals of one migration, kept with its checkpoint so the metrics of a resumed run
 * continue where the last run stopped: a hash `<P>:totals` (`{P}:totals` on a cluster) with one
 * field per outcome (`migrated:*`) and one per invalid-key reason (`invalid_reason:not_hash`). Each
 * checkpoint save adds what the node counted since its last save, with HINCRBY in the same
 * transaction, so the totals always describe the work up to the stored cursor. The one place that
 * spells the fields.
 *
 * Per outcome, not per workspace: with thousands of tenants a 500-key batch touches hundreds of
 * workspaces, and one HINCRBY per workspace per save was measured at ~200 000 HINCRBYs per 300 000
 * keys (+4 µs of Redis CPU per key, a write and its replication for nearly every copied key). The
 * carried part therefore shows under {@linkcode EARLIER_RUNS}, the per-workspace series count from
 * this run's start, and every sum over workspaces is the migration's total.
 *
 * @module
 */
import {
  INVALID_REASONS,
  type InvalidReason,
  type KeyResult,
  type Outcome,
  OUTCOMES,
} from "../outcome.ts";
import { type CarriedTotals, EARLIER_RUNS } from "../run_events.ts";

const REASON_PREFIX = "invalid_reason:";

/** The totals field of an outcome (every workspace together). */
export function totalsField(outcome: Outcome): string {
  return `${outcome}:${EARLIER_RUNS}`;
}

/** What one node counted since its last checkpoint save; taken (and emptied) by each save. */
export class TotalsDelta {
  #counts = new Map<string, number>();

  /** Adds a batch's results. */
  add(results: readonly KeyResult[]): void {
    for (const result of results) {
      this.#inc(totalsField(result.outcome), 1);
      if (result.outcome === "skipped_invalid" && result.invalidReason !== undefined) {
        this.#inc(REASON_PREFIX + result.invalidReason, 1);
      }
    }
  }

  /** The counts so far (field → count), leaving the delta empty. */
  take(): Map<string, number> {
    const taken = this.#counts;
    this.#counts = new Map();
    return taken;
  }

  /** Puts counts back that a failed save did not store. */
  restore(taken: ReadonlyMap<string, number>): void {
    for (const [field, count] of taken) this.#inc(field, count);
  }

  #inc(field: string, count: number): void {
    this.#counts.set(field, (this.#counts.get(field) ?? 0) + count);
  }
}

/**
 * The HINCRBY arguments of `counts` as one flat list (field, count, …), for a save that runs as a
 * script (ARGV) rather than a MULTI.
 */
export function totalsArgs(counts: ReadonlyMap<string, number>): string[] {
  const args: string[] = [];
  for (const [field, count] of counts) if (count > 0) args.push(field, String(count));
  return args;
}

/** The stored totals hash as the metrics take them; `undefined` when nothing is stored. */
export function parseTotals(hash: Readonly<Record<string, string>>): CarriedTotals | undefined {
  const carried: CarriedTotals = { byOutcome: {}, invalidByReason: {} };
  let any = false;
  for (const [field, raw] of Object.entries(hash)) {
    const count = Number(raw);
    if (!Number.isSafeInteger(count) || count <= 0) continue;
    if (field.startsWith(REASON_PREFIX)) {
      const reason = field.slice(REASON_PREFIX.length);
      if (!(INVALID_REASONS as readonly string[]).includes(reason)) continue;
      carried.invalidByReason![reason as InvalidReason] = count;
      any = true;
      continue;
    }
    const colon = field.indexOf(":");
    const outcome = field.slice(0, colon) as Outcome;
    if (colon < 0 || !OUTCOMES.includes(outcome)) continue;
    const byWorkspace = (carried.byOutcome[outcome] ?? {}) as Record<string, number>;
    byWorkspace[field.slice(colon + 1)] = count;
    carried.byOutcome[outcome] = byWorkspace;
    any = true;
  }
  return any ? carried : undefined;
}

/**
 * The earlier runs' totals, which a run's metrics continue from. Dry-run neither reads nor writes
 * them; `--reset-progress` forgets them along with the checkpoint.
 */
export async function carriedTotals(
  store: {
    loadTotals(): Promise<CarriedTotals | undefined>;
    resetTotals(): Promise<void>;
  },
  run: { mode: "dry-run" | "execute"; resetProgress: boolean },
): Promise<CarriedTotals | undefined> {
  if (run.mode !== "execute") return undefined;
  if (!run.resetProgress) return await store.loadTotals();
  await store.resetTotals();
  return undefined;
}
