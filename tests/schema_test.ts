import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { SafetyRefusal } from "../src/errors.ts";
import { estimateTotal, scanFraction } from "../src/run/estimate.ts";
import { InServerCopy } from "../src/migrate/in_server.ts";
import { redisVersion } from "../src/redis/availability.ts";
import { KeySchema } from "../src/schema.ts";
import { jobIdOf, newKeyFor, oldKeyFor, parseNewKey } from "./support/keys.ts";

Deno.test("key names are built and parsed byte-exact", () => {
  const id = Buffer.from([0x6a, 0xff, 0x00, 0x3a, 0x80]);
  const old = oldKeyFor(id);
  assert.deepEqual(jobIdOf(old), id);
  assert.deepEqual(jobIdOf(new Uint8Array(old)), id, "a plain Uint8Array too");
  assert.equal(jobIdOf(Buffer.from("ai:jobx:1")), undefined);
  assert.equal(jobIdOf(Buffer.from("ai:job:x:1")), undefined);
  assert.deepEqual(jobIdOf(Buffer.from("ai:jobs:")), Buffer.alloc(0));
  const key = newKeyFor("ws-1", id);
  assert.deepEqual(key, Buffer.concat([Buffer.from("ai:job:ws-1:"), id]));
  assert.deepEqual(parseNewKey(key), { workspace: "ws-1", jobId: id });
  assert.equal(parseNewKey(Buffer.from("ai:jobs:1")), undefined);
});

Deno.test("the default workspace rule", () => {
  const rule = new KeySchema();
  assert.equal(rule.isDefaultRule, true);
  assert.equal(rule.checkWorkspace("ws-1_A"), "ws-1_A");
  assert.equal(rule.checkWorkspace("a".repeat(64)), "a".repeat(64));
  for (const bad of ["", "-ws", "_ws", "a".repeat(65), "ws 1", "ws:1", "wś", null, undefined]) {
    assert.equal(rule.checkWorkspace(bad), undefined, String(bad));
  }
  assert.equal(rule.checkWorkspace(new Uint8Array([0x77, 0xff])), undefined, "not UTF-8");
  assert.equal(rule.checkWorkspace(Buffer.from("ws9")), "ws9");
});

Deno.test("a custom workspace rule, never allowing ':'", () => {
  const rule = new KeySchema({ workspacePattern: "^.+$" });
  assert.equal(rule.isDefaultRule, false);
  assert.equal(rule.checkWorkspace("any thing"), "any thing");
  assert.equal(rule.checkWorkspace("a:b"), undefined);
});

Deno.test("scanFraction reads SCAN's reverse-binary cursor", () => {
  assert.equal(scanFraction("0"), 0);
  // For a 8-bucket table the order is 0,4,2,6,1,5,3,7: cursor 4 = 1/8 done, 6 = 3/8, 7 = 7/8.
  assert.equal(scanFraction("4"), 1 / 8);
  assert.equal(scanFraction("6"), 3 / 8);
  assert.equal(scanFraction("7"), 7 / 8);
});

Deno.test("estimateTotal refines the initial guess", () => {
  assert.equal(
    estimateTotal({ initial: 500, seen: 5, startFraction: 0, fraction: 0.01, done: false }),
    500,
  );
  assert.equal(
    estimateTotal({ initial: 500, seen: 250, startFraction: 0, fraction: 0.25, done: false }),
    1000,
  );
  assert.equal(
    estimateTotal({ initial: 500, seen: 50, startFraction: 0.5, fraction: 0.75, done: false }),
    100,
  );
  assert.equal(
    estimateTotal({ initial: 500, seen: 42, startFraction: 0, fraction: 1, done: true }),
    42,
  );
});

Deno.test("a Redis without COPY (before 6.2) is refused", async () => {
  // An old server cannot be started here (only 7.0 is installed): a stand-in answers INFO.
  assert.deepEqual(redisVersion("# Server\r\nredis_version:6.0.16\r\n"), [6, 0]);
  assert.deepEqual(redisVersion("redis_version:7.2.4\r\n"), [7, 2]);
  const old = { info: () => Promise.resolve("redis_version:6.0.16\r\n") };
  const strategy = new InServerCopy(old as never, new KeySchema());
  await assert.rejects(() => strategy.init(), (error: unknown) => {
    assert.ok(error instanceof SafetyRefusal);
    assert.match(
      error.message,
      /Redis 6\.0 has no COPY command; backfill needs Redis 6\.2 or newer/,
    );
    return true;
  });
});
