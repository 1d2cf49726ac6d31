/**
 * Sub-batches of `verify --full`: a chunk's keys go to Redis in read-only script calls sized to a
 * Redis time budget, each admitted by the limiter, a few in flight at once so Redis never waits
 * for the client to decode the previous reply; differences are rechecked after a delay.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import { delay } from "../async/delay.ts";
import type { RateLimiter } from "../control/rate_limit.ts";
import type { PassTiming } from "./pairs.ts";
import { followPace, keysForBudget } from "./call_budget.ts";

/** Options of {@linkcode SubBatches}. */
export interface SubBatchOptions {
  /** Rechecks of a difference before it counts. */
  recheck: number;
  recheckDelayMs: number;
  limiter: Pick<RateLimiter, "acquire">;
  /** Keys per second (0 = unlimited): a sub-batch is at most a quarter second of them. */
  rps: number;
  /**
   * Redis time one call may take, µs: sub-batches are sized so that their slowest call takes a
   * share of it, the time Redis spends outside the script's own clock included (`call_budget.ts`).
   */
  callBudgetUs: number;
  /**
   * Sub-batches in flight. Redis runs a connection's pipelined calls back to back, so another
   * client may wait behind up to this many calls (4 × ~0.2 ms by default).
   */
  inFlight: number;
  signal?: AbortSignal;
}

/** The most keys one sub-batch carries (a guard: the time budget normally sizes it). */
export const MAX_SUB_BATCH = 512;

/** Runs work over keys in sub-batches whose size follows the measured call time. */
export class SubBatches {
  #size = 16;
  /** Moving average of the calls' own time per key, µs. */
  #paceUs: number | undefined;
  readonly #options: SubBatchOptions;

  constructor(options: SubBatchOptions) {
    this.#options = options;
  }

  /** Runs `work` over `keys` and returns its results in the order of `keys`. */
  async run<T>(
    keys: readonly Buffer[],
    work: (keys: Buffer[], timing: PassTiming) => Promise<T[]>,
  ): Promise<T[]> {
    const { limiter, rps, signal } = this.#options;
    const out: T[] = new Array(keys.length);
    const cap = rps > 0 ? Math.max(1, Math.min(MAX_SUB_BATCH, Math.floor(rps / 4))) : MAX_SUB_BATCH;
    let next = 0;
    let failed = false;
    const worker = async () => {
      while (!failed && next < keys.length) {
        // Claimed before any await, so two workers never take the same keys.
        const start = next;
        const sub = keys.slice(start, start + Math.min(this.#size, cap));
        next += sub.length;
        await limiter.acquire(sub.length, signal);
        const timing: PassTiming = { maxUs: 0 };
        const results = await work(sub, timing);
        results.forEach((result, j) => out[start + j] = result);
        this.#resize(sub.length, timing, cap);
      }
    };
    await Promise.all(
      Array.from({ length: this.#options.inFlight }, () =>
        worker().catch((error: unknown) => {
          failed = true;
          throw error;
        })),
    );
    return out;
  }

  /**
   * Rechecks the results that `failed`, up to `recheck` rounds after the delay each, in place.
   * Returns the positions that failed the first check.
   */
  async recheck<V>(
    keys: readonly Buffer[],
    results: V[],
    failed: (result: V) => boolean,
    check: (keys: Buffer[], timing: PassTiming) => Promise<V[]>,
  ): Promise<number[]> {
    const first = results.flatMap((result, i) => failed(result) ? [i] : []);
    let pending = first;
    for (let round = 0; round < this.#options.recheck && pending.length > 0; round++) {
      await delay(this.#options.recheckDelayMs, { signal: this.#options.signal });
      const again = await this.run(pending.map((i) => keys[i]!), check);
      pending.forEach((index, j) => results[index] = again[j]!);
      pending = pending.filter((index) => failed(results[index]!));
    }
    return first;
  }

  /**
   * Sizes the next sub-batch from the slowest call of this one. Its own time per key (the pace)
   * feeds a moving average that follows a slower pace fast and a faster one gently
   * ({@linkcode followPace}): a sub-batch of slow (wide) jobs must not repeat, and one fast call
   * must not make the next ones overrun (the script would stop them early, and the keys left over
   * would take a call of their own). A pace counts as at most 4× the average (one stalled call
   * does not shrink the next dozen). On a cluster a sub-batch is split over the nodes, so the
   * node of its slowest call got only part of it (a call the script stopped early is no split).
   */
  #resize(keys: number, timing: PassTiming, cap: number): void {
    const callKeys = timing.maxKeys ?? 0;
    const nodeKeys = timing.nodeKeys ?? callKeys;
    if (timing.maxUs <= 0 || callKeys <= 0 || nodeKeys <= 0) return;
    this.#paceUs = followPace(this.#paceUs, timing.maxUs / callKeys);
    const ideal = keysForBudget(this.#options.callBudgetUs, this.#paceUs) * keys / nodeKeys;
    const grown = Math.ceil(this.#size * 1.5);
    this.#size = Math.max(1, Math.min(cap, Math.floor(Math.min(ideal, grown))));
  }
}
