/**
 * Telemetry of a run in one object: Prometheus metrics (served and/or pushed), progress on stderr and
 * the structured logger. The engine only sees a {@linkcode RunObserver} and a {@linkcode Logger}.
 *
 * @module
 */
import { Registry } from "prom-client";
import { type Logger, type RunObserver, silentLogger, type Summary } from "../run_events.ts";
import type { Clock } from "./clock.ts";
import { fanOut } from "./fan_out.ts";
import { createLogger, type LogFormat } from "./logger.ts";
import { BackfillMetrics } from "./metrics.ts";
import { progressFields, ProgressReporter } from "./progress.ts";
import { pushMetrics } from "./pushgateway.ts";
import { redactSecrets } from "./redact.ts";
import { type MetricsServer, startMetricsServer } from "./server.ts";

export { MetricsServerError } from "./server.ts";
export { stderrWriter } from "./stderr.ts";
export { escapeForLog, redactSecrets } from "./redact.ts";
export type { LogFormat } from "./logger.ts";

/** Options of {@linkcode createTelemetry}. */
export interface TelemetryOptions {
  /** Metrics on (see {@linkcode telemetryEnabled}); off: no server, no push, no metric updates. */
  enabled: boolean;
  /** Serve `/metrics` and `/healthz` on this port (`0`: any free port); none when undefined. */
  metricsPort?: number;
  /** Address the metrics server binds (default `0.0.0.0`). */
  metricsHost?: string;
  /** Push the metrics here when the run ends; may hold `user:password@` (never logged). */
  pushgatewayUrl?: string;
  /** Timeout of the push in milliseconds (default 10000). */
  pushTimeoutMs?: number;
  /** Seconds between progress lines when stderr is not a TTY (`<= 0`: none). */
  progressInterval: number;
  /** Log line format. */
  logFormat: LogFormat;
  /** No progress, no info/debug logs; warnings and errors still go to stderr. */
  quiet: boolean;
  /** Also log `debug` events (default `false`). */
  debug?: boolean;
  /** `workspace_id` label with each workspace (`true`) or collapsed to `_all` (`false`). */
  workspaceLabel: boolean;
  /** stderr is a terminal: redraw one progress line instead of writing lines. */
  isTty: boolean;
  /** Terminal width (default 80), e.g. `() => Deno.consoleSize().columns`. */
  columns?: () => number;
  /** Colour on the TTY progress line (default `false`; keep it off when NO_COLOR is set). */
  color?: boolean;
  /** Version for `relay_backfill_build_info`. */
  version: string;
  /** Progress key: the Pushgateway `instance` grouping label. */
  progressKey: string;
  /** Writes to stderr (see `stderrWriter()`); all telemetry output goes here, never to stdout. */
  write: (text: string) => void;
  /** Time source (default: the system clock). */
  clock?: Clock;
}

/** What {@linkcode createTelemetry} returns. */
export interface Telemetry {
  /** Give this to the run; it fans out to progress and metrics. Its `onEnd` also pushes and closes. */
  readonly observer: RunObserver;
  /** The logger; on a TTY its lines go above the progress line. */
  readonly logger: Logger;
  /** The metrics registry (empty when telemetry is disabled). */
  readonly registry: Registry;
  /** Port the metrics server listens on, when there is one. */
  readonly metricsPort?: number;
  /**
   * Ends telemetry: runs `observer.onEnd(summary)` if the run has not, then (once) stops progress,
   * pushes to the Pushgateway and shuts the server down. Never rejects; safe to call twice. Call it
   * in a `finally`, so a run that throws still pushes what it counted.
   */
  close(summary?: Summary): Promise<void>;
}

/**
 * Whether `TELEMETRY_ENABLED` leaves metrics on: everything but `false` (any case) does.
 *
 * @example
 * ```ts
 * import { telemetryEnabled } from "./mod.ts";
 * telemetryEnabled(undefined); // true
 * telemetryEnabled("false"); // false
 * ```
 */
