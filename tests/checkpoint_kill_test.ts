/**
 * The checkpoint rule (run/checkpointer.ts) on a real redis-server: kill -9 at random moments of a real
 * `--execute` with two batches in flight, each followed by a resumed run.
 */
import assert from "node:assert/strict";
import { oldKeyFor } from "./support/keys.ts";
import { runJson, spawnCli, waitFor } from "./support/cli.ts";
import { assertMigrated, makeJobs, newKey, seedOld } from "./support/seed.ts";
import { withRedis } from "./support/redis_server.ts";

const BATCH = 200;

Deno.test("kill -9 at random moments, then resume: every job once, no resurrection, re-read at most two batches", async () => {
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
        // Mid-run: the run's own checkpoint has moved.
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
    // are in flight, three would be ~600.
    assert.ok(reReads.every((n) => n <= 2 * BATCH * 1.25), context);
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
