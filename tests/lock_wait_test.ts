/**
 * `--wait-lock`: a supervisor restarts a killed run at once, and the new run takes over the dead
 * holder's lock when it expires instead of exiting 4.
 */
import assert from "node:assert/strict";
import { runCli, runJson, spawnCli, waitFor } from "./support/cli.ts";
import { assertMigrated, makeJobs, withSeeded } from "./support/seed.ts";

Deno.test("kill -9, restart at once with --wait-lock: it waits for the lock, takes it, resumes, finishes", async () => {
  await withSeeded(1500, async (server, client) => {
    const first = spawnCli([
      "--execute",
      "--rps",
      "200",
      "--batch",
      "100",
      "--redis-url",
      server.url,
    ]);
    // Past the start: the run stores its start cursor ("0") before the first batch.
    await waitFor("a checkpoint", async () => {
      const cursor = await client.get("ai:backfill:cursor");
      return cursor !== null && cursor !== "0";
    });
    const holder = JSON.parse((await client.get("ai:backfill:lock"))!);
    first.child.kill("SIGKILL");
    await first.done;
    assert.ok(
      (await client.pttl("ai:backfill:lock")) > 15_000,
      "the dead run's lock is still there",
    );

    const started = performance.now();
    const second = await runJson([
      "--execute",
      "--rps",
      "0",
      "--wait-lock",
      "40",
      "--redis-url",
      server.url,
    ]);
    const waited = (performance.now() - started) / 1000;
    assert.equal(second.code, 0, second.stderr);
    assert.match(
      second.stderr,
      new RegExp(
        `waiting for the lock ai:backfill:lock: held by .+ pid ${holder.pid} \\(since .+\\), until \\d{4}-\\d\\d-\\d\\dT.+; waiting up to 4\\d s more`,
      ),
    );
    assert.equal(second.stderr.match(/waiting for the lock/g)?.length, 1, "one line per holder");
    assert.match(second.stderr, /Resuming from stored cursor=/);
    assert.ok(waited > 10, `it waited for the lock to expire (${waited.toFixed(1)} s)`);
    assert.equal(second.summary.completed, true);
    assert.ok((second.summary.migrated as number) < 1500, "resumed, not restarted");
    await assertMigrated(client, makeJobs(1500));
    assert.equal(await client.exists("ai:backfill:lock"), 0, "released at the end");
  });
});

Deno.test("--wait-lock runs out against a live holder: exit 4 naming it", async () => {
  await withSeeded(1500, async (server, client) => {
    const first = spawnCli(["--execute", "--rps", "100", "--redis-url", server.url]);
    try {
      await waitFor("the lock", async () => (await client.exists("ai:backfill:lock")) === 1);
      const second = await runCli(["--execute", "--wait-lock", "2", "--redis-url", server.url]);
      assert.equal(second.code, 4);
      assert.match(second.stderr, /waiting for the lock ai:backfill:lock: held by/);
      assert.match(second.stderr, /error: another backfill holds the lock ai:backfill:lock/);
    } finally {
      first.child.kill("SIGTERM");
      await first.done;
    }
  });
});
