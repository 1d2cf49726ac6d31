/**
 * A latency probe per master: a PING every 10 ms, open-loop, on its own connection, in its own
 * worker thread (`probe_worker.ts`, timing in `probe_sampler.ts`). The worker keeps the schedule
 * and the clock off the backfill's event loop: a busy client (`--rps 0` on a loaded host) delays
 * its own timers by tens of milliseconds, and a probe timed there would read that delay as Redis
 * latency. This side only keeps the worker's latest snapshot and passes its events on.
 *
 * @module
 */
import type { Redis } from "../redis/ioredis.ts";
import type { ProbeTarget } from "./probe_connection.ts";
import type { ProbeSnapshot } from "./probe_sampler.ts";
import type { ProbeMessage, ProbeStart } from "./probe_worker.ts";

export { percentile, type ProbeSnapshot } from "./probe_sampler.ts";

/** A probe reading, for the `relay_backfill_probe_latency_seconds` metric. */
export interface ProbeReading {
  node: string;
  p99Seconds: number;
  baselineSeconds: number;
}

/** Options of {@linkcode LatencyProbe.start}. */
export interface LatencyProbeOptions {
  /** `host:port` of the master, for callbacks. */
  node: string;
  /** Closes the probe when aborted. */
  signal?: AbortSignal;
  /** Milliseconds between PINGs. Default 10 (see {@linkcode PROBE_INTERVAL_MS}). */
  intervalMs?: number;
  /** The rolling window of the p99. Default 1000 ms. */
  windowMs?: number;
  /** PINGs that make the baseline (default 200: two seconds at 10 ms). */
  baselineSamples?: number;
  /** Called about four times a second. */
  onProbe?: (reading: ProbeReading) => void;
  /** Called when replies came: at most once per snapshot of the worker (about 20 a second). */
  onRedisReply?: (event: { node: string }) => void;
  /** Called once when PINGs start failing (until a reply comes again). */
  onRedisDown?: (event: { node: string; reason: string }) => void;
}

/** The probe's connection could not be opened (the worker's error; it never holds credentials). */
export class ProbeStartError extends Error {
  override name = "ProbeStartError";
  /** The connection error's code (`ECONNREFUSED`, …), when it had one. */
  readonly code?: string;
  constructor(message: string, options: { code?: string; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.code = options.code;
  }
}

/**
 * Where `source` is connected and how (credentials included: for the worker only). A Sentinel
 * client's options name the sentinels, so its probe goes to the server it is connected to now.
 */
export function probeTarget(source: Redis): ProbeTarget {
  const options = source.options;
  const stream = (source as unknown as { stream?: { remoteAddress?: string; remotePort?: number } })
    .stream;
  const viaSentinel = (options.sentinels?.length ?? 0) > 0 && stream?.remoteAddress !== undefined;
  const tls = options.tls as { ca?: unknown; cert?: unknown; key?: unknown; servername?: string };
  return {
    host: viaSentinel
      ? stream!.remoteAddress!.replace(/^::ffff:/, "")
      : options.host ?? "127.0.0.1",
    port: viaSentinel ? stream!.remotePort ?? 6379 : options.port ?? 6379,
    // ioredis keeps `null` for "none".
    username: options.username || undefined,
    password: options.password || undefined,
    tls: tls === undefined ? undefined : {
      ca: pem(tls.ca),
      cert: pem(tls.cert),
      key: pem(tls.key),
      servername: tls.servername,
    },
  };
}

function pem(value: unknown): string | undefined {
  return typeof value === "string" ? value : undefined;
}

/**
 * Milliseconds between PINGs. With one PING every 50 ms a one-second window holds 20 round trips,
 * so its p99 is simply the slowest one, compared with the slowest of the baseline's 40: on the
 * shared 2-core development machine an idle server then read "over 0.5 ms" on 10–24% of the
 * throttle's ticks (scheduler noise, not Redis). At 10 ms the p99 of 100 round trips ignores a
 * single outlier: 0–3% of ticks. 100 PINGs a second cost Redis about 0.1 ms of CPU a second.
 */
export const PROBE_INTERVAL_MS = 10;

const EMPTY: ProbeSnapshot = {
  p99Ms: 0,
  baselineMs: 0,
  addedMs: 0,
  lateMs: 0,
  samples: 0,
  inFlight: 0,
};

/** A running probe; {@linkcode close} it (or abort its signal). */
export class LatencyProbe {
  readonly #worker: Worker;
  readonly #options: LatencyProbeOptions;
  #baselineMs = 0;
  #last: ProbeSnapshot = EMPTY;
  #ticks = 0;
  #closed = false;
  readonly #onAbort = () => void this.close();

