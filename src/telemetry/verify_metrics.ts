/**
 * The metrics of `backfill verify`: `relay_backfill_verify_*`, at 0 from the first scrape (a
 * dashboard reads 0, not "no data") and set from the report at the end. Pushed under `mode=verify`,
 * so a verify never replaces a run's group; a verify that fails before it starts pushes nothing.
 *
 * @module
 */
import { Counter, Gauge, Registry } from "prom-client";
import { wallClock } from "../async/clock.ts";
import type { Logger } from "../run_events.ts";
import { exportMetrics, type MetricsOutlet } from "./server.ts";

/** How a new key differs; `fields` is the sampled verify's one kind, `--full` splits it in two. */
const VERIFY_MISMATCH_KINDS = [
  "missing",
  "field_missing",
  "field_differs",
  "fields",
  "ttl",
  "type",
] as const;

/** What a finished verify found, as the metrics show it. */
export interface VerifyOutcome {
  /** Old keys compared (invalid ones are not). */
  checked: number;
  mismatched: Partial<Record<typeof VERIFY_MISMATCH_KINDS[number], number>>;
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

/** Registration order is `/metrics` order. */
function registerVerifyMetrics(registry: Registry) {
  const registers = [registry];
  const counter = (name: string, help: string) => new Counter({ name, help, registers });
  const gauge = (name: string, help: string) => new Gauge({ name, help, registers });
  const metrics = {
    checked: counter("relay_backfill_verify_checked_total", "Old keys compared."),
    mismatched: new Counter({
      name: "relay_backfill_verify_mismatched_total",
      help: "Old keys whose new key is missing or differs (after rechecks), by kind.",
      labelNames: ["kind"] as const,
      registers,
    }),
    invalid: counter(
      "relay_backfill_verify_invalid_total",
      "Invalid old keys (skipped by the backfill, not compared).",
    ),
    orphans: counter(
      "relay_backfill_verify_orphans_total",
      "New keys whose old key is missing (--full --orphans: all; sampled: in the sample).",
    ),
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
    info: new Gauge({
      name: "relay_backfill_verify_info",
      help: "Always 1; `method` is sample or full.",
      labelNames: ["method"] as const,
      registers,
    }),
  };
  for (const kind of VERIFY_MISMATCH_KINDS) metrics.mismatched.inc({ kind }, 0);
  return metrics;
}

export interface VerifyTelemetryOptions extends MetricsOutlet {
  /** `TELEMETRY_ENABLED`: off means no server and no push. */
  enabled: boolean;
  /** The Pushgateway `instance` grouping label. */
  progressKey: string;
  logger: Logger;
  signal?: AbortSignal;
}

export interface VerifyTelemetry {
  start(method: "sample" | "full"): void;
  /**
   * Final values (none when `outcome` is undefined: it stopped before a report), final push,
   * linger, server down. Never rejects; call it in a `finally`.
   */
  close(outcome?: VerifyOutcome): Promise<void>;
}

/**
 * Starts the metrics server now, so a taken port fails before Redis is touched.
 *
 * @throws {MetricsServerError} (server.ts) when the metrics port cannot be bound.
 */
export function startVerifyTelemetry(options: VerifyTelemetryOptions): VerifyTelemetry {
  if (!options.enabled) return { start() {}, close: () => Promise.resolve() };
  const registry = new Registry();
  const metrics = registerVerifyMetrics(registry);
  const outlet = exportMetrics({
    ...options,
    registry,
    instance: options.progressKey,
    clock: wallClock,
  });
  let started = false;
  let recorded = false;
  const record = (outcome?: VerifyOutcome) => {
    recorded = true;
    metrics.running.set(0);
    metrics.end.set(wallClock.now() / 1000);
    if (outcome === undefined) return;
    metrics.checked.inc(outcome.checked);
    for (const [kind, count] of Object.entries(outcome.mismatched)) {
      if (count > 0) metrics.mismatched.inc({ kind }, count);
    }
    metrics.invalid.inc(outcome.invalid);
    metrics.orphans.inc(outcome.orphans);
    metrics.parity.set(outcome.parity);
    metrics.duration.set(outcome.durationSeconds);
    metrics.completed.set(1);
    metrics.passed.set(outcome.passed ? 1 : 0);
  };
  return {
    start(method) {
      started = true;
      metrics.info.set({ method }, 1);
      metrics.running.set(1);
      metrics.start.set(wallClock.now() / 1000);
      outlet.start("verify");
    },
    async close(outcome) {
      if (started && !recorded) record(outcome);
      await outlet.finish();
      await outlet.close(started ? options.metricsLingerSeconds ?? 0 : 0);
    },
  };
}
