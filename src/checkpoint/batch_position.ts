/**
 * A position inside one SCAN batch, so that a run stopped part-way through a batch (`--max-keys`,
 * a signal) resumes after the last key it processed instead of processing the same first keys
 * again. The checkpoint keeps the cursor the batch was read from, the batch's `next` cursor and
 * the last processed key; keys are processed in byte order.
 *
 * Why skipping is safe: SCAN walks the hash space in reverse-binary order, so one call from `c`
 * answering `next` returns every key whose hash lies in [c, next) of that order, whatever the table
 * size. When a re-read's `next` is not past the stored one, its range lies inside the first
 * read's: every key of it up to the stored key that existed at the first read was processed then.
 * (A key created since may be skipped; SCAN promises nothing about those, and the application
 * dual-writes every new job.) When the re-read's `next` is past the stored one, the range grew
 * and may hold unprocessed keys below the stored key: nothing is skipped (copies are idempotent).
 *
 * @module
 */
import { Buffer } from "node:buffer";

/** Where processing stopped inside the batch read from the checkpoint's cursor. */
export interface BatchPosition {
  /** The `next` cursor the batch answered when it was read. */
  next: string;
  /** The last old key processed; every key of the batch up to it is done. */
  after: Buffer;
  /** The SCAN COUNT the batch was read with (COUNTs change): the re-read asks for the same. */
  count?: number;
}

/** A batch's keys in the order they are processed: by bytes (stable across re-reads). */
export function inProcessingOrder(keys: readonly Buffer[]): Buffer[] {
  return [...keys].sort(Buffer.compare);
}

/** The keys (in processing order) of a re-read batch still to process: see the module comment. */
export function keysAfter(
  keys: readonly Buffer[],
  next: string,
  position: BatchPosition | undefined,
): Buffer[] {
  if (position === undefined || scanOrder(next) > scanOrder(position.next)) return [...keys];
  return keys.filter((key) => Buffer.compare(key, position.after) > 0);
}

/**
 * True when a batch that answered `next` ends strictly before the position's range does: the next
 * batch still lies inside that range, so the position applies to it too. A resumed run whose first
 * SCAN covers less than the stored batch thus still skips what the earlier run did.
 */
export function withinRange(next: string, position: BatchPosition): boolean {
  return scanOrder(next) < scanOrder(position.next);
}

/** Where a cursor lies in SCAN's walk: its 64 bits reversed; "0" is the end of the walk. */
export function scanOrder(cursor: string): bigint {
  let value = BigInt(cursor);
  if (value === 0n) return 1n << 64n;
  let reversed = 0n;
  for (let bit = 0; bit < 64; bit++) {
    reversed = (reversed << 1n) | (value & 1n);
    value >>= 1n;
  }
  return reversed;
}

/**
 * The position to store for a batch that was not finished: after the last processed key, or the
 * position it was resumed from when this run processed none of it.
 */
export function positionAfter(
  processed: readonly Buffer[],
  batch: { next: string; count?: number },
  resumedFrom: BatchPosition | undefined,
): BatchPosition | undefined {
  const last = processed.at(-1);
  if (last === undefined) return resumedFrom;
  return { next: batch.next, after: last, count: batch.count };
}

/** The stored form: `<next>[/<count>] <key bytes>` (the first space splits). */
export function encodePosition(position: BatchPosition): Buffer {
  const count = position.count === undefined ? "" : `/${position.count}`;
  return Buffer.concat([Buffer.from(`${position.next}${count} `), position.after]);
}

/** Reads the stored form back; `undefined` when absent or malformed (then nothing is skipped). */
export function decodePosition(raw: Buffer | null | undefined): BatchPosition | undefined {
  if (raw === null || raw === undefined) return undefined;
  const space = raw.indexOf(0x20);
  const head = raw.subarray(0, Math.max(space, 0)).toString("latin1").match(/^(\d+)(?:\/(\d+))?$/);
  if (space <= 0 || !head) return undefined;
  const after = Buffer.from(raw.subarray(space + 1));
  return head[2] === undefined
    ? { next: head[1]!, after }
    : { next: head[1]!, after, count: Number(head[2]) };
}
