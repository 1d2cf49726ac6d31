/**
 * How many script calls a master may have in flight. Redis runs every complete command it read
 * from a socket before serving the next client, so pipelined calls run back to back and the
 * application's commands wait behind all of them: `--max-call-ms` alone does not bound that.
 * Enough calls to cover one round trip keep Redis busy without filling its input buffer.
 *
 * @module
 */
/** One call running, one queued. */
export const MIN_CALL_WINDOW = 2;
/** A guard for very long round trips. */
export const MAX_CALL_WINDOW = 16;

/**
 * Calls in flight that keep a master busy across a round trip: W × maxCallMs ≥ maxCallMs + RTT.
 * The extra calls are on the wire, not in Redis's buffer.
 */
export function callWindowSize(rttMs: number, maxCallMs: number): number {
  if (!(rttMs >= 0) || !(maxCallMs > 0)) return MIN_CALL_WINDOW;
  const size = 1 + Math.ceil(rttMs / maxCallMs);
  return Math.min(MAX_CALL_WINDOW, Math.max(MIN_CALL_WINDOW, size));
}

/** What `--max-latency` leaves each master: a call's Redis ms and calls in flight. */
export interface LatencyBudget {
  maxCallMs: number;
  maxCallsInFlight: number;
}

/**
 * `--max-latency` by construction, while Redis serves other clients. An application command waits
 * at most for the rest of the event-loop turn under way (every backfill call in Redis's buffer:
 * script calls and SCANs share the window and the connection), then for one more call of ours in
 * its own turn. So (calls in flight + 1) × call bound ≤ max latency. While no other client is
 * active the window covers a round trip instead (control/pace.ts decides). Undefined for
 * `--max-latency 0` (raw speed).
 */
export function latencyBudget(maxLatencyMs: number, maxCallMs: number): LatencyBudget | undefined {
  if (!(maxLatencyMs > 0)) return undefined;
  const callMs = Math.min(maxCallMs, maxLatencyMs / 2);
  // The epsilon keeps 0.75 / 0.25 from flooring to 2.
  const calls = Math.floor(maxLatencyMs / callMs + 1e-9) - 1;
  return {
    maxCallMs: callMs,
    maxCallsInFlight: Math.min(MAX_CALL_WINDOW, Math.max(1, calls)),
  };
}

/**
 * A counting semaphore of calls in flight to one master. Its size may be a function, read at each
 * acquire: a smaller size takes effect as calls end, a larger one at the next release or acquire.
 */
export class CallWindow {
  readonly #size: () => number;
  #inFlight = 0;
  #waiters: (() => void)[] = [];

  /** @throws {RangeError} when a fixed `size` is below 1 (a function's value is kept ≥ 1). */
  constructor(size: number | (() => number)) {
    if (typeof size === "number") {
      if (!(size >= 1)) throw new RangeError(`a call window needs at least 1 call, got ${size}`);
      const fixed = Math.floor(size);
      this.#size = () => fixed;
    } else {
      this.#size = () => Math.max(1, Math.floor(size()));
    }
  }

  get size(): number {
    return this.#size();
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /**
   * Waits for room for one more call; returns its release.
   * @throws the signal's reason when it aborts first (nothing is taken then).
   */
  async acquire(options: { signal?: AbortSignal } = {}): Promise<() => void> {
    const { signal } = options;
    while (this.#inFlight >= this.#size()) {
      signal?.throwIfAborted();
      await this.#freed(signal);
    }
    signal?.throwIfAborted();
    this.#inFlight++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#inFlight--;
      // Wake as many waiters as there is room for (the size may have grown meanwhile).
      const room = Math.max(1, this.#size() - this.#inFlight);
      for (const wake of this.#waiters.splice(0, room)) wake();
    };
  }

  /** Resolves when a call is released, or when `signal` aborts (the caller re-checks). */
  #freed(signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      const wake = () => {
        signal?.removeEventListener("abort", wake);
        const at = this.#waiters.indexOf(wake);
        if (at >= 0) this.#waiters.splice(at, 1);
        resolve();
      };
      this.#waiters.push(wake);
      signal?.addEventListener("abort", wake, { once: true });
    });
  }
}

/**
 * A master's call window under `--max-latency`: `roundTrip` calls ({@linkcode callWindowSize}),
 * at most `budget` while `shared()` says another client is active.
 */
export function runWindow(
  options: { roundTrip: number; budget?: number; shared?: () => boolean },
): CallWindow {
  const { roundTrip } = options;
  const budget = options.budget ?? MAX_CALL_WINDOW;
  const shared = options.shared ?? (() => true);
  return new CallWindow(() => shared() ? Math.min(roundTrip, budget) : roundTrip);
}
