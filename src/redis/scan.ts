/**
 * SCAN over one node as an async generator of batches. The next SCAN is already on the wire while
 * the caller processes the current batch, so the scan never waits for processing.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import type { Redis } from "./ioredis.ts";

/** One SCAN reply. */
export interface ScanBatch {
  /** The cursor this batch was read from (resume here to re-read it). */
  cursor: string;
  /** The cursor after this batch ("0" when the scan is complete). */
  next: string;
  /** Matching key names, as bytes. */
  keys: Buffer[];
  /** The COUNT asked for, when SCAN's COUNT was sized by time (a re-read asks for it again). */
  count?: number;
}

/** One SCAN page: the next cursor and the matching keys. */
export type ScanPage = [next: Buffer | string, keys: Buffer[]];

/** A SCAN whose COUNT is chosen per call (control/timed_scan.ts sizes it by Redis time). */
export interface SizedScanner {
  /** The COUNT the next SCAN would ask for. */
  nextCount(): number;
  /** One SCAN from `cursor` with `match`, asking for `count`. */
  scan(cursor: string, match: string, count?: number): Promise<ScanPage>;
}

/** Options for {@linkcode scanBatches}. */
export interface ScanOptions {
  match: string;
  /** SCAN COUNT hint. */
  count: number;
  /** Start cursor (default "0"). */
  cursor?: string;
  /** SCANs through this instead, each COUNT sized to the time budget (`count` is then unused). */
  timed?: SizedScanner;
  /** With `timed`: the COUNT of the first SCAN (re-reading a batch as it was read). */
  firstCount?: number;
}

/** Yields SCAN batches from `options.cursor` until the cursor returns to "0". */
export async function* scanBatches(node: Redis, options: ScanOptions): AsyncGenerator<ScanBatch> {
  const { timed } = options;
  const scan = (cursor: string, count?: number): Promise<ScanBatch> => {
    if (!timed) {
      return node.scanBuffer(cursor, "MATCH", options.match, "COUNT", options.count)
        .then(([next, keys]) => ({ cursor, next: next.toString(), keys }));
    }
    const asked = count ?? timed.nextCount();
    return timed.scan(cursor, options.match, asked)
      .then(([next, keys]) => ({ cursor, next: next.toString(), keys, count: asked }));
  };
  let pending = scan(options.cursor ?? "0", options.firstCount);
  for (;;) {
    const batch = await pending;
    if (batch.next !== "0") {
      pending = scan(batch.next);
      // If the consumer stops early this prefetch is dropped; keep its rejection from going unhandled.
      pending.catch(() => {});
    }
    yield batch;
    if (batch.next === "0") return;
  }
}
