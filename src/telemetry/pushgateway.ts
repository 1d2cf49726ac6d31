/**
 * Pushing metrics to a Pushgateway, so a run that ends between two scrapes is still seen. A push
 * is best effort: logged when it fails, never failing the run. A run that never started pushes
 * nothing, so it cannot replace the last real run's group; a run killed with SIGKILL leaves its
 * last periodic push, which `push_time_seconds` shows getting old.
 *
 * @module
 */
import type { Registry } from "prom-client";
import type { TimerClock, TimerHandle } from "../async/clock.ts";
import type { Logger, RunMode } from "../run_events.ts";
import { errorMessage, redactSecrets } from "./redact.ts";

export interface PushOptions {
  /** Base URL, e.g. `http://user:pass@pushgateway:9091` (credentials become Basic auth). */
  url: string;
  registry: Registry;
  /** The `instance` grouping label. */
  instance: string;
  /** The `mode` grouping label, so a dry-run never replaces an execute run's group. */
  mode?: string;
  /** Give up after this many milliseconds (default 10000). */
  timeoutMs?: number;
  logger?: Logger;
}

/**
 * One grouping-key pair `name/value` as the Pushgateway expects it: base64url with an `@base64`
 * name suffix when the value holds `/` (it would split the path) or is empty (an empty segment
 * vanishes when the path is cleaned), else URI-component encoded: `instance/ai%3Abackfill`.
 */
export function groupingSegment(name: string, value: string): string {
  if (value === "") return `${name}@base64/=`;
  if (!value.includes("/")) return `${name}/${encodeURIComponent(value)}`;
  return `${name}@base64/${new TextEncoder().encode(value).toBase64({ alphabet: "base64url" })}`;
}

/**
 * The push URL for a base URL, an instance and (optionally) a mode, without credentials (they go
 * in the `Authorization` header).
 *
 * @throws {TypeError} when `baseUrl` is not a valid URL.
 */
export function pushUrl(baseUrl: string, instance: string, mode?: string): URL {
  const url = new URL(baseUrl);
  url.username = "";
  url.password = "";
  // Keep a path prefix (a Pushgateway behind a reverse proxy at /pgw) and append the grouping key.
  const prefix = url.pathname.replace(/\/+$/, "");
  const key = [groupingSegment("job", "relay_backfill"), groupingSegment("instance", instance)];
  if (mode !== undefined) key.push(groupingSegment("mode", mode));
  url.pathname = `${prefix}/metrics/${key.join("/")}`;
  url.search = "";
  url.hash = "";
  return url;
}

/**
 * PUTs the registry to `URL/metrics/job/relay_backfill/instance/<instance>[/mode/<mode>]`. PUT
 * replaces every metric of the group, so it shows exactly the latest push (POST would keep names an
 * older version pushed); counters stay cumulative because a resumed run carries its totals over.
 *
 * Resolves `true` on a 2xx answer, else `false`; never rejects, never logs the URL's password.
 */
export async function pushMetrics(options: PushOptions): Promise<boolean> {
  const { registry, logger, url, timeoutMs = 10_000 } = options;
  let target: URL;
  const headers = new Headers({ "content-type": registry.contentType });
  try {
    const parsed = new URL(url);
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
      throw new TypeError(`unsupported protocol ${parsed.protocol}`);
    }
    if (parsed.username !== "" || parsed.password !== "") {
      // fetch does not turn URL credentials into Basic auth, and they would show in error messages.
      const user = decodeURIComponent(parsed.username);
      const password = decodeURIComponent(parsed.password);
      const basic = new TextEncoder().encode(`${user}:${password}`).toBase64();
      headers.set("authorization", `Basic ${basic}`);
    }
    target = pushUrl(url, options.instance, options.mode);
  } catch (error: unknown) {
    logger?.log("warn", "push_failed", "invalid Pushgateway URL; metrics not pushed", {
      url: redactSecrets(url),
      error: errorMessage(error),
    });
    return false;
  }
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    const body = await registry.metrics();
    const response = await fetch(target, { method: "PUT", headers, body, signal });
    // Read the body in every case: it frees the connection, and on failure the gateway says why.
    const answer = (await response.text()).slice(0, 200).trim();
    const fields = { url: redactSecrets(target.href), status: response.status };
    if (!response.ok) {
      logger?.log("warn", "push_failed", "Pushgateway refused the metrics", {
        ...fields,
        answer: redactSecrets(answer),
      });
      return false;
    }
    logger?.log("info", "push_done", "metrics pushed to the Pushgateway", fields);
    return true;
  } catch (error: unknown) {
    logger?.log("warn", "push_failed", "could not push metrics to the Pushgateway", {
      url: redactSecrets(url),
      error: signal.aborted ? `timed out after ${timeoutMs} ms` : errorMessage(error),
    });
    return false;
  }
}

/** What a {@linkcode PushSchedule} pushes, how often, and where it logs. */
export interface PushScheduleOptions extends Pick<PushOptions, "registry" | "instance"> {
  /** Seconds between pushes while the run goes (default 30; `0`: only at start and end). */
  pushIntervalSeconds?: number;
  logger: Logger;
  clock: TimerClock;
}

/** The pushes of one run or verify: at its start, every interval and at its end, in order. */
export class PushSchedule {
  readonly #url: string;
  readonly #options: PushScheduleOptions;
  #mode?: RunMode | "verify";
  #timer?: TimerHandle;
  #queue: Promise<void> = Promise.resolve();
  #lastOk = true;
  #finished = false;

  constructor(url: string, options: PushScheduleOptions) {
    this.#url = url;
    this.#options = options;
  }

  /** Push now and then every interval. */
  start(mode: RunMode | "verify"): void {
    if (this.#mode !== undefined || this.#finished) return;
    this.#mode = mode;
    this.#enqueue(false);
    this.#arm();
  }

  /** The final push, after any in flight (none if never started); a second call only waits. */
  async finish(): Promise<void> {
    if (!this.#finished) {
      this.#finished = true;
      if (this.#timer !== undefined) this.#options.clock.clearTimeout(this.#timer);
      if (this.#mode !== undefined) this.#enqueue(true);
    }
    await this.#queue;
  }

  #arm(): void {
    const { pushIntervalSeconds = 30, clock } = this.#options;
    if (!(pushIntervalSeconds > 0)) return;
    this.#timer = clock.setTimeout(() => {
      this.#enqueue(false);
      this.#arm();
    }, pushIntervalSeconds * 1000);
  }

  #enqueue(final: boolean): void {
    const { registry, instance } = this.#options;
    const push = { url: this.#url, registry, instance, mode: this.#mode };
    this.#queue = this.#queue.then(async () => {
      this.#lastOk = await pushMetrics({ ...push, logger: this.#pushLogger(final) });
    });
  }

  /**
   * The final push logs as usual; the periodic ones log a success at debug and a failure only when
   * the previous push worked, so a Pushgateway down for an hour is one warning, not 120.
   */
  #pushLogger(final: boolean): Logger {
    const logger = this.#options.logger;
    if (final) return logger;
    return {
      log: (level, event, message, fields) => {
        if (event === "push_done") logger.log("debug", event, message, fields);
        else if (this.#lastOk) logger.log(level, event, message, fields);
      },
    };
  }
}
