/**
 * Counts after a batch abandoned mid-way: while another client's script holds Redis busy, the
 * run's calls get BUSY, the batch is read again once Redis answers, and the keys its answered
 * calls had copied are counted `migrated` (this run created them), not `skipped_exists`. The same
 * for calls whose reply never arrived (the connection reset after Redis ran them): their record
 * tells what they copied. Plus the bookkeeping itself (pure).
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { startDelayProxy } from "../bench/delay_proxy.ts";
import { CallRecords, type RecordedCall } from "../src/migrate/call_record.ts";
import { UncountedCopies } from "../src/migrate/uncounted_copies.ts";
import { spawnCli, waitFor } from "./support/cli.ts";
import { withRedis } from "./support/redis_server.ts";
import { makeJobs, newKey, seedOld } from "./support/seed.ts";
import { busyLoop } from "./support/other_client.ts";

Deno.test("BUSY mid-batch: migrated equals the new keys this run created, exactly", async () => {
  await withRedis(async (server, client) => {
    const jobs = makeJobs(4000);
    await seedOld(client, jobs);
    // The application dual-wrote every tenth job already: those are skipped_exists, rightly.
    const dualWritten = jobs.filter((_, i) => i % 10 === 0);
    for (const job of dualWritten) {
      await client.hset(newKey(job), { workspace_id: job.workspace, ...job.fields });
    }
    const run = spawnCli([
      "--execute",
      "--rps",
      "1000",
      "--batch",
      "500",
      "--max-outage",
      "30",
      "--json",
      "--redis-url",
      server.url,
    ]);
    const blocker = server.client();
    let spells = 0;
    try {
      await waitFor("a checkpoint", async () => (await client.exists("ai:backfill:cursor")) === 1);
      // Busy spells of 600 ms past busy-reply-threshold (100 ms), at moments unrelated to the
      // batches: each one most likely cuts a batch of five calls between two of them.
      for (; spells < 4 && run.child.pid && !/"completed"/.test(run.stderrSoFar()); spells++) {
        await blocker.eval(busyLoop(600), 0);
        await new Promise((resolve) => setTimeout(resolve, 250 + 150 * spells));
      }
    } finally {
      blocker.disconnect();
    }
    const result = await run.done;
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /lost Redis at 127\.0\.0\.1:\d+ \(BUSY\)/);
    const summary = JSON.parse(result.stdout);
    assert.equal(summary.errors, 0);
    assert.equal(summary.completed, true);
    assert.equal(summary.migrated, jobs.length - dualWritten.length, JSON.stringify(summary));
    // A dual-written job without its TTL yet is `repaired` (the copy gets the TTL).
    assert.equal(summary.skipped_exists + summary.repaired, dualWritten.length);
    for (const job of jobs) assert.equal(await client.exists(newKey(job)), 1, job.id);
  }, { args: ["--busy-reply-threshold", "100"] });
});

Deno.test("replies lost with the connection: migrated equals the new keys this run created, exactly", async () => {
  await withRedis(async (server, client) => {
    const jobs = makeJobs(20_000);
    await seedOld(client, jobs);
    const dualWritten = jobs.filter((_, i) => i % 10 === 0);
    const pipeline = client.pipeline();
    for (const job of dualWritten) {
      pipeline.hset(newKey(job), { workspace_id: job.workspace, ...job.fields });
    }
    await pipeline.exec();
    // 20 ms each way and no rate limit: calls are always in flight, and those Redis ran in the
    // last 20 ms before a drop lose their replies.
    const proxy = startDelayProxy({ targetPort: server.port, delayMs: 20 });
    let drops = 0;
    try {
      const run = spawnCli([
        "--execute",
        "--rps",
        "0",
        "--batch",
        "500",
        "--max-latency",
        "0",
        "--max-outage",
        "30",
        "--json",
        "--redis-url",
        `redis://127.0.0.1:${proxy.port}`,
      ]);
      const backs = () => run.stderrSoFar().match(/redis_back/g)?.length ?? 0;
      await waitFor("a checkpoint", async () => (await client.exists("ai:backfill:cursor")) === 1);
      for (; drops < 4 && !/"completed"/.test(run.stderrSoFar()); drops++) {
        await new Promise((resolve) => setTimeout(resolve, 100 + 100 * drops));
        proxy.drop();
        // Each drop while the run copies: wait until it is back before the next one.
        await waitFor(
          "the run back",
          () => backs() > drops || /"completed"/.test(run.stderrSoFar()),
        );
      }
      const result = await run.done;
      assert.equal(result.code, 0, result.stderr);
      assert.ok(drops >= 2, `connections dropped mid-run (${drops})`);
      assert.match(result.stderr, /lost Redis at 127\.0\.0\.1:\d+/);
      const summary = JSON.parse(result.stdout);
      assert.equal(summary.errors, 0);
      assert.equal(summary.completed, true);
      assert.equal(summary.migrated, jobs.length - dualWritten.length, JSON.stringify(summary));
      assert.equal(summary.skipped_exists + summary.repaired, dualWritten.length);
      for (const job of jobs) assert.equal(await client.exists(newKey(job)), 1, job.id);
    } finally {
      await proxy.close();
    }
  });
});

Deno.test("uncounted copies: a re-read's skipped_exists of a remembered copy counts as that copy, once", () => {
  const keys = ["ai:jobs:a", "ai:jobs:b", "ai:jobs:c"].map((k) => Buffer.from(k));
  const copies = new UncountedCopies();
  const untouched = [{ outcome: "skipped_exists" as const }];
  assert.equal(copies.settle(keys, untouched), untouched, "nothing remembered: same array");
  copies.remember(keys, [
    { outcome: "migrated" },
    { outcome: "repaired" },
    { outcome: "errors", errorCode: "BUSY" },
  ]);
  assert.equal(copies.size, 2);
  const settled = copies.settle(keys, [
    { outcome: "skipped_exists" },
    { outcome: "skipped_exists" },
    { outcome: "skipped_exists" },
  ]);
  assert.deepEqual(settled.map((r) => r.outcome), ["migrated", "repaired", "skipped_exists"]);
  assert.equal(copies.size, 0);
  // Counted once: a later read of the same key is what it is.
  assert.deepEqual(
    copies.settle(keys, [{ outcome: "skipped_exists" }])[0]!.outcome,
    "skipped_exists",
  );
});

Deno.test("uncounted copies: a key that failed again stays remembered for its next retry", () => {
  const keys = [Buffer.from("ai:jobs:a")];
  const copies = new UncountedCopies();
  copies.remember(keys, [{ outcome: "migrated" }]);
  const failed = copies.settle(keys, [{ outcome: "errors", errorCode: "CHANGED" }]);
  assert.equal(failed[0]!.outcome, "errors");
  assert.equal(copies.size, 1);
  assert.equal(copies.settle(keys, [{ outcome: "skipped_exists" }])[0]!.outcome, "migrated");
});

/** Sends a call through `calls` whose reply is lost (it ran, or not): returns its record. */
async function lose(calls: CallRecords, key: string, keys: Buffer[]): Promise<RecordedCall> {
  let sent: RecordedCall | undefined;
  await assert.rejects(calls.send(key, keys, (record) => {
    sent = record;
    return Promise.reject(new Error("Connection is closed."));
  }));
  return sent!;
}

