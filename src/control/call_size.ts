/**
 * Time-bounded script calls, as a pure decision: learn what one key costs Redis from the calls'
 * own timing, and size the next call so it holds Redis no longer than `--max-call-ms`. A fixed key
 * count blocks Redis for however long that count takes on the hardware at hand; a time budget
 * blocks it for the same time everywhere. The count cap stays, only as a guard against a wildly
 * wrong estimate. The one sizer of the run: the copy calls' keys (migrate/in_server.ts) and the
 * SCANs' COUNT (control/timed_scan.ts).
 *
 * Calls are sized to {@linkcode TARGET_SHARE} of the budget, not all of it: the learnt cost is a
 * mean, and one call's keys cost more or less than it (their width, TTLs, where SCAN found them).
 * The share was chosen by a measurement (docs/benchmarks.md, "The call share").
 *
 * @module
 */

/** The share of the budget a call is sized to (see the module comment). */
export const TARGET_SHARE = 0.7;

/** The most keys one script call carries, whatever its budget fits: a guard only. */
export const MAX_CALL_KEYS = 100;

/**
 * The share for calls that stop early by their own clock (`verify`'s script reads TIME as it goes
 * and leaves the keys that would overrun to the next call): one that runs slower than its size
 * predicted still ends within the budget, so they are sized closer to it.
 */
export const STOPPING_CALL_SHARE = 0.9;

/** Options of {@linkcode CallSizer}. */
export interface CallSizerOptions {
  /** `--max-call-ms`: the Redis time one call may take. Default 0.25. */
  maxCallMs?: number;
  /** Never more keys per call than this (a guard). Default {@linkcode MAX_CALL_KEYS}. */
  maxKeys?: number;
  /** Keys in the first call, before anything is measured. Default 4. */
  coldStartKeys?: number;
  /** The share of the budget a call is sized to. Default {@linkcode TARGET_SHARE}. */
  targetShare?: number;
  /**
   * Weight of a measurement above the estimate (a slower call). Default: the usual weight. Larger
   * where a call that ran slow must not be repeated (the next one follows it at once).
   */
  slowerAlpha?: number;
  /** Redis time of a call besides its keys, taken off the budget before keys share it. Default 0. */
  perCallMicros?: number;
}

/** Weight of a new measurement in the moving average. */
const ALPHA = 0.2;

/**
 * A measurement counts as at most this many times the current estimate (and at least its
 * inverse). One 50k-field job must not make the next hundred calls carry one key each; a workload
 * that really became slower still moves the estimate by this factor per call.
 */
const OUTLIER_FACTOR = 4;

/** One measured call. */
export interface CallTiming {
  /** Keys the call carried. */
  keys: number;
  /** Redis time of the call in microseconds (see call_clock.ts). */
  micros: number;
}

/** Learns the cost per key (EWMA) and sizes the next call. */
export class CallSizer {
  /** The budget a call is sized to: `--max-call-ms` × the target share. */
  readonly #budgetMicros: number;
  readonly #maxKeys: number;
  readonly #coldStartKeys: number;
  readonly #slowerAlpha: number;
  readonly #perCallMicros: number;
  #perKeyMicros: number | undefined;

  /** @throws {RangeError} when `maxCallMs` is not positive or `maxKeys` is below 1. */
  constructor(options: CallSizerOptions = {}) {
    const maxCallMs = options.maxCallMs ?? 0.25;
    if (!(maxCallMs > 0)) throw new RangeError(`maxCallMs must be > 0, got ${maxCallMs}`);
    this.#maxKeys = options.maxKeys ?? MAX_CALL_KEYS;
    if (!(this.#maxKeys >= 1)) throw new RangeError(`maxKeys must be >= 1, got ${this.#maxKeys}`);
    const share = options.targetShare ?? TARGET_SHARE;
    if (!(share > 0 && share <= 1)) {
      throw new RangeError(`targetShare must be in (0, 1], got ${share}`);
    }
    this.#budgetMicros = maxCallMs * 1000 * share;
    this.#coldStartKeys = Math.min(options.coldStartKeys ?? 4, this.#maxKeys);
    this.#slowerAlpha = options.slowerAlpha ?? ALPHA;
    this.#perCallMicros = options.perCallMicros ?? 0;
  }

  /** The learnt cost of one key in microseconds; undefined before the first measurement. */
  get perKeyMicros(): number | undefined {
    return this.#perKeyMicros;
  }

  /**
   * How many keys the next call may carry: at least 1 (one key that alone exceeds the budget
   * still has to be copied), at most the guard.
   */
  nextCount(): number {
    if (this.#perKeyMicros === undefined) return this.#coldStartKeys;
    const fits = Math.floor(
      (this.#budgetMicros - this.#perCallMicros) / Math.max(this.#perKeyMicros, 0.01),
    );
    return Math.max(1, Math.min(this.#maxKeys, fits));
  }

  /** Learns from one call. Calls with no keys or a nonsense time teach nothing. */
  record(timing: CallTiming): void {
    if (!(timing.keys > 0) || !(timing.micros >= 0) || !Number.isFinite(timing.micros)) return;
    const sample = timing.micros / timing.keys;
    const current = this.#perKeyMicros;
    if (current === undefined) {
      this.#perKeyMicros = sample;
      return;
    }
    const clipped = Math.min(Math.max(sample, current / OUTLIER_FACTOR), current * OUTLIER_FACTOR);
    const weight = clipped > current ? this.#slowerAlpha : ALPHA;
    this.#perKeyMicros = current + weight * (clipped - current);
  }
}
