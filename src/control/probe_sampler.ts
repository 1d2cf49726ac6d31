/**
 * The timing core of the latency probe: a PING on a fixed schedule, open-loop. Each PING is sent on
 * its slot whether or not the previous one answered, so a stalled server shows as latency, not as
 * fewer samples (no coordinated omission). PINGs still in flight count with their age so far: a
 * stall is visible while it lasts, not only once it ends. A PING is timed from when it was sent,
 * not from its slot: in its own worker the sender never waits on replies, and a timer that fires a
 * few ms late (timer slack, a busy core) is not Redis latency; timed from the slot, it made an idle
 * server's p99 read 3 ms on the 2-core development machine.
 * The reading is the rolling p99 over the last second minus a baseline p99 measured before the
 * run's first write: the round trip the backfill adds. The probe's own lateness is discounted: a
 * descheduled thread reads its replies late too, so on a busy client host every round trip grows
 * by the same scheduling delay without Redis being any slower. The sampler knows how late its own
 * timer fired in each slot; the p99 of that lateness above its baseline is taken off the reading.
 * A Redis stall does not make the idle worker's timer late, so it still shows in full.
 *
 * It runs inside the probe's worker (`probe_worker.ts`), so its timers and its clock are not
 * delayed by the backfill's own busy event loop; the PING itself is passed in.
 *
 * @module
 */

/** What the probe sees now. */
export interface ProbeSnapshot {
  /** Rolling p99 round trip in ms, in-flight PINGs included. */
  p99Ms: number;
  baselineMs: number;
  /**
   * `p99Ms - baselineMs`, less the probe's own extra lateness ({@linkcode lateMs}), never negative:
   * what `--max-latency` is compared with.
   */
  addedMs: number;
  /** p99 of how late the probe's timer fired in the window, above its baseline (client delay). */
  lateMs: number;
  /** Samples in the window (completed and in flight). */
  samples: number;
  inFlight: number;
}

/** Options of {@linkcode PingSampler}. */
export interface PingSamplerOptions {
  /** Milliseconds between PINGs. Default 10. */
  intervalMs?: number;
  /** The rolling window of the p99. Default 1000 ms. */
  windowMs?: number;
  /** Called after every slot, with the snapshot and the replies since the last call. */
  onTick?: (snapshot: ProbeSnapshot, replies: number) => void;
  /** Called once when PINGs start failing (until a reply comes again). */
  onDown?: (reason: string) => void;
  /** Milliseconds, monotonic (default `performance.now`). */
  now?: () => number;
}

/** More than this many PINGs in flight means the server is gone, not slow: stop adding more. */
const MAX_IN_FLIGHT = 100;

/** A PING schedule with its rolling window; {@linkcode stop} it. */
export class PingSampler {
  readonly #ping: () => Promise<unknown>;
  readonly #options: PingSamplerOptions & { intervalMs: number; windowMs: number };
  readonly #now: () => number;
  readonly #samples: { at: number; ms: number }[] = [];
  /** How late each slot's timer fired (ms), for the client's own delay. */
  readonly #lateness: { at: number; ms: number }[] = [];
  /** Send time of each PING in flight, by sequence number. */
  readonly #inFlight = new Map<number, number>();
  #sent = 0;
  #baselineMs = 0;
  /** Every round trip while the baseline is measured (the window would keep only the last one). */
  #baselineSamples: number[] | undefined = [];
  #baselineLateMs = 0;
  #baselineLateness: number[] | undefined = [];
  #nextAt = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #replies = 0;
  #down = false;
  #stopped = false;

  /** `ping` sends one PING; it rejects when the server cannot be reached. */
  constructor(ping: () => Promise<unknown>, options: PingSamplerOptions = {}) {
    this.#ping = ping;
    this.#options = { intervalMs: 10, windowMs: 1000, ...options };
    this.#now = options.now ?? (() => performance.now());
  }

  /** Starts the schedule, then resolves with the baseline p99 of the first `samples` PINGs. */
  async start(samples: number): Promise<number> {
    this.#nextAt = this.#now();
    this.#schedule();
    const { intervalMs } = this.#options;
    await new Promise((resolve) => setTimeout(resolve, (samples + 1) * intervalMs));
    this.#baselineMs = percentile(this.#baselineSamples ?? [], 0.99);
    this.#baselineSamples = undefined;
    this.#baselineLateMs = percentile(this.#baselineLateness ?? [], 0.99);
    this.#baselineLateness = undefined;
    return this.#baselineMs;
  }

  /** The current reading. */
  snapshot(): ProbeSnapshot {
    const now = this.#now();
    const from = now - this.#options.windowMs;
    while (this.#samples.length > 0 && this.#samples[0]!.at < from) this.#samples.shift();
    while (this.#lateness.length > 0 && this.#lateness[0]!.at < from) this.#lateness.shift();
    const values = [
      ...this.#samples.map((sample) => sample.ms),
      ...[...this.#inFlight.values()].map((at) => now - at),
    ];
    const p99Ms = percentile(values, 0.99);
    const late = percentile(this.#lateness.map((sample) => sample.ms), 0.99);
    const lateMs = Math.max(0, late - this.#baselineLateMs);
    return {
      p99Ms,
      baselineMs: this.#baselineMs,
      addedMs: Math.max(0, p99Ms - this.#baselineMs - lateMs),
      lateMs,
      samples: values.length,
      inFlight: this.#inFlight.size,
    };
  }

  /** Stops the schedule. Idempotent. */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }

  #schedule(): void {
    if (this.#stopped) return;
    const now = this.#now();
    // Fixed schedule; slots the event loop missed entirely are skipped, not sent in a burst.
    while (this.#nextAt < now - this.#options.intervalMs) this.#nextAt += this.#options.intervalMs;
    this.#timer = setTimeout(() => this.#fire(), Math.max(0, this.#nextAt - now));
  }

  #fire(): void {
    const firedAt = this.#now();
    const late = Math.max(0, firedAt - this.#nextAt);
    this.#lateness.push({ at: firedAt, ms: late });
    this.#baselineLateness?.push(late);
    this.#nextAt += this.#options.intervalMs;
    if (this.#inFlight.size < MAX_IN_FLIGHT) this.#send();
    const replies = this.#replies;
    this.#replies = 0;
    this.#options.onTick?.(this.snapshot(), replies);
    this.#schedule();
  }

  #send(): void {
    const id = this.#sent++;
    const sentAt = this.#now();
    this.#inFlight.set(id, sentAt);
    this.#ping().then(
      () => {
        this.#inFlight.delete(id);
        const ms = this.#now() - sentAt;
        this.#samples.push({ at: sentAt, ms });
        this.#baselineSamples?.push(ms);
        this.#down = false;
        this.#replies++;
      },
      (error: unknown) => {
        // A failed PING is an outage, not a latency sample; the engine handles outages.
        this.#inFlight.delete(id);
        if (this.#stopped || this.#down) return;
        this.#down = true;
        const reason = (error as { code?: string }).code ?? (error as Error).name ?? "error";
        this.#options.onDown?.(String(reason));
      },
    );
  }
}

/** Nearest-rank percentile (`q` in 0..1) of `values`; 0 for none. */
export function percentile(values: readonly number[], q: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}
