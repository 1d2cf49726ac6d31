/**
 * The Prometheus metrics of a run: a dedicated prom-client registry and the observer that feeds it
 * from the engine's batch reports. The first six names are queried by existing dashboards and must
 * not change.
 *
 * @module
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { type KeyResult, outcomeInfo, OUTCOMES } from "../outcome.ts";
import type { BatchReport, RunObserver, RunStart, Summary } from "../run_events.ts";
import { type Clock, systemClock } from "./clock.ts";

/** Label value for keys whose workspace id is not valid (or could not be read). */
export const INVALID_WORKSPACE_LABEL = "_invalid";
/** Label value for every key when the workspace label is turned off. */
export const ALL_WORKSPACES_LABEL = "_all";

/**
 * Buckets of `relay_backfill_duration_seconds`. A default batch is 500 keys at 100 rps, about 5 s,
 * mostly spent waiting on the limiter; an unlimited batch takes milliseconds. The buckets span both.
 */
export const BATCH_DURATION_BUCKETS: readonly number[] = [
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
  120,
];

/** Options of {@linkcode BackfillMetrics}. */
export interface BackfillMetricsOptions {
  /** Version reported by `relay_backfill_build_info`. */
  version: string;
  /**
   * Label every per-key counter with the job's workspace id (default `true`). `false` collapses the
   * label to `_all`, for keyspaces with so many workspaces that one series each is too costly.
   */
  workspaceLabel?: boolean;
  /** Clock for the timestamp gauges (default: the system clock). */
  clock?: Clock;
}

/** The skip reasons of the outcome table, each once. */
const SKIP_REASONS = [
  ...new Set(OUTCOMES.flatMap((outcome) => outcomeInfo(outcome).skipReason ?? [])),
];

/**
 * Prometheus metrics of one run, updated from {@linkcode RunObserver} events.
 *
 * @example
 * ```ts
 * import { BackfillMetrics } from "./metrics.ts";
 * const metrics = new BackfillMetrics({ version: "0.1.0" });
 * metrics.onStart({ mode: "dry-run", rps: 100, estimatedTotal: 10, progressKey: "ai:backfill" });
 * const text: string = await metrics.registry.metrics();
 * ```
 */
export class BackfillMetrics implements RunObserver {
  /** The dedicated registry (no default process metrics: their collectors assume Node internals). */
  readonly registry: Registry = new Registry();
  readonly #workspaceLabel: boolean;
  readonly #clock: Clock;
  readonly #scanned: Counter<"workspace_id">;
  readonly #migrated: Counter<"workspace_id">;
  readonly #repaired: Counter<"workspace_id">;
  readonly #skipped: Counter<"workspace_id" | "reason">;
  readonly #errors: Counter<"workspace_id">;
  readonly #filtered: Counter<"workspace_id">;
  readonly #duration: Histogram;
  readonly #lastSuccess: Gauge;
  readonly #start: Gauge;
  readonly #rpsLimit: Gauge;
  readonly #limiterWait: Counter;
  readonly #estimated: Gauge;
  readonly #completed: Gauge;
  readonly #runInfo: Gauge<"mode">;
  /** Outcome counts not yet in the counters, by outcome and workspace (see {@linkcode #flush}). */
  readonly #pending = new Map<KeyResult["outcome"], Map<string | undefined, number>>();