Deno.test("call records: a lost call's record tells its copies; an unreadable record is looked up again", async () => {
  const calls = new CallRecords();
  const keys = ["ai:jobs:1", "ai:jobs:2", "ai:jobs:3"].map((k) => Buffer.from(k));
  const a = await lose(calls, "rec:a", keys);
  const b = await lose(calls, "rec:b", keys.slice(0, 1));
  const never = await lose(calls, "rec:a", keys.slice(2));
  const stored = new Map([
    // call a: migrated, exists, repaired; `never` never ran (its field holds an older call's).
    [`rec:a/${a.field}`, `${a.id}:021`],
    [`rec:a/${never.field}`, `someone:9:0`],
  ]);
  let bReadable = false;
  const read = (key: string, fields: string[]) => {
    if (key === "rec:b" && !bReadable) return Promise.reject(new Error("Connection is closed."));
    return Promise.resolve(fields.map((f) => stored.get(`${key}/${f}`) ?? null));
  };
  const found = await calls.lookUp(read);
  assert.deepEqual(found.map((f) => f.keys.map(String)), [["ai:jobs:1", "ai:jobs:3"]]);
  assert.deepEqual(found[0]!.results.map((r) => r.outcome), ["migrated", "repaired"]);
  assert.equal(calls.unanswered, 1, "the unreadable record's call stays");
  stored.set(`rec:b/${b.field}`, `${b.id}:0`);
  bReadable = true;
  const later = await calls.lookUp(read);
  assert.deepEqual(later.map((f) => f.keys.map(String)), [["ai:jobs:1"]]);
  assert.equal(calls.unanswered, 0);
});

Deno.test("call records: a lost call's field is held until its record is read; an answered call's is free at once", async () => {
  const calls = new CallRecords();
  const keys = [Buffer.from("ai:jobs:1")];
  const fieldOf = async () => {
    let field = "";
    await calls.send("rec", keys, (record) => Promise.resolve(field = record.field));
    return field;
  };
  assert.equal(await fieldOf(), "0");
  assert.equal(await fieldOf(), "0", "an answered call frees its field");
  const lost = await lose(calls, "rec", keys);
  assert.equal(lost.field, "0");
  // However many calls come before the look-up, none writes over the lost call's record.
  for (let i = 0; i < 100; i++) assert.equal(await fieldOf(), "1");
  let refused = "";
  await assert.rejects(calls.send("rec", keys, (record) => {
    refused = record.field;
    return Promise.reject(new Error("ERR a reply: the call did not copy"));
  }));
  assert.equal(refused, "1");
  assert.equal(calls.unanswered, 1, "a call refused with a reply is not looked up");
  await calls.lookUp((_, fields) => Promise.resolve(fields.map(() => null)));
  assert.equal(await fieldOf(), "0", "read: the field is free again");
});
