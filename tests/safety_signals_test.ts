/**
 * Signals and crashes against a real run: SIGINT/SIGTERM stop cleanly with the checkpoint saved,
 * a second signal exits at once, kill -9 loses nothing.
 */
import assert from "node:assert/strict";
import { runJson, spawnCli, waitFor } from "./support/cli.ts";
import { freePort } from "./support/redis_server.ts";
import { countKeys, makeJobs, newKey, withSeeded } from "./support/seed.ts";

for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
  Deno.test(`${signal} stops after the sub-batches in flight, saves the checkpoint, prints the summary, exits ${code}`, async () => {
    await withSeeded(3000, async (server, client) => {
      const run = spawnCli([
        "--execute",
        "--rps",
        "400",
        "--batch",
        "100",
        "--json",
        "--redis-url",
        server.url,
      ]);
      await waitFor("a checkpoint", async () => (await client.exists("ai:backfill:cursor")) === 1);
      await new Promise((resolve) => setTimeout(resolve, 300));
      const sent = performance.now();
      run.child.kill(signal);
      const result = await run.done;
      const seconds = (performance.now() - sent) / 1000;
      assert.equal(result.code, code, result.stderr);
      assert.ok(seconds < 3, `exited ${seconds} s after ${signal}`);
      assert.match(result.stderr, new RegExp(`received ${signal}`));
      const summary = JSON.parse(result.stdout);
      assert.equal(summary.completed, false);
      assert.equal(
        await client.get("ai:backfill:cursor"),
        summary.cursor,
        "checkpoint = summary cursor",
      );
      assert.equal(await client.exists("ai:backfill:lock"), 0, "lock released");
      assert.ok(summary.migrated > 0 && summary.migrated < 3000);

      const rest = await runJson([
        "--execute",
        "--rps",
        "0",
        "--batch",
        "100",
        "--redis-url",
        server.url,
      ]);
      assert.equal(rest.code, 0);
      assert.match(rest.stderr, /Resuming from stored cursor=/);
      assert.equal(
        summary.migrated + Number(rest.summary.migrated),
        3000,
        "nothing lost, nothing twice",
      );
      assert.ok(Number(rest.summary.skipped_exists) <= 100, "at most one batch re-read");
      assert.equal(await countKeys(client, "ai:job:*"), 3000);
    });
  });
}

Deno.test("a second signal exits at once, and the stored checkpoint stays consistent", async () => {
  await withSeeded(3000, async (server, client) => {
    const run = spawnCli([
      "--execute",
      "--rps",
      "400",
      "--batch",
      "100",
      "--json",
      "--redis-url",
      server.url,
    ]);
    await waitFor("a checkpoint", async () => (await client.exists("ai:backfill:cursor")) === 1);
    const before = {
      cursor: await client.get("ai:backfill:cursor"),
      meta: await client.hgetall("ai:backfill:meta"),
    };
    // Freeze Redis: the sub-batch in flight never returns, so a graceful stop would hang.
    server.signal("SIGSTOP");
    try {
      await new Promise((resolve) => setTimeout(resolve, 300));
      run.child.kill("SIGINT");
      await new Promise((resolve) => setTimeout(resolve, 300));
      const sent = performance.now();
      run.child.kill("SIGINT");
      const result = await run.done;
      assert.equal(result.code, 130);
      assert.ok(performance.now() - sent < 1500, "exits at once");
    } finally {
      server.signal("SIGCONT");
    }
    const cursor = await client.get("ai:backfill:cursor");
    const meta = await client.hgetall("ai:backfill:meta");
    assert.ok(cursor !== null && /^\d+$/.test(cursor));
    assert.equal(meta.params, before.meta.params);
    assert.equal(meta.run_id, before.meta.run_id);
    // The dead run's lock expires by itself; fast-forward that, then resume to the end.
    await client.pexpire("ai:backfill:lock", 1);
    await new Promise((resolve) => setTimeout(resolve, 10));
    const rest = await runJson([
      "--execute",
      "--rps",
      "0",
      "--batch",
      "100",
      "--redis-url",
      server.url,
    ]);
    assert.equal(rest.code, 0, rest.stderr);
    assert.equal(await countKeys(client, "ai:job:*"), 3000);
  });
});

Deno.test("kill -9 at any moment loses nothing; the next run reprocesses at most one batch", async () => {
  await withSeeded(4000, async (server, client) => {
    for (const delay of [0, 250, 700]) {
      const run = spawnCli([
        "--execute",
        "--rps",
        "1000",
        "--batch",
        "100",
        "--redis-url",
        server.url,
      ]);
      // This run's own lock first: from the second round on, the cursor of the previous round is
      // already stored, and a kill before the lock is taken would test nothing.
      await waitFor(
        "this run's lock and a checkpoint",
        async () => (await client.exists("ai:backfill:lock", "ai:backfill:cursor")) === 2,
      );
      await new Promise((resolve) => setTimeout(resolve, delay));
      run.child.kill("SIGKILL");
      await run.done;
      // The holder died: its lock is not renewed any more and runs out by itself.
      const pttl = await client.pttl("ai:backfill:lock");
      assert.ok(pttl > 0 && pttl <= 30_000, `lock pttl ${pttl}`);
      await new Promise((resolve) => setTimeout(resolve, 1200));
      assert.ok((await client.pttl("ai:backfill:lock")) <= pttl - 1000, "not renewed");
      await client.pexpire("ai:backfill:lock", 1);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const before = await countKeys(client, "ai:job:*");
    const rest = await runJson([
      "--execute",
      "--rps",
      "0",
      "--batch",
      "100",
      "--redis-url",
      server.url,
    ]);
    assert.equal(rest.code, 0, rest.stderr);
    assert.match(rest.stderr, /Resuming from stored cursor=\d+, last_job=job-\d+/);
    assert.ok(Number(rest.summary.skipped_exists) <= 100, `re-read ${rest.summary.skipped_exists}`);
    assert.equal(before + Number(rest.summary.migrated), 4000);
    for (const job of makeJobs(4000)) assert.equal(await client.exists(newKey(job)), 1, job.id);
  });
});

Deno.test("SIGTERM while still trying to reach Redis exits 143, not an internal error", async () => {
  const run = spawnCli(["--dry-run", "--redis-url", `redis://127.0.0.1:${freePort()}`]);
  // Nothing listens on that port: the CLI is inside its 10 s connect retry loop.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  run.child.kill("SIGTERM");
  const result = await run.done;
  assert.equal(result.code, 143, result.stderr);
  assert.doesNotMatch(result.stderr, /internal error/);
});