export function telemetryEnabled(value: string | undefined): boolean {
  return value?.trim().toLowerCase() !== "false";
}

/**
 * Sets up telemetry for one run. Starts the metrics server right away, so a taken port fails the
 * command before the run touches Redis.
 *
 * @throws {MetricsServerError} when the metrics port cannot be bound.
 *
 * @example
 * ```ts ignore
 * import { createTelemetry, stderrWriter, telemetryEnabled } from "./mod.ts";
 * const telemetry = createTelemetry({
 *   enabled: telemetryEnabled(Deno.env.get("TELEMETRY_ENABLED")),
 *   metricsPort: 9464,
 *   progressInterval: 10,
 *   logFormat: "text",
 *   quiet: false,
 *   workspaceLabel: true,
 *   isTty: Deno.stderr.isTerminal(),
 *   version: "0.1.0",
 *   progressKey: "ai:backfill",
 *   write: stderrWriter(),
 * });
 * try {
 *   // run(..., { observer: telemetry.observer, logger: telemetry.logger })
 * } finally {
 *   await telemetry.close();
 * }
 * ```
 */
export function createTelemetry(options: TelemetryOptions): Telemetry {
  const clock = options.clock;
  // The logger is created below; JSON progress events go through it (assigned before any event).
  let logger: Logger = silentLogger;
  const progress = options.quiet ? undefined : new ProgressReporter({
    write: options.write,
    isTty: options.isTty,
    interval: options.progressInterval,
    columns: options.columns,
    color: options.color,
    clock: options.clock,
    // With JSON logs a plain progress line would be the one line a log pipeline cannot parse.
    emit: options.logFormat === "json"
      ? (line, state, now) => logger.log("info", "progress", line, progressFields(state, now))
      : undefined,
  });
  logger = createLogger({
    format: options.logFormat,
    quiet: options.quiet,
    debug: options.debug,
    write: progress ? (text) => progress.writeAbove(text) : options.write,
    now: clock ? () => clock.now() : undefined,
  });

  let metrics: BackfillMetrics | undefined;
  let server: MetricsServer | undefined;
  if (options.enabled) {
    metrics = new BackfillMetrics({
      version: options.version,
      workspaceLabel: options.workspaceLabel,
      clock: options.clock,
    });
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
  } else if (options.metricsPort !== undefined || options.pushgatewayUrl !== undefined) {
    logger.log("info", "telemetry_disabled", "TELEMETRY_ENABLED=false: no metrics server, no push");
  }
  const registry = metrics?.registry ?? new Registry();
  const pushUrl = metrics ? options.pushgatewayUrl : undefined;

  let finishing: Promise<void> | undefined;
  const finish = (): Promise<void> =>
    finishing ??= (async () => {
      progress?.stop();
      if (pushUrl !== undefined) {
        await pushMetrics({
          url: pushUrl,
          registry,
          instance: options.progressKey,
          timeoutMs: options.pushTimeoutMs,
          logger,
        });
      }
      try {
        await server?.shutdown();
      } catch (error: unknown) {
        logger.log("warn", "metrics_server_error", "metrics server did not close cleanly", {
          error: redactSecrets(String(error)),
        });
      }
    })();

  // Order matters on end: the final progress line first (before the caller prints the summary),
  // then the final metric values, then the push that sends them, then the server goes away.
  const combined = fanOut(
    [...(progress ? [progress] : []), ...(metrics ? [metrics] : []), { onEnd: finish }],
    logger,
  );
  let ended = false;
  const observer: RunObserver = {
    onStart: combined.onStart,
    onBatch: combined.onBatch,
    onLimiterWait: combined.onLimiterWait,
    async onEnd(summary) {
      if (ended) return;
      ended = true;
      await combined.onEnd(summary);
    },
  };

  return {
    observer,
    logger,
    registry,
    metricsPort: server?.port,
    async close(summary) {
      if (summary !== undefined && !ended) await observer.onEnd?.(summary);
      await finish();
    },
  };
}
