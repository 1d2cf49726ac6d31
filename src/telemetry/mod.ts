/**
 * A run's telemetry in one object: metrics (served and/or pushed), progress on stderr and the
 * logger. The engine only sees a {@linkcode RunObserver} and a {@linkcode Logger}.
 *
 * @module
 */
import { Registry } from "prom-client";
import {
  type Logger,
  type RunObserver,
  silentLogger,
  type Summary,
  SYNC_EVENTS,
  type SyncEvent,
} from "../run_events.ts";
import { wallClock } from "../async/clock.ts";
import { RunHealth, type RunHealthOptions } from "./health.ts";
import { InvalidKeyLog } from "./invalid_keys.ts";
import { createLogger, type LogFormat } from "./logger.ts";
import { BackfillMetrics, type BackfillMetricsOptions } from "./metrics.ts";
import { progressFields, ProgressReporter, type ProgressReporterOptions } from "./progress.ts";
import { exportMetrics, type MetricsOutlet } from "./server.ts";

export { MetricsServerError } from "./server.ts";

/**
 * Forwards events to `observers` in order; `onEnd` awaits each in turn, so order expresses
 * dependencies (final metrics before the push that sends them). Telemetry must never break a run:
 * an observer that throws is logged and the others still get the event.
 */
export function fanOut(observers: readonly RunObserver[], logger?: Logger): Required<RunObserver> {
  const report = (event: string, error: unknown) =>
    logger?.log("warn", "telemetry_failed", `telemetry observer failed in ${event}`, {
      error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
    });
  const forward = (event: SyncEvent) => (argument: unknown) => {
    for (const o of observers) {
      try {
        (o[event] as ((argument: unknown) => void) | undefined)?.call(o, argument);
      } catch (error: unknown) {
        report(event, error);
      }
    }
  };
  const combined = Object.fromEntries(SYNC_EVENTS.map((event) => [event, forward(event)]));
  return {
    ...combined as Omit<Required<RunObserver>, "onEnd">,
    async onEnd(summary: Summary) {
      for (const o of observers) {
        try {
          await o.onEnd?.(summary);
        } catch (error: unknown) {
          report("onEnd", error);
        }
      }
    },
  };
}

export interface TelemetryOptions
  extends
    MetricsOutlet,
    Omit<ProgressReporterOptions, "interval" | "emit">,
    Omit<RunHealthOptions, "clock">,
    Omit<BackfillMetricsOptions, "clock" | "silentNodes"> {
  /** Metrics on (see {@linkcode telemetryEnabled}); off: no server, no push, no metric updates. */
  enabled: boolean;
  /** Cuts the linger short (a stopped run should exit now). */
  signal?: AbortSignal;
  /** Seconds between progress lines when stderr is not a TTY (`<= 0`: none). */
  progressInterval: number;
  logFormat: LogFormat;
  /** No progress, no info/debug logs; warnings and errors still go to stderr. */
  quiet: boolean;
  /** The Pushgateway `instance` grouping label. */
  progressKey: string;
}

export interface Telemetry {
  /** Give this to the run; its `onEnd` also makes the final push. */
  readonly observer: RunObserver;
  /** On a TTY its lines go above the progress line. */
  readonly logger: Logger;
  /** Empty when telemetry is disabled. */
  readonly registry: Registry;
  readonly metricsPort?: number;
  /** `observer.onEnd(summary)` if the run has not run it, then the final push. Never rejects. */
  end(summary?: Summary): Promise<void>;
  /** {@linkcode Telemetry.end}, the linger, server down. Never rejects; call it in a `finally`. */
  close(summary?: Summary): Promise<void>;
}

/** Whether `TELEMETRY_ENABLED` leaves metrics on: everything but `false` (any case) does. */
export function telemetryEnabled(value: string | undefined): boolean {
  return value?.trim().toLowerCase() !== "false";
}

/**
 * Sets up telemetry for one run; call `close()` in a `finally`. Starts the metrics server right
 * away, so a taken port fails the command before the run touches Redis.
 *
 * @throws {MetricsServerError} when the metrics port cannot be bound.
 */
export function createTelemetry(options: TelemetryOptions): Telemetry {
  const clock = options.clock ?? wallClock;
  // Created below; JSON progress events go through it (assigned before any event).
  let logger: Logger = silentLogger;
  const progress = options.quiet ? undefined : new ProgressReporter({
    ...options,
    interval: options.progressInterval,
    clock,
    // With JSON logs a plain progress line would be the one line a log pipeline cannot parse.
    emit: options.logFormat === "json"
      ? (line, state, now) => logger.log("info", "progress", line, progressFields(state, now))
      : undefined,
  });
  logger = createLogger({
    format: options.logFormat,
    quiet: options.quiet,
    write: progress ? (text) => progress.writeAbove(text) : options.write,
    now: () => clock.now(),
  });
  const health = new RunHealth({ ...options, clock });
  const askedForMetrics = options.metricsPort !== undefined || options.pushgatewayUrl !== undefined;
  if (!options.enabled && askedForMetrics) {
    // Said once, so an SRE is not left scraping nothing.
    logger.log("info", "telemetry_disabled", "TELEMETRY_ENABLED=false: no metrics server, no push");
  }
  const metrics = options.enabled
    ? new BackfillMetrics({ ...options, clock, silentNodes: () => health.silentNodes() })
    : undefined;
  const registry = metrics?.registry ?? new Registry();
  const outlet = metrics && exportMetrics({
    ...options,
    registry,
    health: () => health.status(),
    instance: options.progressKey,
    logger,
    clock,
  });
  const finish = async () => {
    progress?.stop();
    await outlet?.finish();
  };

  // Order matters on end: the final progress line first (before the caller prints the summary),
  // then the final metric values, then the push that sends them. The push schedule starts after
  // the metrics saw onStart, so the first push already holds the run's start.
  const combined = fanOut(
    [
      ...(progress ? [progress] : []),
      ...(metrics ? [metrics] : []),
      health,
      new InvalidKeyLog({ logger }),
      { onStart: (start) => outlet?.start(start.mode), onEnd: finish },
    ],
    logger,
  );
  // onEnd runs once, whether the run or Telemetry.end calls it first.
  let ended = false;
  const observer: RunObserver = {
    ...combined,
    async onEnd(summary) {
      if (ended) return;
      ended = true;
      await combined.onEnd(summary);
    },
  };
  const end = async (summary?: Summary) => {
    if (summary !== undefined) await observer.onEnd?.(summary);
    await finish();
  };
  return {
    observer,
    logger,
    registry,
    metricsPort: outlet?.port,
    end,
    async close(summary) {
      await end(summary);
      await outlet?.close(options.metricsLingerSeconds ?? 0);
    },
  };
}
