/**
 * An error storm: the same lasting error on key after key (a permission revoked mid-run, a command
 * renamed away). Counting each key as an error and moving on would fail the whole keyspace one log
 * line at a time and move the checkpoint past every failed key; instead the run stops (exit 4)
 * with the checkpoint where it was.
 *
 * @module
 */
import { MAX_CALL_KEYS } from "../control/call_size.ts";
import { SafetyRefusal } from "../errors.ts";
import { TRANSIENT_ERRORS } from "../migrate/strategy.ts";
import type { StrategyResult } from "../migrate/strategy.ts";

/** Error codes that belong to one key's data (another job's content), never to the run. */
const PER_KEY_CODES: ReadonlySet<string> = new Set(["WRONGTYPE", "CHANGED"]);

/** The fewest keys failing in a row that stop a run: one odd error in a tiny `--batch` is none. */
const MIN_STORM = 20;

/** A storm stopped the run. Exit 4; the checkpoint is kept. */
export class ErrorStormError extends SafetyRefusal {
  constructor(message: string) {
    super(message);
    this.name = "ErrorStormError";
  }
}

/**
 * Watches results in key order. A streak is the keys that failed in a row with one code that is
 * neither transient nor about one key's data; a key copied or repaired ends it (keys that needed
 * no write neither end nor extend it).
 */
export class ErrorStorm {
  readonly #threshold: number;
  #code: string | undefined;
  #streak = 0;

  /** A storm is a batch's worth of keys (two full sub-batches when that is fewer). */
  constructor(batch: number) {
    this.#threshold = Math.max(MIN_STORM, Math.min(batch, 2 * MAX_CALL_KEYS));
  }

  /** A streak is open: the checkpoint must not move past it yet. */
  get holding(): boolean {
    return this.#streak > 0;
  }

  /**
   * Adds a batch's results; the error to stop with once the streak reaches the threshold (the
   * caller reports the batch first, then throws it).
   */
  observe(results: readonly StrategyResult[]): ErrorStormError | undefined {
    for (const result of results) {
      if (result.outcome === "migrated" || result.outcome === "repaired") {
        this.#streak = 0;
        this.#code = undefined;
      }
      if (result.outcome !== "errors") continue;
      const code = result.errorCode ?? "ERR";
      if (TRANSIENT_ERRORS.has(code) || PER_KEY_CODES.has(code)) continue;
      this.#streak = code === this.#code ? this.#streak + 1 : 1;
      this.#code = code;
    }
    if (this.#streak < this.#threshold) return undefined;
    return new ErrorStormError(
      `stopped: ${this.#streak} keys in a row failed with ${this.#code} (not a passing ` +
        `error); the checkpoint is kept before them. Fix the cause (a permission, a renamed ` +
        `command) and run again`,
    );
  }
}
