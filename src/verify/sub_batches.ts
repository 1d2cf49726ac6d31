/**
 * Sub-batches of the verify checks: script calls sized to a Redis time budget by the run's call
 * sizer, admitted by the limiter, a few in flight so Redis never waits for the client to decode.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import { delay } from "../async/delay.ts";
import { CallSizer, STOPPING_CALL_SHARE } from "../control/call_size.ts";
import type { RateLimiter } from "../control/rate_limit.ts";
import { type CallTiming, OUTSIDE_SCRIPT_US } from "./node_calls.ts";

export interface SubBatchOptions {
  /** Rechecks of a difference before it counts. */
  recheck: number;
  recheckDelayMs: number;
  limiter: Pick<RateLimiter, "acquire">;
  /** Keys per second (0 = unlimited): a sub-batch is at most a quarter second of them. */
  rps: number;
  /** Redis time one call may take, µs, the time outside the script's clock included. */
  callBudgetUs: number;
  /** Sub-batches in flight: another client may wait behind this many pipelined calls. */
  inFlight: number;
  signal?: AbortSignal;
}

/**
 * Sub-batches in flight by default: Redis works on the others while the client decodes a reply
 * or collects garbage (a scavenge takes ~1 ms; four calls of ~0.2 ms cover most).
 */
export const SUB_BATCHES_IN_FLIGHT = 4;

/** Keys of the first sub-batch, before any call is measured. */
const FIRST_SUB_BATCH = 16;

/** Runs work over keys in sub-batches whose size follows the measured call time. */
export class SubBatches {
  #size = FIRST_SUB_BATCH;
  readonly #sizer: CallSizer;
  readonly #options: SubBatchOptions;

  constructor(options: SubBatchOptions) {
    this.#options = options;
    this.#sizer = new CallSizer({
      maxCallMs: options.callBudgetUs / 1000,
      targetShare: STOPPING_CALL_SHARE,
      coldStartKeys: FIRST_SUB_BATCH,
      perCallMicros: OUTSIDE_SCRIPT_US.perCall,
      // A slower pace is followed half-way at once: slow, wide jobs must not overrun twice.
      slowerAlpha: 0.5,
    });
  }

  /** Runs `work` over `keys` and returns its results in the order of `keys`. */
  async run<T>(
    keys: readonly Buffer[],
    work: (keys: Buffer[], timing: CallTiming) => Promise<T[]>,
  ): Promise<T[]> {
    const { limiter, rps, signal } = this.#options;
    const out: T[] = new Array(keys.length);
    const cap = rps > 0 ? Math.max(1, Math.floor(rps / 4)) : Infinity;
    let next = 0;
    let failed = false;
    const worker = async () => {
      while (!failed && next < keys.length) {
        // Claimed before any await, so two workers never take the same keys.
        const start = next;
        const sub = keys.slice(start, start + Math.min(this.#size, cap));
        next += sub.length;
        await limiter.acquire(sub.length, signal);
        const timing: CallTiming = { maxUs: 0 };
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
    check: (keys: Buffer[], timing: CallTiming) => Promise<V[]>,
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
   * Sizes the next sub-batch from the slowest call of this one, growing by half at most. On a
   * cluster that call's node got only part of the sub-batch: scale by its share.
   */
  #resize(keys: number, timing: CallTiming, cap: number): void {
    const callKeys = timing.maxKeys ?? 0;
    const nodeKeys = timing.nodeKeys ?? callKeys;
    if (timing.maxUs <= 0 || callKeys <= 0 || nodeKeys <= 0) return;
    this.#sizer.record({
      keys: callKeys,
      micros: timing.maxUs + callKeys * OUTSIDE_SCRIPT_US.perKey,
    });
    const ideal = this.#sizer.nextCount() * keys / nodeKeys;
    const grown = Math.ceil(this.#size * 1.5);
    this.#size = Math.max(1, Math.min(cap, Math.floor(Math.min(ideal, grown))));
  }
}
