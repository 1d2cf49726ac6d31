/**
 * One node's pass of `verify --full` as checkpointable chunks: its SCAN cut into chunks, one chunk
 * scanned ahead while the caller checks the current one (so Redis never waits for the scan between
 * chunks), keys that SCAN returns twice dropped; each chunk checked in sub-batches, its
 * differences rechecked, and its final verdicts counted into counts and report findings (one
 * finding per counted difference, so the report's lines always match the counts).
 *
 * Why keys come twice: SCAN guarantees every key present for the whole scan at least once, not
 * once. When the main hash table shrinks mid-scan (mass deletes), the cursor's bucket in the small
 * table holds keys of several buckets of the big one, some already returned. Those buckets are
 * consecutive in SCAN's reverse-binary order, so a repeated key was returned shortly before: a
 * window of the current and the previous chunk (≤ 2 × chunk keys, as strings) catches it. What
 * remains: a repeat from further back than the previous chunk, or across a kill and resume (the
 * window is not stored), would still be counted twice.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import type { Redis } from "../../redis/ioredis.ts";
import { scanBatches, type TimedScan } from "../../control/scanner.ts";

/** Keys seen in the current and the previous chunk. */
export class RecentKeys {
  #previous = new Set<string>();
  #current = new Set<string>();

  /** True (and remembered) when `key` was not seen in the window; false for a repeat. */
  admit(key: Buffer): boolean {
    const name = key.toString("latin1");
    if (this.#current.has(name) || this.#previous.has(name)) return false;
    this.#current.add(name);
    return true;
  }

  /** Starts a new chunk: the current one becomes the previous one, the oldest is forgotten. */
  rotate(): void {
    this.#previous = this.#current;
    this.#current = new Set();
  }
}

/** One chunk: its keys (repeats dropped), the cursor after it, and how many repeats were dropped. */
export interface ScanChunk {
  keys: Buffer[];
  next: string;
  duplicates: number;
}

/** Options of {@linkcode scanChunks}. */
export interface ScanChunkOptions {
  match: string;
  count: number;
  cursor: string;
  /** Keys per chunk (at least; a chunk ends on a SCAN reply). */
  chunkKeys: () => number;
  /** SCANs sized to a time bound, in the master's call window (control/scanner.ts). */
  timed?: TimedScan;
}

/** Yields `node`'s keys matching `match` in chunks, from `cursor` to the end of the scan. */
export async function* scanChunks(
  node: Redis,
  options: ScanChunkOptions,
): AsyncGenerator<ScanChunk> {
  const recent = new RecentKeys();
  let chunk: ScanChunk = { keys: [], next: options.cursor, duplicates: 0 };
  for await (
    const batch of scanBatches(node, {
      match: options.match,
      count: options.count,
      cursor: options.cursor,
      timed: options.timed,
    })
  ) {
    for (const key of batch.keys) {
      if (recent.admit(key)) chunk.keys.push(key);
      else chunk.duplicates++;
    }
    chunk.next = batch.next;
    if (chunk.keys.length < options.chunkKeys() && batch.next !== "0") continue;
    yield chunk;
    recent.rotate();
    chunk = { keys: [], next: batch.next, duplicates: 0 };
  }
}

/**
 * Iterates `source` one item ahead: the next item is being produced while the caller works on the
 * current one.
 */
export async function* readAhead<T>(source: AsyncGenerator<T>): AsyncGenerator<T> {
  let pending = source.next();
  try {
    for (;;) {
      const item = await pending;
      if (item.done) return;
      pending = source.next();
      // If the caller stops (or fails) first, this read-ahead's rejection must not go unhandled.
      pending.catch(() => {});
      yield item.value;
    }
  } finally {
    // Let the read-ahead settle before closing the source (an async generator runs one step at a
    // time), so its SCAN does not outlive the caller.
    await pending.catch(() => {});
    await source.return(undefined);
  }
}
