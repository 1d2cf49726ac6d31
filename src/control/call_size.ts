/**
 * Time-bounded script calls, as a pure decision: learn what one key costs Redis from the calls'
 * own timing, and size the next call to hold Redis no longer than `--max-call-ms` (a fixed count
 * would block Redis for however long it takes on the hardware at hand). The one sizer of the run:
 * the copy calls' keys (migrate/in_server.ts) and the SCANs' COUNT (control/scanner.ts).
 *
 * Calls are sized to {@linkcode TARGET_SHARE} of the budget, as the learnt cost is a mean and one
 * call's keys cost more or less (docs/benchmarks.md, "The call share").
 *
 * @module
 */

const TARGET_SHARE = 0.7;

/** The most keys one script call carries, whatever its budget fits: a guard only. */
export const MAX_CALL_KEYS = 100;

/**
 * The share for calls that stop early by their own clock (`verify`'s script): one that runs slower
 * than predicted still ends within the budget, so they are sized closer to it.
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
  /** Weight of a measurement above the estimate (a slower call). Default: the usual weight. */
  slowerAlpha?: number;
  /** Redis time of a call besides its keys, taken off the budget before keys share it. Default 0. */
  perCallMicros?: number;
}

/** Weight of a new measurement in the moving average. */
const ALPHA = 0.2;

/**
 * A measurement counts as at most this many times the estimate (and at least its inverse): one
 * 50k-field job must not make the next hundred calls carry one key each.
 */
const OUTLIER_FACTOR = 4;

/** One measured call: its keys and Redis µs (call_clock.ts). */
export interface CallTiming {
  keys: number;
  micros: number;
}

/** Learns the cost per key (EWMA) and sizes the next call. */
export class CallSizer {
  /** `--max-call-ms` × the target share. */
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

  /** Keys for the next call: at least 1 (a key over the budget still has to go), at most the guard. */
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
