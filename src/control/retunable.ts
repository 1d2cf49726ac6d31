/**
 * A rate limiter whose rate can be lowered while callers wait in it. The sliding-window limiter
 * refuses a grant larger than its rate, and one that waits for `n` permits would wait forever if the
 * rate dropped below `n` meanwhile (a latency cut to 20/s, `backfill set-rps 5`). This wrapper
 * hands the limiter pieces no larger than the rate, and restarts a wait whose rate changed, so a
 * new rate applies at once and no waiter is stranded. It also counts what it granted, which the
 * throttle needs to know whether the run keeps up with its rate.
 *
 * @module
 */
import { SlidingWindowLimiter } from "./rate_limit.ts";

/** A {@linkcode SlidingWindowLimiter} that can be re-tuned under waiting callers. */
export class RetunableLimiter {
  readonly #inner: Pick<SlidingWindowLimiter, "rps" | "maxPermits" | "acquire" | "setRps">;
  #retuned = new AbortController();
  #granted = 0;

  /** @param rps permits per second; 0 = unlimited. */
  constructor(rps: number, inner?: SlidingWindowLimiter) {
    this.#inner = inner ?? new SlidingWindowLimiter(rps);
  }

  /** Permits per second now; 0 = unlimited. */
  get rps(): number {
    return this.#inner.rps;
  }

  /** Any `n` may be asked for: it is split into grants the current rate allows. */
  get maxPermits(): number {
    return Infinity;
  }

  /** Permits granted since the limiter was made (for the achieved rate). */
  get granted(): number {
    return this.#granted;
  }

  /** Changes the rate; callers waiting under the old rate start over under the new one. */
  setRps(rps: number): void {
    if (rps === this.#inner.rps) return;
    this.#inner.setRps(rps);
    const retuned = this.#retuned;
    this.#retuned = new AbortController();
    retuned.abort();
  }

  /**
   * Waits for `n` permits, in grants of at most the current rate.
   *
   * @returns the seconds spent waiting.
   * @throws `signal.reason` when the signal aborts.
   */
  async acquire(n: number, signal?: AbortSignal): Promise<number> {
    const started = performance.now();
    for (let left = n; left > 0;) {
      signal?.throwIfAborted();
      const take = Math.min(left, this.#inner.maxPermits);
      const retuned = this.#retuned.signal;
      const both = signal ? AbortSignal.any([signal, retuned]) : retuned;
      try {
        await this.#inner.acquire(take, both);
      } catch (error) {
        if (signal?.aborted || !retuned.aborted) throw error;
        continue; // the rate changed while waiting: ask again under the new one
      }
      this.#granted += take;
      left -= take;
    }
    return (performance.now() - started) / 1000;
  }
}
