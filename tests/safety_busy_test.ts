/**
 * Another client's long script: while Redis answers BUSY to everything else, the run
 * waits, as for any outage, and then finishes with every job migrated and no per-key error.
 */
import assert from "node:assert/strict";
import { spawnCli, waitFor } from "./support/cli.ts";
import { withRedis } from "./support/redis_server.ts";
import { makeJobs, newKey, seedOld } from "./support/seed.ts";
import { busyLoop } from "./support/other_client.ts";

Deno.test("BUSY from another client's script is waited out: no per-key errors, exit 0, all migrated", async () => {
  await withRedis(async (server, client) => {
    const jobs = makeJobs(3000);
    await seedOld(client, jobs);
    const run = spawnCli([
      "--execute",
      "--rps",
      "1000",
      "--batch",
      "200",
      "--max-outage",
      "30",
      "--json",
      "--redis-url",
      server.url,
    ]);
    const blocker = server.client();
    try {
      await waitFor("a checkpoint", async () => (await client.exists("ai:backfill:cursor")) === 1);
      // Two busy spells of 1.5 s, past busy-reply-threshold (100 ms): Redis answers BUSY meanwhile.
      for (let spell = 0; spell < 2; spell++) {
        await blocker.eval(busyLoop(1500), 0);
        await new Promise((resolve) => setTimeout(resolve, 300));
      }
    } finally {
      blocker.disconnect();
    }
    const result = await run.done;
    assert.equal(result.code, 0, result.stderr);
    assert.doesNotMatch(result.stderr, /internal error|key_error|failed after retrying/);
    assert.match(result.stderr, /lost Redis at 127\.0\.0\.1:\d+ \(BUSY\)/);
    const summary = JSON.parse(result.stdout);
    assert.equal(summary.errors, 0);
    assert.equal(summary.completed, true);
    for (const job of jobs) assert.equal(await client.exists(newKey(job)), 1, job.id);
  }, { args: ["--busy-reply-threshold", "100"] });
});
