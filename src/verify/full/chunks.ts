/**
 * One node's pass of `verify --full` as checkpointable chunks of its SCAN, one chunk scanned
 * ahead while the caller checks the current one, keys that SCAN returns twice dropped.
 *
 * Why keys come twice: when the hash table shrinks mid-scan, the cursor's bucket holds keys of
 * several buckets of the big table, some already returned. Those are consecutive in SCAN's order,
 * so a window of the current and the previous chunk catches a repeat; one from further back, or
 * across a kill and resume, would still be counted twice.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import { scanBatches, type ScanOptions, type TimedScan } from "../../control/scanner.ts";

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

  /** Starts a new chunk: the oldest is forgotten. */
  rotate(): void {
    this.#previous = this.#current;
    this.#current = new Set();
  }
}

/** One chunk: its keys, the cursor after it, and how many repeats were dropped. */
export interface ScanChunk {
  keys: Buffer[];
  next: string;
  duplicates: number;
}

export interface ScanChunkOptions extends ScanOptions {
  cursor: string;
  /** Keys per chunk (at least; a chunk ends on a SCAN reply). */
  chunkKeys: number;
}

/** Yields the scanner's keys matching `match` in chunks, from `cursor` to the end of the scan. */
export async function* scanChunks(
  scanner: TimedScan,
  options: ScanChunkOptions,
): AsyncGenerator<ScanChunk> {
  const recent = new RecentKeys();
  let chunk: ScanChunk = { keys: [], next: options.cursor, duplicates: 0 };
  for await (const batch of scanBatches(scanner, options)) {
    for (const key of batch.keys) {
      if (recent.admit(key)) chunk.keys.push(key);
      else chunk.duplicates++;
    }
    chunk.next = batch.next;
    if (chunk.keys.length < options.chunkKeys && batch.next !== "0") continue;
    yield chunk;
    recent.rotate();
    chunk = { keys: [], next: batch.next, duplicates: 0 };
  }
}

/** Iterates `source` one item ahead: the next is produced while the caller works. */
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
    // Let the read-ahead settle before closing the source, so its SCAN does not outlive us.
    await pending.catch(() => {});
    await source.return(undefined);
  }
}
