/**
 * Telemetry of `backfill verify`: the verify metrics served on `--metrics-port` and pushed to
 * `--pushgateway` (grouping `mode=verify`, so a verify never replaces a run's group), at start,
 * every `--push-interval` and at the end, like a run. A verify that fails before it starts (bad
 * report path, Redis unreachable) pushes nothing.
 *
 * @module
 */
import { delay } from "../async/delay.ts";
import type { Logger } from "../run_events.ts";
import { type TimerClock, wallClock } from "../async/clock.ts";
import { PushSchedule } from "./pushgateway.ts";
import { type MetricsServer, MetricsServerError, startMetricsServer } from "./server.ts";
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
 * @throws {MetricsServerError} when the metrics port cannot be bound.
 */
export function startVerifyTelemetry(options: VerifyTelemetryOptions): VerifyTelemetry {
  const { logger } = options;
  if (!options.enabled) return { start() {}, close: () => Promise.resolve() };
  const clock = options.clock ?? wallClock;
  const metrics = new VerifyMetrics({ clock });
  let server: MetricsServer | undefined;
  if (options.metricsPort !== undefined) {
    server = startMetricsServer({
      registry: metrics.registry,
      port: options.metricsPort,
      hostname: options.metricsHost,
      logger,
    });
    logger.log("info", "metrics_listening", "serving /metrics and /healthz", {
      host: server.hostname,
      port: server.port,
    });
  }
  const pushes = options.pushgatewayUrl === undefined ? undefined : new PushSchedule({
    url: options.pushgatewayUrl,
    registry: metrics.registry,
    instance: options.progressKey,
    intervalSeconds: options.pushIntervalSeconds ?? 30,
    logger,
    clock,
  });
  let started = false;
  let closing: Promise<void> | undefined;
  return {
    start(method) {
      started = true;
      metrics.onStart(method);
      pushes?.start("verify");
    },
    close(outcome) {
      return closing ??= (async () => {
        if (started) metrics.onEnd(outcome);
        await pushes?.finish();
        if (server === undefined) return;
        const linger = options.metricsLingerSeconds ?? 0;
        if (started && linger > 0 && !options.signal?.aborted) {
          await delay(linger * 1000, { signal: options.signal }).catch(() => {});
        }
        await server.shutdown().catch(() => {});
      })();
    },
  };
}

export { MetricsServerError };
