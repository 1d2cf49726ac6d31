/**
 * The `/metrics` and `/healthz` endpoint, up for the whole run so Prometheus can scrape it.
 *
 * @module
 */
import type { Registry } from "prom-client";
import type { TimerClock } from "../async/clock.ts";
import type { Logger, RunMode } from "../run_events.ts";
import type { HealthStatus } from "./health.ts";
import { PushSchedule } from "./pushgateway.ts";
import { redactSecrets } from "./redact.ts";

/** The metrics server could not start (port in use, no permission, bad address). */
export class MetricsServerError extends Error {
  /** Creates the error; `cause` is the error Deno.serve threw. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "MetricsServerError";
  }
}

/** Options of {@linkcode startMetricsServer}. */
export interface MetricsServerOptions {
  /** Registry whose metrics `/metrics` serves. */
  registry: Registry;
  /** TCP port; `0` picks a free one (see {@linkcode MetricsServer.port}). */
  port: number;
  /** Address to bind (default `0.0.0.0`, so a Prometheus outside the host can scrape). */
  hostname?: string;
  /** Where scrape failures are reported (default: nowhere). */
  logger?: Logger;
  /** What `/healthz` answers (default: always `ok`). */
  health?: () => HealthStatus;
}

/** A running metrics server. */
export interface MetricsServer {
  /** Port actually bound (useful with port 0). */
  readonly port: number;
  /** Address actually bound. */
  readonly hostname: string;
  /** Stops accepting connections, lets in-flight scrapes finish; safe to call more than once. */
  shutdown(): Promise<void>;
}

/**
 * Serves `GET /metrics` (Prometheus text format, the registry's content type) and `GET /healthz`
 * (200 `ok: <state>`, or 503 `unhealthy: <reason>`, from `health`). Prints nothing: stdout belongs
 * to the summary.
 *
 * @throws {MetricsServerError} when the port cannot be bound.
 *
 * @example
 * ```ts ignore
 * import { Registry } from "prom-client";
 * import { startMetricsServer } from "./server.ts";
 * const server = startMetricsServer({ registry: new Registry(), port: 9464 });
 * // ... run ...
 * await server.shutdown();
 * ```
 */
export function startMetricsServer(options: MetricsServerOptions): MetricsServer {
  const hostname = options.hostname ?? "0.0.0.0";
  if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
    throw new RangeError(`port must be an integer in 0..65535, got ${options.port}`);
  }
  const server = serve(
    { port: options.port, hostname, logger: options.logger },
    metricsHandler(options),
  );
  let closing: Promise<void> | undefined;
  return {
    port: server.addr.port,
    hostname: server.addr.hostname,
    shutdown() {
      closing ??= server.shutdown().then(() => server.finished);
      return closing;
    },
  };
}

/** Binds the port; a bind failure becomes a {@linkcode MetricsServerError} naming the address. */
function serve(
  { port, hostname, logger }: { port: number; hostname: string; logger?: Logger },
  handler: (request: Request) => Promise<Response>,
): Deno.HttpServer<Deno.NetAddr> {
  try {
    return Deno.serve({
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
    }, handler);
  } catch (error: unknown) {
    throw new MetricsServerError(
      `cannot serve metrics on ${hostname}:${port}: ${
        error instanceof Error ? error.message : String(error)
      }`,
      { cause: error },
    );
  }
}

/** Routes a request: 404 off the two paths, 405 unless GET or HEAD, then health or metrics. */
function metricsHandler(options: MetricsServerOptions): (request: Request) => Promise<Response> {
  return async (request) => {
    const { pathname } = new URL(request.url);
    if (pathname !== "/metrics" && pathname !== "/healthz") {
      return new Response("not found\n", { status: 404 });
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response("method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
    }
    const head = request.method === "HEAD";
    if (pathname === "/healthz") return healthResponse(options.health?.(), head);
    return await metricsResponse(options, head);
  };
}

/** `/healthz`: 200 `ok[: state]` or 503 `unhealthy: reason`; never cached by a proxy. */
function healthResponse(status: HealthStatus | undefined, head: boolean): Response {
  const text = status === undefined
    ? "ok"
    : `${status.healthy ? "ok" : "unhealthy"}: ${status.reason}`;
  return new Response(head ? null : `${text}\n`, {
    status: status === undefined || status.healthy ? 200 : 503,
    headers: { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" },
  });
}

/** `/metrics`: the registry in its content type; a render failure is a 500 and a warning. */
async function metricsResponse(
  { registry, logger }: MetricsServerOptions,
  head: boolean,
): Promise<Response> {
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

/** Options of {@linkcode exportMetrics}. */
export interface MetricsExportOptions extends Omit<MetricsOutlet, "metricsLingerSeconds"> {
  registry: Registry;
  /** What `/healthz` answers (default: always `ok`). */
  health?: () => HealthStatus;
  /** The Pushgateway `instance` grouping label (the progress key). */
  instance: string;
  logger: Logger;
  clock: TimerClock;
}

/** Where a run's or a verify's metrics go: the server and the pushes. */
export interface MetricsExport {
  /** Port the metrics server listens on, when there is one. */
  readonly port?: number;
  /** The run (or a verify) started: push now and then every interval. */
  start(mode: RunMode | "verify"): void;
  /** The final push (none when it never started). Never rejects; a second call only waits. */
  finish(): Promise<void>;
  /**
   * Keeps the server up `lingerSeconds` for a last scrape (cut short by the signal), then shuts it
   * down; a failure is only a warning: the result is final. Never rejects.
   */
  close(options: { lingerSeconds: number; signal?: AbortSignal }): Promise<void>;
}

/**
 * Starts the metrics server (a taken port fails here, before Redis is touched) and prepares the
 * pushes, for a run and a verify alike.
 *
 * @throws {MetricsServerError} when the metrics port cannot be bound.
 */
export function exportMetrics(options: MetricsExportOptions): MetricsExport {
  const { registry, logger, clock } = options;
  const server = options.metricsPort === undefined ? undefined : startMetricsServer({
    registry,
    port: options.metricsPort,
    hostname: options.metricsHost,
    logger,
    health: options.health,
  });
  if (server) {
    logger.log("info", "metrics_listening", "serving /metrics and /healthz", {
      host: server.hostname,
      port: server.port,
    });
  }
  const pushes = options.pushgatewayUrl === undefined ? undefined : new PushSchedule({
    url: options.pushgatewayUrl,
    registry,
    instance: options.instance,
    intervalSeconds: options.pushIntervalSeconds ?? 30,
    logger,
    clock,
  });
  return {
    port: server?.port,
    start: (mode) => pushes?.start(mode),
    finish: async () => await pushes?.finish(),
    async close({ lingerSeconds, signal }) {
      if (server === undefined) return;
      await linger(lingerSeconds, clock, signal, logger);
      try {
        await server.shutdown();
      } catch (error: unknown) {
        logger.log("warn", "metrics_server_error", "metrics server did not close cleanly", {
          error: redactSecrets(String(error)),
        });
      }
    },
  };
}

/** Waits `seconds` so a last scrape can read the final values; a signal cuts it short. */
async function linger(
  seconds: number,
  clock: TimerClock,
  signal: AbortSignal | undefined,
  logger: Logger,
): Promise<void> {
  if (!(seconds > 0) || signal?.aborted) return;
  logger.log("info", "metrics_linger", `metrics stay up ${seconds} s for a last scrape`);
  await new Promise<void>((resolve) => {
    const done = () => {
      clock.clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = clock.setTimeout(done, seconds * 1000);
    signal?.addEventListener("abort", done, { once: true });
  });
}
