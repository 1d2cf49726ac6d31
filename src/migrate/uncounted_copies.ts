/**
 * Copies this run made that no batch has counted yet. A batch is counted when every one of its
 * calls has replied; when one call fails as a whole (BUSY, a lost connection, a demoted primary)
 * the batch is abandoned and, once Redis is back, read again from the checkpoint. The calls of
 * that batch that did reply have copied their keys already, so the re-read finds those new keys
 * and would count them `skipped_exists`, although this run created them. Their outcomes are kept
 * here when the batch is abandoned, and a re-read's `skipped_exists` for such a key is counted as
 * the copy it was (`migrated`, or `repaired`).
 *
 * Only failure paths write here; a run without failures pays one size check per batch. A call
 * whose reply never arrived (a lost connection) is known only to the strategy: where it keeps a
 * record of each call (migrate/in_server.ts), the engine reads what such calls copied once Redis
 * answers again and remembers it here too.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import type { StrategyResult } from "./strategy.ts";
import type { Outcome } from "../outcome.ts";

/** Outcomes that mean "this run wrote the new key". */
const COPIED: readonly Outcome[] = ["migrated", "repaired"];

/** The copies of abandoned batches, by old key, until a re-read counts them. */
export class UncountedCopies {
  readonly #byKey = new Map<string, Outcome>();

  /** Number of copies waiting to be counted. */
  get size(): number {
    return this.#byKey.size;
  }

  /** Keeps the copies among `results` (of `keys`, in order) of a call whose batch was abandoned. */
  remember(keys: readonly Buffer[], results: readonly StrategyResult[]): void {
    results.forEach((result, i) => {
      if (COPIED.includes(result.outcome)) this.#byKey.set(id(keys[i]!), result.outcome);
    });
  }

  /**
   * The results of a batch about to be counted, with each `skipped_exists` of a remembered key
   * turned into the copy it was. Every key of the batch leaves the memory (it is counted now)
   * but one that failed: its retry may still find the copy.
   */
  settle(keys: readonly Buffer[], results: StrategyResult[]): StrategyResult[] {
    if (this.#byKey.size === 0) return results;
    return results.map((result, i) => {
      const key = id(keys[i]!);
      const copied = this.#byKey.get(key);
      if (copied === undefined || result.outcome === "errors") return result;
      this.#byKey.delete(key);
      return result.outcome === "skipped_exists" ? { ...result, outcome: copied } : result;
    });
  }
}

/** A map key for the key's exact bytes. */
function id(key: Buffer): string {
  return key.toString("latin1");
}
