/**
 * `--max-keys`: how many old keys this run may still hand to processing, shared by every node.
 *
 * @module
 */
import type { Buffer } from "node:buffer";

/** The keys a run may still process (no limit without `--max-keys`). */
export class KeyQuota {
  readonly #max: number | undefined;
  #claimed = 0;

  constructor(max: number | undefined) {
    this.#max = max;
  }

  /** The part of `keys` this run may still process; `trimmed` when the quota cut it. */
  claim(keys: Buffer[]): { keys: Buffer[]; trimmed: boolean } {
    const left = (this.#max ?? Infinity) - this.#claimed;
    const trimmed = keys.length > left;
    const claimed = trimmed ? keys.slice(0, Math.max(left, 0)) : keys;
    this.#claimed += claimed.length;
    return { keys: claimed, trimmed };
  }

  /** True once `--max-keys` keys were handed out. */
  get used(): boolean {
    return this.#max !== undefined && this.#claimed >= this.#max;
  }
}
