/**
 * An error storm: the same error, not a passing one, on key after key (a permission revoked
 * mid-run, a command renamed away). Counting each key as an error and moving on would fail the
 * whole keyspace one log line at a time and move the checkpoint past every failed key; instead the
 * run stops (exit 4) with the checkpoint where it was.
 *
 * @module
 */
import { MAX_CALL_KEYS } from "../control/call_size.ts";
import { SafetyRefusal } from "../errors.ts";
import { TRANSIENT_ERRORS } from "../migrate/strategy.ts";
import type { StrategyResult } from "../migrate/strategy.ts";

/** Error codes that belong to one key's data (another job's content), never to the run. */
const PER_KEY_CODES: ReadonlySet<string> = new Set(["WRONGTYPE", "CHANGED"]);

/** A storm stopped the run. Exit 4; the checkpoint is kept. */
export class ErrorStormError extends SafetyRefusal {
  constructor(message: string) {
    super(message);
    this.name = "ErrorStormError";
  }
}

/** The fewest keys failing in a row with one lasting error that stop a run. */
const MIN_STORM = 20;

/**
 * Keys failing in a row that make a storm: a batch's worth (two full sub-batches when that is
 * fewer), but never a handful of keys: one odd error in a tiny `--batch` is no storm.
 */
export function stormThreshold(batch: number): number {
  return Math.max(MIN_STORM, Math.min(batch, 2 * MAX_CALL_KEYS));
}

/**
 * Watches results in key order. A streak is the keys that failed in a row with one code that is
 * neither transient nor about one key's data; a key copied or repaired ends it (keys that needed
 * no write neither end nor extend it). {@linkcode observe} returns the error to stop with once the
 * streak reaches `threshold` keys (the caller reports the batch first, then throws it); {@linkcode holding} says a streak is open, so the checkpoint should not move
 * past it yet.
 */
export class ErrorStorm {
  readonly #threshold: number;
  #code: string | undefined;
  #streak = 0;

  constructor(options: { threshold: number }) {
    this.#threshold = Math.max(1, options.threshold);
  }

  /** True while a streak is open. */
  get holding(): boolean {
    return this.#streak > 0;
  }

  /** Adds a batch's results; the error to stop with when the streak reached the threshold. */
  observe(results: readonly StrategyResult[]): ErrorStormError | undefined {
    for (const result of results) {
      if (result.outcome === "migrated" || result.outcome === "repaired") this.#reset();
      if (result.outcome !== "errors") continue;
      const code = result.errorCode ?? "ERR";
      if (TRANSIENT_ERRORS.has(code) || PER_KEY_CODES.has(code)) continue;
      this.#streak = code === this.#code ? this.#streak + 1 : 1;
      this.#code = code;
    }
    if (this.#streak >= this.#threshold) {
      return new ErrorStormError(
        `stopped: ${this.#streak} keys in a row failed with ${this.#code} (not a passing ` +
          `error); the checkpoint is kept before them. Fix the cause (a permission, a renamed ` +
          `command) and run again`,
      );
    }
    return undefined;
  }

  #reset(): void {
    this.#streak = 0;
    this.#code = undefined;
  }
}
