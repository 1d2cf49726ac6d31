/**
 * A sliding-window rate limiter: no window of `windowMs` (1 s) ever holds more than `rps` permits.
 * It keeps a log of grants (time, count) for the last window, which is exact (unlike a token bucket,
 * which allows a burst of 2×rps across a window boundary) and small (at most `rps` entries).
 *
 * The window alone would let a whole second's permits go at once and then stall for the rest of
 * the second; grants are also paced, `n` permits per `n / rps` seconds, so Redis sees a steady
 * trickle of small calls instead of one burst per second.
 *
 * @module
 */
import { monotonicClock, type PacingClock } from "../async/clock.ts";

/** What callers need of a limiter. */
export interface RateLimiter {
  /** Permits per window; 0 = unlimited. */
  readonly rps: number;
  acquire(n: number, signal?: AbortSignal): Promise<number>;
}

/** Limits permits per sliding window. `rps` 0 means unlimited. */
export class SlidingWindowLimiter implements RateLimiter {
  #rps: number;
  readonly #clock: PacingClock;
  readonly #windowMs: number;
  /** Grants within the current window, oldest first. */
  readonly #grants: { at: number; count: number }[] = [];
  #inWindow = 0;
  /** Earliest time the next grant may start (pacing). */
  #nextAt = -Infinity;

  /**
   * @param rps permits per window; 0 = unlimited.
   * @throws {RangeError} when `rps` is negative or not an integer.
   */
  constructor(rps: number, options: { clock?: PacingClock; windowMs?: number } = {}) {
    this.#rps = checkRps(rps);
    this.#clock = options.clock ?? monotonicClock;
    this.#windowMs = options.windowMs ?? 1000;
  }

  /** Permits per window; 0 = unlimited. */
  get rps(): number {
    return this.#rps;
  }

  /**
   * Changes the rate while the run goes. Grants already in the window keep counting, so a lower
   * rate takes effect at once without a burst; pacing restarts from the new rate.
   *
   * @throws {RangeError} when `rps` is negative or not an integer.
   */
  setRps(rps: number): void {
    this.#rps = checkRps(rps);
    this.#nextAt = -Infinity;
  }

  /** The largest `n` one {@linkcode acquire} call may ask for. */
  get maxPermits(): number {
    return this.#rps === 0 ? Infinity : this.#rps;
  }

  /**
   * Waits until `n` permits fit in the window and takes them.
   *
   * @returns the seconds spent waiting.
   * @throws {RangeError} when `n` exceeds {@linkcode maxPermits}; `signal.reason` when aborted.
   */
  async acquire(n: number, signal?: AbortSignal): Promise<number> {
    signal?.throwIfAborted();
    if (this.#rps === 0 || n <= 0) return 0;
    if (n > this.#rps) {
      throw new RangeError(`cannot acquire ${n} permits at once with rps ${this.#rps}`);
    }
    const started = this.#clock.now();
    for (;;) {
      const now = this.#clock.now();
      this.#expire(now);
      if (now >= this.#nextAt && this.#inWindow + n <= this.#rps) {
        this.#grants.push({ at: now, count: n });
        this.#inWindow += n;
        // Pace from the planned slot, but never from more than a quarter window ago: a caller that
        // stalled briefly (between batches) catches up instead of losing its slots, and one that
        // stalled long cannot bank a burst. The window check above still caps every window.
        const from = this.#nextAt === -Infinity
          ? now
          : Math.max(now - this.#windowMs / 4, this.#nextAt);
        this.#nextAt = from + (n * this.#windowMs) / this.#rps;
        return (now - started) / 1000;
      }
      const windowWait = this.#inWindow + n <= this.#rps ? 0 : this.#waitFor(n, now);
      await this.#clock.sleep(Math.max(windowWait, this.#nextAt - now, 0.1), signal);
    }
  }

  #expire(now: number): void {
    while (this.#grants.length > 0 && this.#grants[0]!.at + this.#windowMs <= now) {
      this.#inWindow -= this.#grants.shift()!.count;
    }
  }

  /** Milliseconds until enough old grants leave the window for `n` more permits. */
  #waitFor(n: number, now: number): number {
    let excess = this.#inWindow + n - this.#rps;
    for (const grant of this.#grants) {
      excess -= grant.count;
      if (excess <= 0) return Math.max(grant.at + this.#windowMs - now, 0.1);
    }
    return this.#windowMs;
  }
}

function checkRps(rps: number): number {
  if (!Number.isInteger(rps) || rps < 0) {
    throw new RangeError(`rps must be a non-negative integer, got ${rps}`);
  }
  return rps;
}
