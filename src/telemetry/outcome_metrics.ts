/**
 * The per-key outcome counters (`relay_backfill_*_total` by `workspace_id`, and the invalid-key
 * reasons). Counts add up in plain maps on the hot path and reach prom-client when the registry is
 * read: prom-client hashes the labels of every increment, which costs more than a batch.
 *
 * A workspace seen for the first time is exposed at 0 by one read and only counted from the next,
 * so `rate()` and `increase()` see its first batch (a series born at 5 counts as 0 increase).
 *
 * @module
 */
import { Counter, type Registry } from "prom-client";
import { INVALID_REASONS, type KeyResult, type Outcome, outcomeInfo } from "../outcome.ts";
import { type CarriedTotals, EARLIER_RUNS } from "../run_events.ts";

const INVALID_WORKSPACE_LABEL = "_invalid";
/** `workspace_id` of every key when the workspace label is off. */
const ALL_WORKSPACES_LABEL = "_all";
/** `workspace_id` of the counts carried over from the earlier runs of a resumed migration. */
const EARLIER_RUNS_LABEL = "_earlier_runs";
/** `reason` of `relay_backfill_invalid_total` for an invalid key whose strategy gave no reason. */
export const UNKNOWN_INVALID_REASON = "unknown";

/** Outcomes counted under their own name (the skipped ones share `skipped_total`), and scanned. */
type Family = "scanned" | Exclude<Outcome, `skipped_${string}`>;

/** The outcome counters of one run. */
export class OutcomeMetrics {
  readonly #workspaceLabel: boolean;
  readonly #families: Record<Family, Counter<"workspace_id">>;
  readonly #skipped: Counter<"workspace_id" | "reason">;
  readonly #invalid: Counter<"reason">;
  readonly #exposed = new Set<string>();
  /** Counts not yet in the counters: label → outcome → count. */
  readonly #pending = new Map<string, Map<Outcome, number>>();
  readonly #pendingInvalid = new Map<string, number>();

  /** Registers the counters; `workspaceLabel: false` collapses every workspace to `_all`. */
  constructor(options: { registry: Registry; workspaceLabel: boolean }) {
    this.#workspaceLabel = options.workspaceLabel;
    const registers = [options.registry];
    const perKey = (name: string, help: string) =>
      new Counter({ name, help, labelNames: ["workspace_id"] as const, registers });
    this.#families = {
      scanned: perKey(
        "relay_backfill_scanned_total",
        "Old keys looked at (every outcome, filtered ones included).",
      ),
      migrated: perKey(
        "relay_backfill_migrated_total",
        "Old keys copied to the new schema (dry-run: would be copied).",
      ),
      repaired: perKey(
        "relay_backfill_repaired_total",
        "New keys completed with fields only the old key had.",
      ),
      errors: perKey("relay_backfill_errors_total", "Old keys that failed after one retry."),
      filtered: perKey(
        "relay_backfill_filtered_total",
        "Old keys of another workspace than --workspace.",
      ),
    };
    this.#skipped = new Counter({
      name: "relay_backfill_skipped_total",
      help: "Old keys left alone: new key complete (exists), invalid old key, or key gone.",
      labelNames: ["workspace_id", "reason"] as const,
      registers,
    });
    this.#invalid = new Counter({
      name: "relay_backfill_invalid_total",
      help: 'Invalid old keys by reason (their sum is skipped_total{reason="invalid"}).',
      labelNames: ["reason"] as const,
      registers,
    });
    for (const reason of INVALID_REASONS) this.#invalid.inc({ reason }, 0);
    // The label sets every run can have exist from the first scrape, so an error ratio reads 0.
    this.#expose(this.#workspaceLabel ? INVALID_WORKSPACE_LABEL : ALL_WORKSPACES_LABEL);
  }

  /** Starts the counters from the totals of earlier runs (applied at once: they are a baseline). */
  carry(carried: CarriedTotals): void {
    for (const [outcome, byWorkspace] of Object.entries(carried.byOutcome)) {
      for (const [workspace, count] of Object.entries(byWorkspace ?? {})) {
        if (!(count > 0)) continue;
        // The checkpoint stores totals per outcome: earlier runs count under their own label, so
        // every sum over workspaces is the migration's total.
        const label = workspace === EARLIER_RUNS
          ? (this.#workspaceLabel ? EARLIER_RUNS_LABEL : ALL_WORKSPACES_LABEL)
          : this.#label(workspace === "" ? undefined : workspace);
        this.#expose(label);
        this.#apply(label, outcome as Outcome, count);
      }
    }
    for (const [reason, count] of Object.entries(carried.invalidByReason ?? {})) {
      if (count > 0) this.#invalid.inc({ reason }, count);
    }
  }

  /** Adds a batch's results to the pending counts (cheap; no prom-client call). */
  record(results: readonly KeyResult[]): void {
    for (const result of results) {
      const label = this.#label(result.workspace);
      let byOutcome = this.#pending.get(label);
      if (!byOutcome) this.#pending.set(label, byOutcome = new Map());
      byOutcome.set(result.outcome, (byOutcome.get(result.outcome) ?? 0) + 1);
      if (result.outcome === "skipped_invalid") {
        const reason = result.invalidReason ?? UNKNOWN_INVALID_REASON;
        this.#pendingInvalid.set(reason, (this.#pendingInvalid.get(reason) ?? 0) + 1);
      }
    }
  }

  /**
   * Moves pending counts into the counters, right before the registry is read; new workspaces are
   * only exposed at 0. `final` counts everything (the run's last read: nothing may stay behind).
   */
  flush(final = false): void {
    for (const [label, byOutcome] of this.#pending) {
      const fresh = !final && !this.#exposed.has(label);
      this.#expose(label);
      if (fresh) continue;
      for (const [outcome, count] of byOutcome) this.#apply(label, outcome, count);
      this.#pending.delete(label);
    }
    for (const [reason, count] of this.#pendingInvalid) this.#invalid.inc({ reason }, count);
    this.#pendingInvalid.clear();
  }

  #label(workspace: string | undefined): string {
    return this.#workspaceLabel ? workspace ?? INVALID_WORKSPACE_LABEL : ALL_WORKSPACES_LABEL;
  }

  /** Creates every series of a workspace label at 0, once. */
  #expose(workspace_id: string): void {
    if (this.#exposed.has(workspace_id)) return;
    this.#exposed.add(workspace_id);
    for (const counter of Object.values(this.#families)) counter.inc({ workspace_id }, 0);
    this.#skipped.inc({ workspace_id, reason: "exists" }, 0);
    this.#skipped.inc({ workspace_id, reason: "gone" }, 0);
    // A valid workspace id never has invalid keys: only the catch-all labels get that series.
    if (workspace_id === INVALID_WORKSPACE_LABEL || workspace_id === ALL_WORKSPACES_LABEL) {
      this.#skipped.inc({ workspace_id, reason: "invalid" }, 0);
    }
  }

  #apply(workspace_id: string, outcome: Outcome, count: number): void {
    this.#families.scanned.inc({ workspace_id }, count);
    const reason = outcomeInfo(outcome).skipReason;
    if (reason !== undefined) this.#skipped.inc({ workspace_id, reason }, count);
    else this.#families[outcome as Family].inc({ workspace_id }, count);
  }
}
