/**
 * Telemetry of `backfill verify`: the verify metrics served on `--metrics-port` and pushed to
 * `--pushgateway` (grouping `mode=verify`, so a verify never replaces a run's group), at start,
 * every `--push-interval` and at the end, like a run. A verify that fails before it starts (bad
 * report path, Redis unreachable) pushes nothing.
 *
 * @module
 */
import type { Logger } from "../run_events.ts";
import { type TimerClock, wallClock } from "../async/clock.ts";
import { exportMetrics } from "./server.ts";
import { type VerifyMethod, VerifyMetrics, type VerifyOutcome } from "./verify_metrics.ts";

/** Options of {@linkcode startVerifyTelemetry}. */
export interface VerifyTelemetryOptions {
  /** `TELEMETRY_ENABLED`: off means no server and no push. */
  enabled: boolean;
  metricsPort?: number;
  metricsHost?: string;
  /** Seconds `/metrics` stays up after the end (a signal cuts it short). */
  metricsLingerSeconds?: number;
  /** May hold `user:password@` (never logged). */
  pushgatewayUrl?: string;
  pushIntervalSeconds?: number;
  /** The Pushgateway `instance` grouping label. */
  progressKey: string;
  logger: Logger;
  signal?: AbortSignal;
  clock?: TimerClock;
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
  const { logger } = options;
  if (!options.enabled) return { start() {}, close: () => Promise.resolve() };
  const clock = options.clock ?? wallClock;
  const metrics = new VerifyMetrics({ clock });
  const outlet = exportMetrics({
    registry: metrics.registry,
    port: options.metricsPort,
    hostname: options.metricsHost,
    pushgatewayUrl: options.pushgatewayUrl,
    pushIntervalSeconds: options.pushIntervalSeconds,
    instance: options.progressKey,
    logger,
    clock,
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
