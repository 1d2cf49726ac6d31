/**
 * Copies this run made that no batch has counted yet. When a call fails as a whole (BUSY, a lost
 * connection, a demoted primary) its batch is abandoned and read again from the checkpoint; the
 * calls of that batch that did reply (or whose call record says they copied) made new keys the
 * re-read counts `skipped_exists`. Their outcomes are kept here, and the re-read counts each such
 * key as the copy it was. Only failure paths write here.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import type { StrategyResult } from "./strategy.ts";
import type { Outcome } from "../outcome.ts";

const COPIED: readonly Outcome[] = ["migrated", "repaired"];

/** The copies of abandoned batches, by old key, until a re-read counts them. */
export class UncountedCopies {
  readonly #byKey = new Map<string, Outcome>();

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
   * `results` with each `skipped_exists` of a remembered key turned into the copy it was. Every
   * key leaves the memory but one that failed: its retry may still find the copy.
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

function id(key: Buffer): string {
  return key.toString("latin1");
}
