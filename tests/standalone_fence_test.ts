/**
 * Fencing on a standalone server: the run lock lives on the server the copies go to, so every
 * copy call checks it, and every checkpoint and totals write is one script call that checks it
 * first. A runner whose lock was replaced (expired and taken by another runner) has its next copy
 * and its next checkpoint refused by Redis itself: exit 4, a "FENCED" line, nothing written after
 * the loss.
 */
import assert from "node:assert/strict";
import { CheckpointStore } from "../src/checkpoint/store.ts";
import { totalsField } from "../src/checkpoint/store.ts";
import { SafetyRefusal } from "../src/errors.ts";
import { spawnCli, waitFor } from "./support/cli.ts";
import { withRedis } from "./support/redis_server.ts";
import { makeJobs, seedOld } from "./support/seed.ts";
import { otherRunnersLock } from "./support/other_client.ts";

/**
 * What another runner does once the lock has expired: a new lock value with its own token, set in
 * one atomic call that also counts the new keys and reads the checkpoint and totals at that moment.
 */
const TAKE_OVER = `
redis.call("DEL", KEYS[1])
redis.call("SET", KEYS[1], ARGV[1], "PX", 60000)
return {#redis.call("KEYS", "ai:job:*"), redis.call("GET", KEYS[2]) or "",
  cjson.encode(redis.call("HGETALL", KEYS[3]))}`;

const MIGRATED = totalsField("migrated");

Deno.test("a runner whose lock was taken over: its next copy and checkpoint are refused (exit 4, nothing written after)", async () => {
  await withRedis(async (server, client) => {
    const jobs = makeJobs(3000);
    await seedOld(client, jobs);
    const run = spawnCli([
      "--execute",
      "--rps",
      "300",
      "--batch",
      "100",
      "--json",
      "--redis-url",
      server.url,
    ]);
    await waitFor(
      "copies and a checkpoint",
      async () =>
        (await client.exists("ai:backfill:totals")) === 1 &&
        Number(await client.hget("ai:backfill:totals", MIGRATED) ?? 0) > 0,
    );
    const [newKeys, cursor, totals] = await client.eval(
      TAKE_OVER,
      3,
      "ai:backfill:lock",
      "ai:backfill:cursor",
      "ai:backfill:totals",
      otherRunnersLock(),
    ) as [number, string, string];
    assert.ok(newKeys > 0 && newKeys < jobs.length, `taken over mid-run (${newKeys} new keys)`);
    const result = await run.done;
    assert.equal(result.code, 4, result.stderr);
    assert.match(result.stderr, /FENCED the run lock ai:backfill:lock is no longer held/);
    const after = (await client.keys("ai:job:*")).length;
    assert.equal(after, newKeys, "not one new key after the takeover");
    assert.equal(await client.get("ai:backfill:cursor"), cursor, "the checkpoint did not move");
    const totalsAfter = await client.hgetall("ai:backfill:totals");
    assert.deepEqual(totalsAfter, pairs(JSON.parse(totals)), "the totals did not move");
    // The other runner's lock is untouched by the refused run's release.
    assert.match(await client.get("ai:backfill:lock") ?? "", /runner-2/);
  });
});

Deno.test("a runner whose lock was taken over while it only saves checkpoints: the next save is refused (exit 4)", async () => {
  await withRedis(async (server, client) => {
    // No old key at all: the run only scans, and stores its cursor after each second of empty
    // batches, so its first write after the takeover is a checkpoint.
    await client.eval(`for i = 1, 400000 do redis.call("SET", "other:" .. i, "x") end`, 0);
    const run = spawnCli(["--execute", "--batch", "10", "--json", "--redis-url", server.url]);
    await waitFor(
      "a checkpoint past the start",
      async () => ((await client.get("ai:backfill:cursor")) ?? "0") !== "0",
    );
    const [, cursor] = await client.eval(
      TAKE_OVER,
      3,
      "ai:backfill:lock",
      "ai:backfill:cursor",
      "ai:backfill:totals",
      otherRunnersLock(),
    ) as [number, string, string];
    const meta = await client.hgetall("ai:backfill:meta");
    const result = await run.done;
    assert.equal(result.code, 4, result.stderr);
    assert.match(result.stderr, /FENCED the run lock ai:backfill:lock is no longer held/);
    assert.equal(await client.get("ai:backfill:cursor"), cursor, "the checkpoint did not move");
    assert.deepEqual(await client.hgetall("ai:backfill:meta"), meta);
  });
});

Deno.test("checkpoint, finish, clear and totals writes are refused once the lock is replaced", async () => {
  await withRedis(async (_server, client) => {
    const lock = { key: "ai:backfill:lock", value: JSON.stringify({ token: "mine" }) };
    await client.set(lock.key, lock.value);
    const store = new CheckpointStore(client, "ai:backfill", { locks: [lock] });
    const checkpoint = { cursor: "12", runId: "r", params: "p" };
    await store.save("", checkpoint, new Map([[MIGRATED, 5]]));
    assert.equal(await client.get("ai:backfill:cursor"), "12");
    // Expired and taken by another runner.
    await client.del(lock.key);
    await client.set(lock.key, otherRunnersLock());
    const before = await client.dump("ai:backfill:cursor");
    const refusals = [
      store.save("", { ...checkpoint, cursor: "40" }, new Map([[MIGRATED, 7]])),
      store.finish("", { runId: "r", params: "p" }),
      store.clear(""),
      store.resetTotals(),
    ];
    for (const refused of refusals) {
      const error = await refused.then(() => undefined, (e: unknown) => e);
      assert.ok(error instanceof SafetyRefusal, String(error));
      assert.match(error.message, /FENCED the run lock ai:backfill:lock/);
    }
    assert.deepEqual(await client.dump("ai:backfill:cursor"), before);
    assert.deepEqual(await client.hgetall("ai:backfill:totals"), { [MIGRATED]: "5" });
    assert.equal(await client.exists("ai:backfill:meta"), 1);
    // A lock that expired with nobody taking it refuses too.
    await client.del(lock.key);
    await assert.rejects(store.save("", checkpoint, new Map([[MIGRATED, 1]])), SafetyRefusal);
  });
});

function pairs(flat: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < flat.length; i += 2) out[flat[i]!] = flat[i + 1]!;
  return out;
}
