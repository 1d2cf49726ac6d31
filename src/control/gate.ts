/**
 * The one door work passes before it goes to Redis. `admit(n, { node })` waits until every
 * admission check lets the run go on (memory headroom, the health throttle, a live pause), then
 * takes `n` permits from the master's own limiter (the throttle's rate) and the run-wide one. A new reason to hold the run back is one new check, plus one
 * line where the gate is built; the engine only ever talks to the gate.
 *
 * @module
 */
import type { RateLimiter } from "./rate_limit.ts";

/** Options of the gate's waits. */
export interface AdmitOptions {
  /** A stop signal: the wait ends at once (rejecting with `signal.reason`). */
  signal?: AbortSignal;
  /**
   * The master (`host:port`) whose scan asks. Each master is judged on its own health: its checks
   * and its own rate apply. Without it only the run-wide checks and limit apply.
   */
  node?: string;
}

/** One reason to hold the run back (memory headroom, later: health, a live pause). */
export interface AdmissionCheck {
  /**
   * Resolves when work may go on; may pause for as long as the reason lasts. With `fresh` the
   * check reads its source now instead of trusting a recent reading (Redis just refused a write).
   */
  wait(options: AdmitOptions & { fresh?: boolean }): Promise<void>;
}

/** Options of {@linkcode Gate}. */
export interface GateOptions {
  /** A master's own limiter (its rate while it yields to a busy Redis), under the run-wide one. */
  nodeLimiter?: (node: string) => RateLimiter | undefined;
}

/** Composes the admission checks and the rate limiter. */
export class Gate {
  readonly #limiter: RateLimiter;
  readonly #checks: readonly AdmissionCheck[];
  readonly #nodeLimiter: (node: string) => RateLimiter | undefined;

  constructor(
    limiter: RateLimiter,
    checks: readonly AdmissionCheck[] = [],
    options: GateOptions = {},
  ) {
    this.#limiter = limiter;
    this.#checks = checks;
    this.#nodeLimiter = options.nodeLimiter ?? (() => undefined);
  }

  /** The run-wide rate limit now (jobs per second; 0 = unlimited). */
  get rps(): number {
    return this.#limiter.rps;
  }

  /** The rate that applies to `node`: the lower of its own and the run-wide one (0 = unlimited). */
  rateFor(node: string): number {
    const own = this.#nodeLimiter(node)?.rps ?? 0;
    const all = this.#limiter.rps;
    if (own === 0 || all === 0) return Math.max(own, all);
    return Math.min(own, all);
  }

  /**
   * Waits until every check lets work go on, then for `n` permits of the node's limiter and the
   * run-wide one (each splits `n` into grants its current rate allows: control/rate_limit.ts).
   *
   * @returns the seconds spent waiting for the limiter.
   * @throws `signal.reason` when the signal aborts.
   */
  async admit(n: number, options: AdmitOptions = {}): Promise<number> {
    const { signal, node } = options;
    signal?.throwIfAborted();
    for (const check of this.#checks) await check.wait({ signal, node });
    const own = node === undefined ? undefined : this.#nodeLimiter(node);
    let waited = 0;
    for (const limiter of own ? [own, this.#limiter] : [this.#limiter]) {
      waited += await limiter.acquire(n, signal);
    }
    return waited;
  }

  /** Waits on every check with a fresh reading (after Redis refused a write for lack of memory). */
  async settle(options: AdmitOptions = {}): Promise<void> {
    for (const check of this.#checks) await check.wait({ signal: options.signal, fresh: true });
  }
}
