/**
 * The Redis Cluster hash slot of a key (CRC16/XMODEM of the key or its hash tag, mod 16384),
 * computed here: grouping a sub-batch's keys by node must not cost a round trip per key.
 *
 * @module
 */

/** Number of hash slots in a Redis Cluster. */
export const SLOTS = 16384;

const TABLE = (() => {
  const table = new Uint16Array(256);
  for (let byte = 0; byte < 256; byte++) {
    let crc = byte << 8;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1;
    table[byte] = crc & 0xffff;
  }
  return table;
})();

function crc16(bytes: Uint8Array): number {
  let crc = 0;
  for (const byte of bytes) crc = ((crc << 8) ^ TABLE[((crc >> 8) ^ byte) & 0xff]!) & 0xffff;
  return crc;
}

/**
 * The slot of `key`; a non-empty hash tag (between the first `{` and the next `}`) alone is hashed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { keySlot } from "./slot.ts";
 * assert.equal(keySlot(new TextEncoder().encode("foo")), 12182);
 * ```
 */
export function keySlot(key: Uint8Array): number {
  const open = key.indexOf(0x7b);
  if (open >= 0) {
    const close = key.indexOf(0x7d, open + 1);
    if (close > open + 1) return crc16(key.subarray(open + 1, close)) % SLOTS;
  }
  return crc16(key) % SLOTS;
}

let tags: string[] | undefined;

/**
 * A short hash tag whose slot is `slot`, for the keys the run keeps per slot (fences, copy
 * intents): each lives on the master that serves its slot and moves with it in a reshard.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { keySlot, slotTag } from "./slot.ts";
 * assert.equal(keySlot(new TextEncoder().encode(slotTag(42))), 42);
 * ```
 */
export function slotTag(slot: number): string {
  if (!Number.isInteger(slot) || slot < 0 || slot >= SLOTS) {
    throw new RangeError(`slot must be an integer in [0, ${SLOTS}), got ${slot}`);
  }
  tags ??= (() => {
    const table = new Array<string>(SLOTS);
    const bytes = new Uint8Array(8);
    for (let i = 0, found = 0; found < SLOTS; i++) {
      const tag = i.toString(36);
      for (let j = 0; j < tag.length; j++) bytes[j] = tag.charCodeAt(j);
      const s = crc16(bytes.subarray(0, tag.length)) % SLOTS;
      if (table[s] === undefined) {
        table[s] = tag;
        found++;
      }
    }
    return table;
  })();
  return tags[slot]!;
}

/**
 * The name of the key `base` keeps for `slot`: `base:{tag}`, or `{tag}:base` when `base` holds a
 * hash tag of its own (Redis hashes only the first `{…}`), so the key is always in `slot`.
 */
export function slotKey(base: string, slot: number): string {
  const tag = slotTag(slot);
  const named = `${base}:{${tag}}`;
  return keySlot(new TextEncoder().encode(named)) === slot ? named : `{${tag}}:${base}`;
}
