/**
 * The one door work passes before it goes to Redis. `admit(n)` waits until every admission check
 * lets the run go on (memory headroom today; a health throttle or a live pause later), then takes
 * `n` permits from the rate limiter. A new reason to hold the run back is one new check, plus one
 * line where the gate is built; the engine only ever talks to the gate.
 *
 * @module
 */
import type { SlidingWindowLimiter } from "./rate_limit.ts";

/** Options of the gate's waits. */
export interface AdmitOptions {
  /** A stop signal: the wait ends at once (rejecting with `signal.reason`). */
  signal?: AbortSignal;
}

/** One reason to hold the run back (memory headroom, later: health, a live pause). */
export interface AdmissionCheck {
  /**
   * Resolves when work may go on; may pause for as long as the reason lasts. With `fresh` the
   * check reads its source now instead of trusting a recent reading (Redis just refused a write).
   */
  wait(options: AdmitOptions & { fresh?: boolean }): Promise<void>;
}

/** What the gate needs of the limiter. */
export type GateLimiter = Pick<SlidingWindowLimiter, "rps" | "maxPermits" | "acquire" | "setRps">;

/** Composes the admission checks and the rate limiter. */
export class Gate {
  readonly #limiter: GateLimiter;
  readonly #checks: readonly AdmissionCheck[];

  constructor(limiter: GateLimiter, checks: readonly AdmissionCheck[] = []) {
    this.#limiter = limiter;
    this.#checks = checks;
  }

  /** The rate limit now (jobs per second; 0 = unlimited). */
  get rps(): number {
    return this.#limiter.rps;
  }

  /** Changes the rate limit while the run goes (see `SlidingWindowLimiter.setRps`). */
  setRps(rps: number): void {
    this.#limiter.setRps(rps);
  }

  /**
   * Waits until every check lets work go on, then for `n` permits (in several grants when `n` is
   * more than one window holds, as after a lowered rate).
   *
   * @returns the seconds spent waiting for the limiter.
   * @throws `signal.reason` when the signal aborts.
   */
  async admit(n: number, options: AdmitOptions = {}): Promise<number> {
    const { signal } = options;
    signal?.throwIfAborted();
    for (const check of this.#checks) await check.wait({ signal });
    let waited = 0;
    for (let left = n; left > 0;) {
      const take = Math.min(left, this.#limiter.maxPermits);
      waited += await this.#limiter.acquire(take, signal);
      left -= take;
    }
    return waited;
  }

  /** Waits on every check with a fresh reading (after Redis refused a write for lack of memory). */
  async settle(options: AdmitOptions = {}): Promise<void> {
    for (const check of this.#checks) await check.wait({ signal: options.signal, fresh: true });
  }
}
