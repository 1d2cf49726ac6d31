/**
 * The Prometheus metrics of `backfill verify` (sampled and `--full`), named like the run's
 * (`relay_backfill_verify_*`): what was checked, what differs by kind, parity, orphans, duration,
 * and whether the verify completed. Set from the verify's report at its end; present (at 0) from
 * the first scrape, so a dashboard reads 0 rather than "no data" while a verify runs.
 *
 * Served on `--metrics-port` and pushed to `--pushgateway` (grouping `mode=verify`, so a verify
 * never replaces a run's group) at start, every `--push-interval` and at the end, like a run. A
 * verify that fails before it starts (bad report path, Redis unreachable) pushes nothing.
 *
 * @module
 */
import { Counter, Gauge, Registry } from "prom-client";
import { wallClock } from "../async/clock.ts";
import type { Logger } from "../run_events.ts";
import { exportMetrics, type MetricsOutlet } from "./server.ts";

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

/** How a verify checks: a sample, or every key. */
type VerifyMethod = "sample" | "full";

/** What a finished verify found, as the metrics show it. */
export interface VerifyOutcome {
  /** Old keys compared. */
  checked: number;
  /** Old keys whose new key differs, by kind. */
  mismatched: Partial<Record<typeof VERIFY_MISMATCH_KINDS[number], number>>;
  /** Invalid old keys (not compared). */
  invalid: number;
  /** New keys whose old key is missing. */
  orphans: number;
  /** matched / valid checked, 0..1. */
  parity: number;
  /** Wall time in seconds (a resumed `--full` includes its earlier sessions). */
  durationSeconds: number;
  /** Parity reached and no orphans: ready to turn the old schema's fallback off. */
  passed: boolean;
}

/** The verify's metrics in a dedicated registry. */
class VerifyMetrics {
  /** The registry to serve and push. */
  readonly registry: Registry = new Registry();
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
  constructor() {
    const registers = [this.registry];
    const counter = <L extends string = never>(name: string, help: string, labelNames: L[] = []) =>
      new Counter<L>({ name, help, labelNames, registers });
    const gauge = <L extends string = never>(name: string, help: string, labelNames: L[] = []) =>
      new Gauge<L>({ name, help, labelNames, registers });
    this.#checked = counter("relay_backfill_verify_checked_total", "Old keys compared.");
    this.#mismatched = counter(
      "relay_backfill_verify_mismatched_total",
      "Old keys whose new key is missing or differs (after rechecks), by kind.",
      ["kind"],
    );
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
    this.#info = gauge("relay_backfill_verify_info", "Always 1; `method` is sample or full.", [
      "method",
    ]);
    for (const kind of VERIFY_MISMATCH_KINDS) this.#mismatched.inc({ kind }, 0);
  }

  /** The verify started. */
  onStart(method: VerifyMethod): void {
    this.#info.set({ method }, 1);
    this.#gauges.running.set(1);
    this.#gauges.start.set(wallClock.now() / 1000);
  }

  /**
   * The verify ended; `outcome` is undefined when it stopped before a report (then `completed`
   * stays 0).
   */
  onEnd(outcome?: VerifyOutcome): void {
    this.#gauges.running.set(0);
    this.#gauges.end.set(wallClock.now() / 1000);
    if (outcome === undefined) return;
    this.#checked.inc(outcome.checked);
    for (const [kind, count] of Object.entries(outcome.mismatched)) {
      if (count > 0) this.#mismatched.inc({ kind }, count);
    }
    this.#invalid.inc(outcome.invalid);
    this.#orphans.inc(outcome.orphans);
    this.#gauges.parity.set(outcome.parity);
    this.#gauges.duration.set(outcome.durationSeconds);
    this.#gauges.completed.set(1);
    this.#gauges.passed.set(outcome.passed ? 1 : 0);
  }
}

/** Options of {@linkcode startVerifyTelemetry}. */
export interface VerifyTelemetryOptions extends MetricsOutlet {
  /** `TELEMETRY_ENABLED`: off means no server and no push. */
  enabled: boolean;
  /** The Pushgateway `instance` grouping label. */
  progressKey: string;
  logger: Logger;
  signal?: AbortSignal;
}

/** A verify's telemetry. */
export interface VerifyTelemetry {
  /** The verify started (first push). */
  start(method: VerifyMethod): void;
  /** Final values, final push, linger, server down. Never rejects; call it in a `finally`. */
  close(outcome?: VerifyOutcome): Promise<void>;
}

/**
 * Starts the metrics server (a taken port fails here, before Redis is touched) and prepares the
 * pushes.
 *
 * @throws {MetricsServerError} (server.ts) when the metrics port cannot be bound.
 */
export function startVerifyTelemetry(options: VerifyTelemetryOptions): VerifyTelemetry {
  if (!options.enabled) return { start() {}, close: () => Promise.resolve() };
  const metrics = new VerifyMetrics();
  const outlet = exportMetrics({
    ...options,
    registry: metrics.registry,
    instance: options.progressKey,
    clock: wallClock,
  });
  let started = false;
  let closing: Promise<void> | undefined;
  return {
    start(method) {
      started = true;
      metrics.onStart(method);
      outlet.start("verify");
    },
    close(outcome) {
      return closing ??= (async () => {
        if (started) metrics.onEnd(outcome);
        await outlet.finish();
        const lingerSeconds = started ? options.metricsLingerSeconds ?? 0 : 0;
        await outlet.close({ lingerSeconds, signal: options.signal });
      })();
    },
  };
}
