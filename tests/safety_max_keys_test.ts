/**
 * `--max-keys` smaller than one SCAN batch: repeated small runs walk the whole
 * keyspace, each one making progress inside the re-read batch, with nothing lost.
 */
import assert from "node:assert/strict";
import { runJson } from "./support/cli.ts";
import { withRedis } from "./support/redis_server.ts";
import { makeJobs, newKey, seedOld } from "./support/seed.ts";

Deno.test("--max-keys 100 repeated over 2000 jobs (batches of 500) progresses every run and loses nothing", async () => {
  await withRedis(async (server, client) => {
    const jobs = makeJobs(2000);
    await seedOld(client, jobs);
    const migrated: number[] = [];
    for (let run = 0; run < 30; run++) {
      const result = await runJson([
        "--execute",
        "--rps",
        "0",
        "--max-keys",
        "100",
        "--redis-url",
        server.url,
      ]);
      assert.equal(result.code, 0, result.stderr);
      migrated.push(Number(result.summary.migrated));
      assert.ok(Number(result.summary.migrated) > 0, `run ${run + 1} made progress: ${migrated}`);
      if (result.summary.completed === true) break;
    }
    const total = migrated.reduce((a, b) => a + b, 0);
    assert.equal(total, 2000, `every job migrated exactly once: ${migrated}`);
    assert.ok(migrated.length >= 20 && migrated.length <= 22, `runs: ${migrated.length}`);
    for (const job of jobs) assert.equal(await client.exists(newKey(job)), 1, job.id);
    assert.equal(await client.exists("ai:backfill:cursor"), 0, "a finished scan clears it");
  });
});
