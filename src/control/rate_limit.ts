/**
 * The rate limiter: no sliding window of one second holds more than `rps` permits. A log of
 * the window's grants is exact (a token bucket allows 2×rps across a boundary) and small. Grants
 * are also paced, `n` permits per `n / rps` seconds, so Redis sees a steady trickle instead of one
 * burst per second. When the rate changes, every waiter starts over under the new one.
 *
 * @module
 */
import { monotonicClock, type PacingClock } from "../async/clock.ts";

const WINDOW_MS = 1000;

/** Options of an admission wait (the gate's, run/copier.ts). */
export interface AdmitOptions {
  signal?: AbortSignal;
  /** The master (`host:port`) that asks: its own checks and rate apply; without, run-wide ones. */
  node?: string;
}

/** What the gate waits on before its limiters (the throttle). */
export interface AdmissionCheck {
  /** Resolves when work may go on; `fresh` reads the source now (Redis just refused a write). */
  wait(options: AdmitOptions & { fresh?: boolean }): Promise<void>;
}

/** What callers need of a limiter. */
export interface RateLimiter {
  readonly rps: number;
  acquire(n: number, signal?: AbortSignal): Promise<number>;
}

/** Limits permits per sliding window. `rps` 0 means unlimited. */
export class SlidingWindowLimiter implements RateLimiter {
  #rps: number;
  readonly #clock: PacingClock;
  /** Oldest first. */
  readonly #grants: { at: number; count: number }[] = [];
  #inWindow = 0;
  /** Earliest start of the next grant (pacing). */
  #nextAt = -Infinity;
  /** Aborted (and replaced) when the rate changes, waking every waiter. */
  #retuned = new AbortController();
  #granted = 0;

  /** @throws {RangeError} when `rps` is negative or not an integer. */
  constructor(rps: number, options: { clock?: PacingClock } = {}) {
    this.#rps = checkRps(rps);
    this.#clock = options.clock ?? monotonicClock;
  }

  get rps(): number {
    return this.#rps;
  }

  /** Permits granted since the limiter was made. */
  get granted(): number {
    return this.#granted;
  }

  /**
   * Changes the rate; grants in the window keep counting, so a lower rate allows no burst.
   * @throws {RangeError} when `rps` is negative or not an integer.
   */
  setRps(rps: number): void {
    if (checkRps(rps) === this.#rps) return;
    this.#rps = rps;
    this.#nextAt = -Infinity;
    const retuned = this.#retuned;
    this.#retuned = new AbortController();
    retuned.abort();
  }

  /**
   * Takes `n` permits, in grants of at most the current rate; returns the seconds spent waiting.
   * @throws `signal.reason` when aborted.
   */
  async acquire(n: number, signal?: AbortSignal): Promise<number> {
    signal?.throwIfAborted();
    const started = this.#clock.now();
    for (let left = n; left > 0;) {
      if (this.#rps === 0) {
        this.#granted += left;
        break;
      }
      const take = Math.min(left, this.#rps);
      const now = this.#clock.now();
      this.#expire(now);
      if (now >= this.#nextAt && this.#inWindow + take <= this.#rps) {
        this.#grant(take, now);
        left -= take;
        continue;
      }
      const windowWait = this.#inWindow + take <= this.#rps ? 0 : this.#waitFor(take, now);
      const retuned = this.#retuned.signal;
      try {
        await this.#clock.sleep(
          Math.max(windowWait, this.#nextAt - now, 0.1),
          signal ? AbortSignal.any([signal, retuned]) : retuned,
        );
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        if (!retuned.aborted) throw error;
        // the rate changed while waiting: ask again under the new one
      }
    }
    return (this.#clock.now() - started) / 1000;
  }

  #grant(n: number, now: number): void {
    this.#grants.push({ at: now, count: n });
    this.#inWindow += n;
    this.#granted += n;
    // Pace from the planned slot, but never from more than a quarter window ago: a caller that
    // stalled briefly (between batches) catches up instead of losing its slots, and one that
    // stalled long cannot bank a burst. The window check in acquire still caps every window.
    const from = this.#nextAt === -Infinity ? now : Math.max(now - WINDOW_MS / 4, this.#nextAt);
    this.#nextAt = from + (n * WINDOW_MS) / this.#rps;
  }

  #expire(now: number): void {
    while (this.#grants.length > 0 && this.#grants[0]!.at + WINDOW_MS <= now) {
      this.#inWindow -= this.#grants.shift()!.count;
    }
  }

  /** Milliseconds until enough old grants leave the window for `n` more permits. */
  #waitFor(n: number, now: number): number {
    let excess = this.#inWindow + n - this.#rps;
    for (const grant of this.#grants) {
      excess -= grant.count;
      if (excess <= 0) return Math.max(grant.at + WINDOW_MS - now, 0.1);
    }
    return WINDOW_MS;
  }
}

function checkRps(rps: number): number {
  if (!Number.isInteger(rps) || rps < 0) {
    throw new RangeError(`rps must be a non-negative integer, got ${rps}`);
  }
  return rps;
}
