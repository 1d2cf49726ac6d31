/**
 * A latency probe per master, on its own connection: a PING every ~50 ms, open-loop. Each PING is
 * sent on a fixed schedule whether or not the previous one answered, and is timed from its
 * scheduled send, so a stalled server shows as latency, not as fewer samples (no coordinated
 * omission). PINGs still in flight count with their age so far: a stall is visible while it lasts,
 * not only once it ends. The signal is the rolling p99 over the last second minus a baseline p99
 * measured before the run's first write: the round trip the backfill adds.
 *
 * @module
 */
import type { Redis } from "../redis/ioredis.ts";

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
  /** Milliseconds between PINGs. Default 50. */
  intervalMs?: number;
  /** The rolling window of the p99. Default 1000 ms. */
  windowMs?: number;
  /** PINGs that make the baseline (default 40: two seconds at 50 ms). */
  baselineSamples?: number;
  /** Called about four times a second. */
  onProbe?: (reading: ProbeReading) => void;
  /** Called on every reply. */
  onRedisReply?: (event: { node: string }) => void;
  /** Called once when PINGs start failing (until a reply comes again). */
  onRedisDown?: (event: { node: string; reason: string }) => void;
  /** Milliseconds, monotonic (default `performance.now`). */
  now?: () => number;
}

/** What the probe sees now. */
export interface ProbeSnapshot {
  /** Rolling p99 round trip in ms, in-flight PINGs included. */
  p99Ms: number;
  baselineMs: number;
  /** `p99Ms - baselineMs`, never negative: what `--max-latency` is compared with. */
  addedMs: number;
  /** Samples in the window (completed and in flight). */
  samples: number;
  inFlight: number;
}

/** More than this many PINGs in flight means the server is gone, not slow: stop adding more. */
const MAX_IN_FLIGHT = 100;

/** A running probe; {@linkcode close} it (or abort its signal). */
export class LatencyProbe {
  readonly #client: Redis;
  readonly #options: LatencyProbeOptions & { intervalMs: number; windowMs: number };
  readonly #now: () => number;
  readonly #samples: { at: number; ms: number }[] = [];
  readonly #inFlight = new Set<number>();
  #baselineMs = 0;
  /** Every round trip while the baseline is measured (the window would keep only the last one). */
  #baselineSamples: number[] | undefined = [];
  #nextAt = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #ticks = 0;
  #down = false;
  #closed = false;
  readonly #onAbort = () => void this.close();

  private constructor(client: Redis, options: LatencyProbeOptions) {
    this.#client = client;
    this.#options = { intervalMs: 50, windowMs: 1000, ...options };
    this.#now = options.now ?? (() => performance.now());
  }

  /**
   * Opens the probe's own connection (a duplicate of `source`'s settings), measures the baseline
   * and keeps probing. Await it before the first write.
   */
  static async start(source: Redis, options: LatencyProbeOptions): Promise<LatencyProbe> {
    options.signal?.throwIfAborted();
    // No offline queue: while disconnected a PING fails at once instead of piling up.
    const client = source.duplicate({ lazyConnect: true, enableOfflineQueue: false });
    client.on("error", () => {});
    const probe = new LatencyProbe(client, options);
    options.signal?.addEventListener("abort", probe.#onAbort, { once: true });
    try {
      await client.connect();
      probe.#nextAt = probe.#now();
      probe.#schedule();
      const samples = options.baselineSamples ?? 40;
      const baselineMs = samples * probe.#options.intervalMs;
      await new Promise((resolve) => setTimeout(resolve, baselineMs + probe.#options.intervalMs));
      options.signal?.throwIfAborted();
      probe.#baselineMs = percentile(probe.#baselineSamples ?? [], 0.99);
      probe.#baselineSamples = undefined;
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

  /** The current reading. */
  snapshot(): ProbeSnapshot {
    const now = this.#now();
    this.#forget(now);
    const values = [
      ...this.#samples.map((sample) => sample.ms),
      ...[...this.#inFlight].map((at) => now - at),
    ];
    const p99Ms = percentile(values, 0.99);
    return {
      p99Ms,
      baselineMs: this.#baselineMs,
      addedMs: Math.max(0, p99Ms - this.#baselineMs),
      samples: values.length,
      inFlight: this.#inFlight.size,
    };
  }

  /** Stops probing and closes the connection. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#options.signal?.removeEventListener("abort", this.#onAbort);
    this.#client.disconnect();
    await Promise.resolve();
  }

  #schedule(): void {
    if (this.#closed) return;
    const now = this.#now();
    // Fixed schedule; slots the event loop missed entirely are skipped, not sent in a burst.
    while (this.#nextAt < now - this.#options.intervalMs) this.#nextAt += this.#options.intervalMs;
    this.#timer = setTimeout(() => this.#fire(), Math.max(0, this.#nextAt - now));
  }

  #fire(): void {
    const scheduledAt = this.#nextAt;
    this.#nextAt += this.#options.intervalMs;
    if (this.#inFlight.size < MAX_IN_FLIGHT) this.#ping(scheduledAt);
    if (++this.#ticks % 5 === 0) {
      const { p99Ms } = this.snapshot();
      this.#options.onProbe?.({
        node: this.#options.node,
        p99Seconds: p99Ms / 1000,
        baselineSeconds: this.#baselineMs / 1000,
      });
    }
    this.#schedule();
  }

  #ping(scheduledAt: number): void {
    this.#inFlight.add(scheduledAt);
    this.#client.ping().then(
      () => {
        this.#inFlight.delete(scheduledAt);
        const ms = this.#now() - scheduledAt;
        this.#samples.push({ at: scheduledAt, ms });
        this.#baselineSamples?.push(ms);
        this.#down = false;
        this.#options.onRedisReply?.({ node: this.#options.node });
      },
      (error: unknown) => {
        // A failed PING is an outage, not a latency sample; the engine handles outages.
        this.#inFlight.delete(scheduledAt);
        if (this.#closed || this.#down) return;
        this.#down = true;
        const reason = (error as { code?: string }).code ?? (error as Error).name ?? "error";
        this.#options.onRedisDown?.({ node: this.#options.node, reason: String(reason) });
      },
    );
  }

  #forget(now: number): void {
    const from = now - this.#options.windowMs;
    while (this.#samples.length > 0 && this.#samples[0]!.at < from) this.#samples.shift();
  }
}

/** Nearest-rank percentile (`q` in 0..1) of `values`; 0 for none. */
export function percentile(values: readonly number[], q: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}
