/**
 * The Redis Cluster hash slot of a key (CRC16/XMODEM of the key, or of its hash tag, mod 16384),
 * computed here rather than asked from Redis: the cluster copy and `verify --full` group a
 * sub-batch's keys by the node that serves them, and a round trip per key is what grouping avoids.
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
 * The slot of `key`: only the part between the first `{` and the next `}` is hashed when that part
 * is non-empty (a hash tag), as Redis does.
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
