/**
 * The checkpoint written inside the copy script (checkpoint/in_script.ts, run/pipeline.ts), on a
 * real redis-server: kill -9 at random moments of a real `--execute`, and a failure in an earlier
 * call of a batch that must keep the batch's last call from moving the checkpoint.
 */
import assert from "node:assert/strict";
import { CheckpointChain } from "../src/run/pipeline.ts";
import { CheckpointStore, runParams } from "../src/checkpoint/store.ts";
import { InServerCopy } from "../src/migrate/in_server.ts";
import { serverRunId } from "../src/redis/availability.ts";
import { KeySchema } from "../src/schema.ts";
import { OLD_MATCH, oldKeyFor } from "./support/keys.ts";
import { runJson, spawnCli, waitFor } from "./support/cli.ts";
import { assertMigrated, Buffer, makeJobs, newKey, seedOld } from "./support/seed.ts";
import { withRedis } from "./support/redis_server.ts";

const BATCH = 200;

Deno.test("kill -9 at random moments, then resume: every job once, no resurrection, re-read at most one batch", async () => {
  await withRedis(async (server, client) => {
    const jobs = makeJobs(30_000);
    await seedOld(client, jobs);
    // The application deletes jobs while the backfill runs: old key first, then new key.
    const deleted = new Set<string>();
    let deleting = true;
    const app = server.client();
    const deleter = (async () => {
      for (let i = 7; deleting; i = (i + 7919) % jobs.length) {
        const job = jobs[i]!;
        await app.del(oldKeyFor(job.id));
        await app.del(newKey(job));
        deleted.add(job.id);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })();
    const reReads: number[] = [];
    const delays: number[] = [];
    try {
      for (let round = 0; round < 5; round++) {
        const before = await client.get("ai:backfill:cursor");
        const run = spawnCli([
          "--execute",
          "--rps",
          "10000",
          "--batch",
          String(BATCH),
          "--redis-url",
          server.url,
        ]);
        // Mid-run: the run's own checkpoint has moved (beyond the anchor it starts with).
        await waitFor("the run's first checkpoint", async () => {
          const cursor = await client.get("ai:backfill:cursor");
          return cursor !== null && cursor !== "0" && cursor !== before;
        });
        const delay = Math.floor(Math.random() * 300);
        delays.push(delay);
        await new Promise((resolve) => setTimeout(resolve, delay));
        run.child.kill("SIGKILL");
        await run.done;
        // The supervisor knows the holder is dead; the lock would only make the next run wait.
        await client.del("ai:backfill:lock");
        // Resume a little: what the resumed run finds already copied is what the crash re-reads
        // (nothing else creates new keys here).
        const resumed = await runJson([
          "--execute",
          "--rps",
          "0",
          "--batch",
          String(BATCH),
          "--max-keys",
          String(3 * BATCH),
          "--redis-url",
          server.url,
        ]);
        assert.equal(resumed.code, 0, resumed.stderr);
        assert.match(resumed.stderr, /Resuming from stored cursor=/);
        reReads.push(resumed.summary.skipped_exists as number);
      }
    } finally {
      deleting = false;
      await deleter;
      app.disconnect();
    }
    const last = await runJson(["--execute", "--rps", "0", "--redis-url", server.url]);
    assert.equal(last.code, 0, last.stderr);
    assert.equal(last.summary.errors, 0);
    const context = `re-reads ${reReads.join(",")} after kills at +${delays.join(",")} ms`;
    // A SCAN batch of COUNT 200 holds about 200 keys (whole buckets, so a few more); two batches
    // would be ~400.
    assert.ok(reReads.every((n) => n <= BATCH * 1.25), context);
    assert.ok(reReads.some((n) => n > 0), `a kill landed mid-run (${context})`);
    const alive = jobs.filter((job) => !deleted.has(job.id));
    await assertMigrated(client, alive);
    const resurrected = [];
    for (const job of jobs.filter((j) => deleted.has(j.id))) {
      if (await client.exists(newKey(job))) resurrected.push(job.id);
    }
    assert.deepEqual(resurrected, [], "no deleted job has a new key");
  });
});

Deno.test("a failed earlier call of a batch keeps its last call from moving the checkpoint", async () => {
  await withRedis(async (_server, client) => {
    const jobs = makeJobs(8);
    await seedOld(client, jobs);
    const keys = jobs.map((job) => Buffer.from(oldKeyFor(job.id)));
    const store = new CheckpointStore(client, "ai:backfill");
    const strategy = new InServerCopy(client, new KeySchema());
    await strategy.init();
    const runId = await serverRunId(client);
    const params = runParams({ pattern: new KeySchema().pattern.source, match: OLD_MATCH });
    const next = (cursor: string) => ({ cursor, lastJob: Buffer.from("job-x"), runId, params });
    await store.save("", { cursor: "c0", runId, params });
    const chain = new CheckpointChain({ keys: store.keys(""), stored: "c0" });

    // Batch 1: its first call is refused per key (OOM inside the script), its last call succeeds.
    const batch1 = chain.batch(next("c1"));
    await client.config("SET", "maxmemory", "1");
    const first = await strategy.migrate(keys.slice(0, 2), {
      dryRun: false,
      step: batch1.step(false),
    });
    assert.deepEqual(first.map((r) => r.errorCode), ["OOM", "OOM"]);
    await client.config("SET", "maxmemory", "0");
    const last = await strategy.migrate(keys.slice(2, 4), {
      dryRun: false,
      step: batch1.step(true),
    });
    assert.deepEqual(last.map((r) => r.outcome), ["migrated", "migrated"]);
    assert.equal(batch1.stored, false);
    // A crash now resumes at c0: the two refused keys are read again.
    assert.equal((await store.load(""))?.cursor, "c0");

    // Batch 2 expected c1: its calls all succeed, but the compare-and-set finds c0.
    const batch2 = chain.batch(next("c2"));
    await strategy.migrate(keys.slice(4, 5), { dryRun: false, step: batch2.step(false) });
    await strategy.migrate(keys.slice(5, 6), { dryRun: false, step: batch2.step(true) });
    assert.equal(batch2.stored, false);
    assert.equal((await store.load(""))?.cursor, "c0");

    // The engine stores c2 itself once batch 1's keys are retried; then batch 3's first call never
    // runs (refused before it runs, e.g. the connection dropped): its last call stores nothing.
    await store.save("", next("c2"));
    chain.storedByClient("c2");
    const batch3 = chain.batch(next("c3"));
    batch3.step(false);
    await strategy.migrate(keys.slice(6, 7), { dryRun: false, step: batch3.step(true) });
    assert.equal(batch3.stored, false);
    assert.equal((await store.load(""))?.cursor, "c2");

    // Batch 4 (after the engine stored c3), every call clean and in order: its last call stores
    // c4 with the last job.
    await store.save("", next("c3"));
    chain.storedByClient("c3");
    const batch4 = chain.batch({ ...next("c4"), lastJob: Buffer.from("job-7") });
    await strategy.migrate(keys.slice(0, 1), { dryRun: false, step: batch4.step(false) });
    await strategy.migrate(keys.slice(7, 8), { dryRun: false, step: batch4.step(true) });
    assert.equal(batch4.stored, true);
    const stored = await store.load("");
    assert.deepEqual([stored?.cursor, stored?.lastJob?.toString(), stored?.runId], [
      "c4",
      "job-7",
      runId,
    ]);
  });
});
