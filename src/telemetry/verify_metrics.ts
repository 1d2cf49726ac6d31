/**
 * The Prometheus metrics of `backfill verify` (sampled and `--full`), named like the run's
 * (`relay_backfill_verify_*`): what was checked, what differs by kind, parity, orphans, duration,
 * and whether the verify completed. Set from the verify's report at its end; present (at 0) from
 * the first scrape, so a dashboard reads 0 rather than "no data" while a verify runs.
 *
 * @module
 */
import { Counter, Gauge, Registry } from "prom-client";
import { type TimerClock, wallClock } from "../async/clock.ts";

/**
 * How an old key's new key differs. `fields` is the sampled verify's one kind for any field
 * difference; `--full` tells `field_missing` from `field_differs`.
 */
const VERIFY_MISMATCH_KINDS = [
  "missing",
  "field_missing",
  "field_differs",
  "fields",
  "ttl",
  "type",
] as const;

/** One of {@linkcode VERIFY_MISMATCH_KINDS}. */
export type VerifyMismatchKind = typeof VERIFY_MISMATCH_KINDS[number];

/** How a verify checks: a sample, or every key. */
export type VerifyMethod = "sample" | "full";

/** What a finished verify found, as the metrics show it. */
export interface VerifyOutcome {
  /** Old keys compared. */
  checked: number;
  /** Old keys whose new key differs, by kind. */
  mismatched: Partial<Record<VerifyMismatchKind, number>>;
  /** Invalid old keys (not compared). */
  invalid: number;
  /** New keys whose old key is missing. */
  orphans: number;
  /** matched / valid checked, 0..1. */
  parity: number;
  /** Wall time in seconds (a resumed `--full` includes its earlier sessions). */
  durationSeconds: number;
  /** The verify reached its end (not stopped by a signal). */
  completed: boolean;
  /** Parity reached and no orphans: ready to turn the old schema's fallback off. */
  passed: boolean;
}

/** The verify's metrics in a dedicated registry. */
export class VerifyMetrics {
  /** The registry to serve and push. */
  readonly registry: Registry = new Registry();
  readonly #clock: TimerClock;
  readonly #checked: Counter;
  readonly #mismatched: Counter<"kind">;
  readonly #invalid: Counter;
  readonly #orphans: Counter;
  readonly #gauges: Record<
    "parity" | "duration" | "completed" | "passed" | "running" | "start" | "end",
    Gauge
  >;
  readonly #info: Gauge<"method">;

  /** Registers every metric; counters start at 0. */
  constructor(options: { clock?: TimerClock } = {}) {
    this.#clock = options.clock ?? wallClock;
    const registers = [this.registry];
    const counter = (name: string, help: string) => new Counter({ name, help, registers });
    const gauge = (name: string, help: string) => new Gauge({ name, help, registers });
    this.#checked = counter("relay_backfill_verify_checked_total", "Old keys compared.");
    this.#mismatched = new Counter({
      name: "relay_backfill_verify_mismatched_total",
      help: "Old keys whose new key is missing or differs (after rechecks), by kind.",
      labelNames: ["kind"] as const,
      registers,
    });
    this.#invalid = counter(
      "relay_backfill_verify_invalid_total",
      "Invalid old keys (skipped by the backfill, not compared).",
    );
    this.#orphans = counter(
      "relay_backfill_verify_orphans_total",
      "New keys whose old key is missing (--full --orphans: all; sampled: in the sample).",
    );
    this.#gauges = {
      parity: gauge("relay_backfill_verify_parity", "Matched share of the valid old keys, 0..1."),
      duration: gauge("relay_backfill_verify_duration_seconds", "Wall time of the verify."),
      completed: gauge(
        "relay_backfill_verify_completed",
        "1 once the verify reached its end; 0 while it runs or when it stopped early.",
      ),
      passed: gauge(
        "relay_backfill_verify_passed",
        "1 when parity reached --min-parity and there are no orphans.",
      ),
      running: gauge("relay_backfill_verify_running", "1 while the verify runs, 0 after."),
      start: gauge("relay_backfill_verify_start_timestamp_seconds", "Unix time it started."),
      end: gauge("relay_backfill_verify_end_timestamp_seconds", "Unix time it ended (0: running)."),
    };
    this.#info = new Gauge({
      name: "relay_backfill_verify_info",
      help: "Always 1; `method` is sample or full.",
      labelNames: ["method"] as const,
      registers,
    });
    for (const kind of VERIFY_MISMATCH_KINDS) this.#mismatched.inc({ kind }, 0);
  }

  /** The verify started. */
  onStart(method: VerifyMethod): void {
    this.#info.set({ method }, 1);
    this.#gauges.running.set(1);
    this.#gauges.start.set(this.#clock.now() / 1000);
  }

  /** The verify ended; `outcome` is undefined when it failed before a report. */
  onEnd(outcome?: VerifyOutcome): void {
    this.#gauges.running.set(0);
    this.#gauges.end.set(this.#clock.now() / 1000);
    if (outcome === undefined) return;
    this.#checked.inc(outcome.checked);
    for (const [kind, count] of Object.entries(outcome.mismatched)) {
      if (count > 0) this.#mismatched.inc({ kind }, count);
    }
    this.#invalid.inc(outcome.invalid);
    this.#orphans.inc(outcome.orphans);
    this.#gauges.parity.set(outcome.parity);
    this.#gauges.duration.set(outcome.durationSeconds);
    this.#gauges.completed.set(outcome.completed ? 1 : 0);
    this.#gauges.passed.set(outcome.passed ? 1 : 0);
  }
}
