/** The position inside a SCAN batch (pure decisions of checkpoint/batch_position.ts). */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  decodePosition,
  encodePosition,
  inProcessingOrder,
  keysAfter,
  positionAfter,
  scanOrder,
  withinRange,
} from "../src/checkpoint/batch_position.ts";

const keys = (...names: string[]) => names.map((n) => Buffer.from(n));

Deno.test("scanOrder: reversed bits, the walk's own order; 0 as next is the end", () => {
  // With a table of 8 buckets the walk goes 0, 4, 2, 6, 1, 5, 3, 7.
  const walk = ["4", "2", "6", "1", "5", "3", "7"].map(scanOrder);
  for (let i = 1; i < walk.length; i++) assert.ok(walk[i - 1]! < walk[i]!, `step ${i}`);
  assert.ok(scanOrder("0") > scanOrder("7"));
  assert.ok(scanOrder("18446744073709551615") < scanOrder("0"));
});

Deno.test("keysAfter skips processed keys only when the re-read's range is not larger", () => {
  const batch = inProcessingOrder(keys("ai:jobs:c", "ai:jobs:a", "ai:jobs:b", "ai:jobs:d"));
  assert.deepEqual(batch.map(String), ["ai:jobs:a", "ai:jobs:b", "ai:jobs:c", "ai:jobs:d"]);
  const position = { next: "6", after: Buffer.from("ai:jobs:b") };
  assert.deepEqual(keysAfter(batch, "6", position).map(String), ["ai:jobs:c", "ai:jobs:d"]);
  // Range shrank (next "2" comes before "6"): still safe to skip.
  assert.deepEqual(keysAfter(batch, "2", position).length, 2);
  // Range grew ("1" and the end come after "6"): nothing is skipped.
  assert.equal(keysAfter(batch, "1", position).length, 4);
  assert.equal(keysAfter(batch, "0", position).length, 4);
  assert.equal(keysAfter(batch, "6", undefined).length, 4);
});

Deno.test("a position holds for the batches inside its range, not past it", () => {
  const position = { next: "6", after: Buffer.from("k") };
  // "6" reversed is 0b011 << 61; "2" (0b01 << 62) comes before it, "1" and the end after.
  assert.equal(withinRange("2", position), true);
  assert.equal(withinRange("6", position), false);
  assert.equal(withinRange("1", position), false);
  assert.equal(withinRange("0", position), false);
});

Deno.test("positions round-trip byte-exact; nothing processed keeps the old one", () => {
  const binary = Buffer.from([0x61, 0x69, 0x20, 0xff, 0x00, 0x0a]);
  const position = positionAfter([Buffer.from("x"), binary], { next: "123" }, undefined)!;
  assert.deepEqual(decodePosition(encodePosition(position)), { next: "123", after: binary });
  // With the COUNT it was read with (sized by time), so the re-read covers the same range.
  const counted = positionAfter([binary], { next: "123", count: 170 }, undefined)!;
  assert.deepEqual(decodePosition(encodePosition(counted)), {
    next: "123",
    after: binary,
    count: 170,
  });
  assert.equal(decodePosition(Buffer.from("12/ k")), undefined);
  const old = { next: "9", after: Buffer.from("k") };
  assert.equal(positionAfter([], { next: "9" }, old), old);
  assert.equal(decodePosition(null), undefined);
  assert.equal(decodePosition(Buffer.from("garbage")), undefined);
});
