/**
 * How many script calls a master may have in flight at once. A time-bounded call holds Redis for
 * at most `--max-call-ms`, but that bound alone does not hold for pipelined calls: Redis reads a
 * client's socket up to 16 KB at a time and runs every complete command it read before it serves
 * the next client, so a batch of 25 calls written at once runs back to back, and the application's
 * commands wait behind all of them (~6 calls, ~1.5 ms, per read on a small machine). Keeping only
 * enough calls in flight to cover one round trip keeps Redis busy with the backfill's work while it
 * never holds more than about two calls' worth in its input buffer.
 *
 * @module
 */
/** Calls in flight while nothing is known of the round trip: one running, one queued. */
export const MIN_CALL_WINDOW = 2;
/** A guard for very long round trips: never more than this many calls in flight per master. */
export const MAX_CALL_WINDOW = 16;

/**
 * Calls in flight that keep a master busy across a round trip. When a call ends, its reply and the
 * next call need one round trip to meet again, so W calls of `maxCallMs` keep Redis busy when
 * W × maxCallMs ≥ maxCallMs + RTT: W = 1 + ⌈RTT / maxCallMs⌉, at least 2. That is 2 on loopback
 * and 3 at 0.5 ms RTT with 0.25 ms calls; the extra calls are on the wire, not in Redis's buffer.
 */
export function callWindowSize(rttMs: number, maxCallMs: number): number {
  if (!(rttMs >= 0) || !(maxCallMs > 0)) return MIN_CALL_WINDOW;
  const size = 1 + Math.ceil(rttMs / maxCallMs);
  return Math.min(MAX_CALL_WINDOW, Math.max(MIN_CALL_WINDOW, size));
}

/** What `--max-latency` leaves each master: a call's Redis-time bound and calls in flight. */
export interface LatencyBudget {
  /** The Redis time one call may take, ms (`--max-call-ms`, or less to fit). */
  maxCallMs: number;
  /** Script calls in flight per master, at most. */
  maxCallsInFlight: number;
}

/**
 * `--max-latency` by construction, while Redis serves other clients. Redis runs an event-loop turn
 * at a time: it runs every complete command in the buffers of the clients that were readable when
 * the turn began, and writes the replies at the turn's end. An application command that arrives
 * while the backfill works waits, at most, for the rest of the turn under way (every backfill call
 * already in Redis's buffer: the calls a master has in flight, its script calls and its SCANs
 * sharing one window since they share the connection), then for its own turn, in which one more
 * call of ours that arrived meanwhile may run before it. So (calls in flight + 1) × call bound ≤
 * MS: one call in flight needs calls of MS / 2, and the call bound is `--max-call-ms`, or that when
 * it is smaller. With the defaults (0.5 ms, 0.25 ms) that is one call of 0.25 ms. While no other
 * client is active, nobody waits, and the window covers a round trip instead ({@linkcode
 * callWindowSize}; control/pace.ts decides which applies). Undefined for `--max-latency 0` (raw
 * speed, no bound).
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

  /** Calls allowed in flight now. */
  get size(): number {
    return this.#size();
  }

  /** Calls in flight now. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /**
   * Waits for room for one more call; returns a release to call once its reply is in.
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
 * A master's call window under `--max-latency`: a round trip's worth of calls (`roundTrip`, from
 * {@linkcode callWindowSize}), and no more than the latency budget's `budget` while `shared()` says
 * another client is active (control/pace.ts). Raw speed takes a fixed {@linkcode MAX_CALL_WINDOW}.
 */
export function runWindow(
  options: { roundTrip: number; budget?: number; shared?: () => boolean },
): CallWindow {
  const { roundTrip } = options;
  const budget = options.budget ?? MAX_CALL_WINDOW;
  const shared = options.shared ?? (() => true);
  return new CallWindow(() => shared() ? Math.min(roundTrip, budget) : roundTrip);
}
