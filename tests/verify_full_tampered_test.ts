/**
 * `verify --full` on tampered data (each kind of difference, 9 kinds of invalid old keys, ids that
 * are not UTF-8): exact counts and report lines, the same however its calls are bounded or timed,
 * and a store where nothing is migrated.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type { Redis } from "../src/redis/ioredis.ts";
import { newKeyFor, oldKeyFor } from "./support/keys.ts";
import { runJson } from "./support/cli.ts";
import { startRedis } from "./support/redis_server.ts";

/** Old and new keys of jobs `from`..`to` - 1, equal field for field (a finished backfill). */
const SEED_SCRIPT = `
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) - 1 do
  local ws = "ws-" .. (i % 3)
  redis.call("HSET", "ai:jobs:job-" .. i, "workspace_id", ws, "status", "done", "n", i)
  redis.call("HSET", "ai:job:" .. ws .. ":job-" .. i, "workspace_id", ws, "status", "done", "n", i)
end
return 1`;

async function seedMigrated(client: Redis, from: number, to: number): Promise<void> {
  await client.eval(SEED_SCRIPT, 0, from, to);
}

/** Migrated jobs, then one key of each kind of difference and of each kind of invalid old key. */
async function seedTampered(client: Redis, url: string, count: number): Promise<void> {
  await seedMigrated(client, 0, count);
  // A valid id of the longest length (64), migrated.
  const long = "w".repeat(64);
  await client.hset(oldKeyFor("long"), "workspace_id", long, "status", "done");
  await client.hset(newKeyFor(long, "long"), "workspace_id", long, "status", "done");
  // Ids that are not UTF-8 and would all read as the same text if decoded as UTF-8: 8 keys.
  for (let b = 0x80; b < 0x88; b++) {
    const id = Buffer.from([0x6a, 0xff, b]);
    await client.hset(oldKeyFor(id), "workspace_id", "ws-0", "status", "done");
    await client.hset(newKeyFor("ws-0", id), "workspace_id", "ws-0", "status", "done");
  }
  const key = (i: number) => newKeyFor(`ws-${i % 3}`, `job-${i}`);
  await client.del(key(1)); // missing
  await client.hdel(key(2), "n"); // field_missing
  await client.hset(key(4), "status", "changed"); // field_differs
  await client.hset(key(7), "extra", "x"); // field_differs (a field only the new key has)
  await client.expire(key(3), 99_999); // ttl
  await client.expire(oldKeyFor("job-8"), 99_999); // ttl (only the old key expires)
  await client.del(key(5));
  await client.set(key(5), "string"); // type
  const invalid: [string, string | Buffer | undefined][] = [
    ["bad-colon", "bad:ws"],
    ["bad-none", undefined],
    ["bad-long", "w".repeat(65)],
    ["bad-utf8", "é"],
    ["bad-latin1", Buffer.from([0x77, 0xff])],
    ["bad-dash", "-ws"],
    ["bad-newline", "ws\n"],
    ["", "ws-0"], // the old key `ai:jobs:` has no job id
  ];
  for (const [id, ws] of invalid) {
    if (ws === undefined) await client.hset(oldKeyFor(id), "status", "x");
    else await client.hset(oldKeyFor(id), "workspace_id", ws, "status", "x");
    // A "copy" under the invalid id: only the rule, not a missing new key, makes it invalid.
    if (typeof ws === "string" && id !== "") {
      await client.hset(newKeyFor(ws, id), "workspace_id", ws, "status", "x");
    }
  }
  await client.set(oldKeyFor("bad-string"), "x"); // not a hash
  assert.ok(url.length > 0);
}

const COUNT_FIELDS = [
  "checked",
  "matched",
  "missing",
  "field_missing",
  "field_differs",
  "ttl",
  "type",
  "invalid",
  "gone",
  "filtered",
  "transient",
  "scan_duplicates",
  "parity",
];

Deno.test("verify --full counts tampered data exactly, however its calls are bounded or timed", async () => {
  const server = await startRedis();
  const client = server.client();
  const reports = await Promise.all([0, 1, 2, 3].map(() => Deno.makeTempFile()));
  try {
    await seedTampered(client, server.url, 3000);
    // The default rule; the same rule written another way; 20 µs calls (one key a call, every
    // call stopped by its own clock); calls timed on the client (as where time stands still).
    const variants = [
      [],
      ["--workspace-pattern", "^[A-Za-z0-9](?:[A-Za-z0-9_-]){0,63}$"],
      ["--max-call-ms", "0.02"],
      ["--call-clock", "client"],
    ];
    const runs = [];
    for (const [i, extra] of variants.entries()) {
      const args = ["verify", "--full", "--report", reports[i]!, "--redis-url", server.url];
      const result = await runJson([...args, "--recheck-delay", "20", ...extra]);
      assert.equal(result.code, 1, result.stderr);
      runs.push(result);
    }
    assert.match(runs[3]!.stderr, /call_clock.*--call-clock client/);
    assert.doesNotMatch(runs[0]!.stderr, /call_clock/);
    const [plain, ...others] = runs.map((result) =>
      Object.fromEntries(COUNT_FIELDS.map((name) => [name, result.summary[name]]))
    );
    for (const other of others) assert.deepEqual(other, plain);
    assert.deepEqual(plain, {
      checked: 3009 + 9,
      matched: 3009 - 7,
      missing: 1,
      field_missing: 1,
      field_differs: 2,
      ttl: 2,
      type: 1,
      invalid: 9,
      gone: 0,
      filtered: 0,
      transient: 0,
      scan_duplicates: 0,
      parity: (3009 - 7) / 3009,
    });
    // The starved run stopped every call early (one key a call): more calls than keys checked.
    const calls = runs.map((result) =>
      Number((result.summary.redis_calls as { calls: number }).calls)
    );
    assert.ok(calls[2]! >= 3009 + 9 && calls[2]! > 2 * calls[0]!, `calls: ${calls}`);
    const lines = async (path: string) => (await Deno.readTextFile(path)).trim().split("\n").sort();
    const first = await lines(reports[0]!);
    assert.equal(first.length, 16, "one line per difference and per invalid key");
    for (const path of reports.slice(1)) assert.deepEqual(await lines(path), first);
  } finally {
    client.disconnect();
    await server.stop();
    for (const path of reports) await Deno.remove(path);
  }
});

Deno.test("verify --full: nothing migrated, every key missing, counted once", async () => {
  const server = await startRedis();
  const client = server.client();
  try {
    await seedMigrated(client, 0, 3000);
    for (let i = 0; i < 3000; i++) await client.del(newKeyFor(`ws-${i % 3}`, `job-${i}`));
    const args = ["verify", "--full", "--redis-url", server.url, "--recheck-delay", "5"];
    const result = await runJson(args);
    assert.equal(result.code, 1, result.stderr);
    const summary = Object.fromEntries(COUNT_FIELDS.map((name) => [name, result.summary[name]]));
    assert.deepEqual(summary, {
      checked: 3000,
      matched: 0,
      missing: 3000,
      field_missing: 0,
      field_differs: 0,
      ttl: 0,
      type: 0,
      invalid: 0,
      gone: 0,
      filtered: 0,
      transient: 0,
      scan_duplicates: 0,
      parity: 0,
    });
  } finally {
    client.disconnect();
    await server.stop();
  }
});
