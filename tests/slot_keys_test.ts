/** Per-slot key names (fences, intents): each lands in the slot it is named for. */
import assert from "node:assert/strict";
import { intentKey } from "../src/migrate/cluster/intents.ts";
import { keySlot, slotKey, SLOTS, slotTag } from "../src/redis/slot.ts";
import { fenceKey, RunFence } from "../src/safety/lock.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

Deno.test("slotTag: a tag for every slot, hashing to it", () => {
  for (let slot = 0; slot < SLOTS; slot++) assert.equal(keySlot(bytes(slotTag(slot))), slot);
  assert.throws(() => slotTag(SLOTS), RangeError);
});

Deno.test("slotKey: named after its base, in its slot, also when the base has a hash tag", () => {
  assert.equal(slotKey("ai:backfill:fence", 7), `ai:backfill:fence:{${slotTag(7)}}`);
  const tagged = slotKey("{ai}:backfill:fence", 7);
  assert.equal(keySlot(bytes(tagged)), 7);
  assert.ok(tagged.endsWith("{ai}:backfill:fence"), tagged);
});

Deno.test("intent and fence keys live in the slot of the key they guard", () => {
  const newKey = bytes("ai:job:ws-a:job-42");
  assert.equal(keySlot(bytes(intentKey("ai:backfill", newKey))), keySlot(newKey));
  const fence = new RunFence("ai:backfill", [
    { key: "{ai:backfill}:lock:a", holder: { host: "h", pid: 1, started: "s", token: "t1" } },
    { key: "{ai:backfill}:lock:b", holder: { host: "h", pid: 1, started: "s", token: "t2" } },
  ]);
  const [key, n, ...pairs] = fence.argsFor(newKey);
  assert.equal(key, fenceKey("ai:backfill", keySlot(newKey)));
  assert.equal(keySlot(bytes(key!)), keySlot(newKey));
  assert.equal(n, "2");
  assert.deepEqual(pairs, ["{ai:backfill}:lock:a", "t1", "{ai:backfill}:lock:b", "t2"]);
});