  private constructor(worker: Worker, options: LatencyProbeOptions) {
    this.#worker = worker;
    this.#options = options;
  }

  /**
   * Starts the probe's worker, which opens its own connection with `source`'s settings, measures
   * the baseline and keeps probing. Await it before the first write.
   *
   * @throws {ProbeStartError} when the connection cannot be opened.
   */
  static async start(source: Redis, options: LatencyProbeOptions): Promise<LatencyProbe> {
    options.signal?.throwIfAborted();
    const worker = new Worker(new URL("./probe_worker.ts", import.meta.url).href, {
      type: "module",
    });
    const probe = new LatencyProbe(worker, options);
    options.signal?.addEventListener("abort", probe.#onAbort, { once: true });
    const ready = Promise.withResolvers<void>();
    worker.onmessage = (event: MessageEvent<ProbeMessage>) => probe.#receive(event.data, ready);
    worker.onerror = (event) => {
      // A worker that cannot load or crashed: fail the start, never the process.
      event.preventDefault();
      ready.reject(new ProbeStartError(`the latency probe's worker failed: ${event.message}`));
    };
    options.signal?.addEventListener("abort", () => ready.reject(options.signal?.reason), {
      once: true,
    });
    const start: ProbeStart = {
      target: probeTarget(source),
      intervalMs: options.intervalMs ?? PROBE_INTERVAL_MS,
      windowMs: options.windowMs ?? 1000,
      baselineSamples: options.baselineSamples ?? 200,
    };
    worker.postMessage(start);
    try {
      await ready.promise;
      return probe;
    } catch (error) {
      await probe.close();
      throw error;
    }
  }

  /** The baseline p99 in ms (idle, before the first write). */
  get baselineMs(): number {
    return this.#baselineMs;
  }

  /** The worker's latest reading (one PING interval old at most, while this loop keeps up). */
  snapshot(): ProbeSnapshot {
    return this.#last;
  }

  /** Stops the worker, which closes its connection. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#options.signal?.removeEventListener("abort", this.#onAbort);
    this.#worker.terminate();
    // A closed probe measures nothing: no PING is in flight any more.
    this.#last = { ...EMPTY, baselineMs: this.#baselineMs };
    await Promise.resolve();
  }

  #receive(message: ProbeMessage, ready: PromiseWithResolvers<void>): void {
    if (this.#closed) return;
    const { node } = this.#options;
    switch (message.type) {
      case "ready":
        this.#baselineMs = message.baselineMs;
        this.#last = message.snapshot;
        ready.resolve();
        return;
      case "failed":
        ready.reject(new ProbeStartError(message.message, { code: message.code }));
        return;
      case "down":
        this.#options.onRedisDown?.({ node, reason: message.reason });
        return;
      case "snapshot":
        this.#last = message.snapshot;
        if (message.replies > 0) this.#options.onRedisReply?.({ node });
        if (++this.#ticks % 5 === 0) {
          this.#options.onProbe?.({
            node,
            p99Seconds: message.snapshot.p99Ms / 1000,
            baselineSeconds: message.snapshot.baselineMs / 1000,
          });
        }
    }
  }
}
