/**
 * The `/metrics` and `/healthz` endpoint, and the export a run and a verify share: that server, the
 * pushes and the linger.
 *
 * @module
 */
import type { Registry } from "prom-client";
import { pause } from "../async/delay.ts";
import type { TimerClock } from "../async/clock.ts";
import type { Logger, RunMode } from "../run_events.ts";
import type { HealthStatus } from "./health.ts";
import { PushSchedule } from "./pushgateway.ts";
import { errorMessage, redactSecrets } from "./redact.ts";

/** The metrics server could not start (port in use, no permission, bad address). */
export class MetricsServerError extends Error {
  override name = "MetricsServerError";
}

export interface MetricsServerOptions {
  registry: Registry;
  /** TCP port; `0` picks a free one. */
  port: number;
  /** Default `0.0.0.0`, so a Prometheus outside the host can scrape. */
  hostname?: string;
  logger?: Logger;
  /** What `/healthz` answers (default: always `ok`). */
  health?: () => HealthStatus;
}

/** A running metrics server: the port and address bound. */
export interface MetricsServer {
  readonly port: number;
  readonly hostname: string;
  /** Lets in-flight scrapes finish; safe to call more than once. */
  shutdown(): Promise<void>;
}

/**
 * Serves `GET /metrics` (the registry, in its content type) and `GET /healthz` (200 `ok: <state>`
 * or 503 `unhealthy: <reason>`). Prints nothing: stdout belongs to the summary.
 *
 * @throws {MetricsServerError} when the port cannot be bound.
 */
export function startMetricsServer(options: MetricsServerOptions): MetricsServer {
  const { port, hostname = "0.0.0.0", logger } = options;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`port must be an integer in 0..65535, got ${port}`);
  }
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      port,
      hostname,
      // The default onListen prints "Listening on ..."; nothing but the summary may reach stdout.
      onListen() {},
      onError(error) {
        logger?.log("warn", "metrics_server_error", "metrics request failed", {
          error: String(error),
        });
        return new Response("internal error\n", { status: 500 });
      },
    }, (request) => respond(request, options));
  } catch (error: unknown) {
    throw new MetricsServerError(
      `cannot serve metrics on ${hostname}:${port}: ${errorMessage(error)}`,
      { cause: error },
    );
  }
  let closing: Promise<void> | undefined;
  return {
    port: server.addr.port,
    hostname: server.addr.hostname,
    shutdown: () => closing ??= server.shutdown().then(() => server.finished),
  };
}

async function respond(request: Request, options: MetricsServerOptions): Promise<Response> {
  const { pathname } = new URL(request.url);
  if (pathname !== "/metrics" && pathname !== "/healthz") {
    return new Response("not found\n", { status: 404 });
  }
  if (request.method !== "GET" && request.method !== "HEAD") {
    return new Response("method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
  }
  const head = request.method === "HEAD";
  if (pathname === "/healthz") {
    const status = options.health?.();
    const text = status === undefined
      ? "ok"
      : `${status.healthy ? "ok" : "unhealthy"}: ${status.reason}`;
    // A proxy must never answer a health check from its cache.
    return new Response(head ? null : `${text}\n`, {
      status: status === undefined || status.healthy ? 200 : 503,
      headers: { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" },
    });
  }
  const { registry, logger } = options;
  try {
    const body = await registry.metrics();
    return new Response(head ? null : body, { headers: { "content-type": registry.contentType } });
  } catch (error: unknown) {
    logger?.log("warn", "metrics_scrape_failed", "could not render metrics", {
      error: String(error),
    });
    return new Response("metrics unavailable\n", { status: 500 });
  }
}

/** Where the metrics of a run or a verify go: the metrics and Pushgateway flags. */
export interface MetricsOutlet {
  /** Serve `/metrics` and `/healthz` on this port (`0`: any free port); none when undefined. */
  metricsPort?: number;
  /** Address the metrics server binds (default `0.0.0.0`). */
  metricsHost?: string;
  /** Push the metrics here (start, interval, end); may hold `user:password@` (never logged). */
  pushgatewayUrl?: string;
  /** Seconds between pushes while the run goes (default 30; `0`: only at start and end). */
  pushIntervalSeconds?: number;
  /** Seconds the metrics server stays up after the end, for a last scrape (default 0). */
  metricsLingerSeconds?: number;
}

export interface MetricsExportOptions extends Omit<MetricsOutlet, "metricsLingerSeconds"> {
  registry: Registry;
  health?: () => HealthStatus;
  /** The Pushgateway `instance` grouping label. */
  instance: string;
  logger: Logger;
  clock: TimerClock;
  /** Cuts the linger short (a stopped command should exit now). */
  signal?: AbortSignal;
}

/** A run's or a verify's server and pushes; nothing here rejects, a second call only waits. */
export interface MetricsExport {
  readonly port?: number;
  /** Push now and then every interval. */
  start(mode: RunMode | "verify"): void;
  /** The final push (none when it never started). */
  finish(): Promise<void>;
  /** Keeps the server up `lingerSeconds` for a last scrape, then stops it. */
  close(lingerSeconds: number): Promise<void>;
}

/**
 * Starts the metrics server (a taken port fails here, before Redis is touched) and prepares the
 * pushes.
 *
 * @throws {MetricsServerError} when the metrics port cannot be bound.
 */
export function exportMetrics(options: MetricsExportOptions): MetricsExport {
  const { logger, signal, metricsPort: port, metricsHost: hostname } = options;
  const server = port === undefined
    ? undefined
    : startMetricsServer({ ...options, port, hostname });
  if (server) {
    logger.log("info", "metrics_listening", "serving /metrics and /healthz", {
      host: server.hostname,
      port: server.port,
    });
  }
  const url = options.pushgatewayUrl;
  const pushes = url === undefined ? undefined : new PushSchedule(url, options);
  let closing: Promise<void> | undefined;
  const close = async (lingerSeconds: number) => {
    if (server === undefined) return;
    if (lingerSeconds > 0 && !signal?.aborted) {
      logger.log("info", "metrics_linger", `metrics stay up ${lingerSeconds} s for a last scrape`);
      await pause(lingerSeconds * 1000, { signal });
    }
    try {
      await server.shutdown();
    } catch (error: unknown) {
      logger.log("warn", "metrics_server_error", "metrics server did not close cleanly", {
        error: redactSecrets(String(error)),
      });
    }
  };
  return {
    port: server?.port,
    start: (mode) => pushes?.start(mode),
    finish: async () => await pushes?.finish(),
    close: (lingerSeconds) => closing ??= close(lingerSeconds),
  };
}