  /** Registers every metric in a fresh registry. */
  constructor(options: BackfillMetricsOptions) {
    this.#workspaceLabel = options.workspaceLabel ?? true;
    this.#clock = options.clock ?? systemClock;
    const registers = [this.registry];
    // Outcome counts are added up in plain maps on the hot path and handed to prom-client only
    // when someone reads the registry (a scrape, the push): prom-client hashes the labels of
    // every increment, which at ~300 workspaces per batch cost more than the batch itself.
    const collect = () => this.#flush();
    const perKey = (name: string, help: string) =>
      new Counter({ name, help, labelNames: ["workspace_id"] as const, registers, collect });
    this.#scanned = perKey(
      "relay_backfill_scanned_total",
      "Old keys looked at (every outcome, filtered ones included).",
    );
    this.#migrated = perKey(
      "relay_backfill_migrated_total",
      "Old keys copied to the new schema (dry-run: would be copied).",
    );
    this.#repaired = perKey(
      "relay_backfill_repaired_total",
      "New keys completed with fields only the old key had.",
    );
    this.#skipped = new Counter({
      name: "relay_backfill_skipped_total",
      help: "Old keys left alone: new key complete (exists), invalid old key, or key gone.",
      labelNames: ["workspace_id", "reason"] as const,
      registers,
      collect,
    });
    this.#errors = perKey("relay_backfill_errors_total", "Old keys that failed after one retry.");
    this.#filtered = perKey(
      "relay_backfill_filtered_total",
      "Old keys of another workspace than --workspace.",
    );
    this.#duration = new Histogram({
      name: "relay_backfill_duration_seconds",
      help: "Wall time per processed batch (non-empty), limiter waits included.",
      buckets: [...BATCH_DURATION_BUCKETS],
      registers,
    });
    this.#lastSuccess = new Gauge({
      name: "relay_backfill_last_success_timestamp_seconds",
      help: "Unix time the last batch was fully processed (0 before the first).",
      registers,
    });
    this.#start = new Gauge({
      name: "relay_backfill_start_timestamp_seconds",
      help: "Unix time the run started.",
      registers,
    });
    this.#rpsLimit = new Gauge({
      name: "relay_backfill_rps_limit",
      help: "Configured --rps: jobs per second at most (0 = unlimited).",
      registers,
    });
    this.#limiterWait = new Counter({
      name: "relay_backfill_limiter_wait_seconds_total",
      help: "Time the rate limiter held the run back.",
      registers,
    });
    this.#estimated = new Gauge({
      name: "relay_backfill_estimated_keys",
      help: "Estimated old keys in scope for this run (DBSIZE-based, refined as the scan goes).",
      registers,
    });
    this.#completed = new Gauge({
      name: "relay_backfill_completed",
      help: "1 once the scan reached its end on every node; 0 while running or when stopped early.",
      registers,
    });
    this.#runInfo = new Gauge({
      name: "relay_backfill_run_info",
      help: "Always 1; the mode label says whether this run writes (execute) or not (dry-run).",
      labelNames: ["mode"] as const,
      registers,
    });
    new Gauge({
      name: "relay_backfill_build_info",
      help: "Always 1; labels carry the backfill version and the Deno runtime version.",
      labelNames: ["version", "deno"] as const,
      registers,
    }).set({ version: options.version, deno: Deno.version.deno }, 1);
    if (!this.#workspaceLabel) {
      // The only label combinations are known up front: export them as 0 so rate() and absent()
      // work from the first scrape instead of the first occurrence.
      const workspace_id = ALL_WORKSPACES_LABEL;
      for (
        const c of [this.#scanned, this.#migrated, this.#repaired, this.#errors, this.#filtered]
      ) {
        c.inc({ workspace_id }, 0);
      }
      for (const reason of SKIP_REASONS) {
        this.#skipped.inc({ workspace_id, reason }, 0);
      }
    }
  }

  /** Records the run's mode, rate limit, start time and first estimate. */
  onStart(start: RunStart): void {
    this.#runInfo.reset();
    this.#runInfo.set({ mode: start.mode }, 1);
    this.#rpsLimit.set(start.rps);
    this.#estimated.set(start.estimatedTotal);
    this.#start.set(this.#clock.now() / 1000);
    this.#completed.set(0);
  }

  /** Counts every key of the batch under its outcome and workspace, and marks the batch done. */
  onBatch(batch: BatchReport): void {
    for (const { outcome, workspace } of batch.results) {
      let byWorkspace = this.#pending.get(outcome);
      if (!byWorkspace) this.#pending.set(outcome, byWorkspace = new Map());
      byWorkspace.set(workspace, (byWorkspace.get(workspace) ?? 0) + 1);
    }
    if (batch.results.length > 0 && Number.isFinite(batch.seconds) && batch.seconds >= 0) {
      // Empty SCAN pages would pile up in the lowest bucket and hide the real batch latency.
      this.#duration.observe(batch.seconds);
    }
    this.#estimated.set(batch.estimatedTotal);
    this.#lastSuccess.set(this.#clock.now() / 1000);
  }

  /** Moves the pending outcome counts into the counters (memory: one entry per label set). */
  #flush(): void {
    for (const [outcome, byWorkspace] of this.#pending) {
      for (const [workspace, count] of byWorkspace) this.#count({ outcome, workspace }, count);
    }
    this.#pending.clear();
  }

  /** Adds limiter wait time. */
  onLimiterWait(seconds: number): void {
    // prom-client throws on a negative increment; a clock hiccup must not break the run.
    if (Number.isFinite(seconds) && seconds > 0) this.#limiterWait.inc(seconds);
  }

  /** Records whether the scan completed. */
  onEnd(summary: Summary): void {
    this.#completed.set(summary.completed ? 1 : 0);
  }

  #count(result: KeyResult, count: number): void {
    const workspace_id = this.#workspaceLabel
      ? result.workspace ?? INVALID_WORKSPACE_LABEL
      : ALL_WORKSPACES_LABEL;
    const labels = { workspace_id };
    this.#scanned.inc(labels, count);
    const reason = outcomeInfo(result.outcome).skipReason;
    if (reason !== undefined) {
      this.#skipped.inc({ workspace_id, reason }, count);
      return;
    }
    switch (result.outcome) {
      case "migrated":
        this.#migrated.inc(labels, count);
        break;
      case "repaired":
        this.#repaired.inc(labels, count);
        break;
      case "filtered":
        this.#filtered.inc(labels, count);
        break;
      case "errors":
        this.#errors.inc(labels, count);
        break;
    }
  }
}
