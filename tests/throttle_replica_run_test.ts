/**
 * The replica-lag pause end to end: a real `--execute` process, a real replica
 * (`redis-server --replicaof`) frozen with SIGSTOP mid-run. The run pauses (log line and
 * `backfill status`), and goes on after SIGCONT until every job is migrated.
 */
import assert from "node:assert/strict";
import { runCli, spawnCli, waitFor } from "./support/cli.ts";
import { assertMigrated, countKeys, makeJobs, seedOld } from "./support/seed.ts";
import { startRedis, withRedis } from "./support/redis_server.ts";

const P = "p:lag";

Deno.test("a frozen replica pauses a running --execute on --max-replica-lag; SIGCONT resumes it to the end", async () => {
  await withRedis(async (master, client) => {
    const replica = await startRedis({ args: ["--replicaof", "127.0.0.1", String(master.port)] });
    try {
      const jobs = makeJobs(4000);
      await seedOld(client, jobs);
      await waitFor(
        "the replica online and in sync",
        async () => /slave0:.*state=online/.test(await client.info("replication")),
      );
      const common = ["--progress-key", P, "--redis-url", master.url];
      const status = async () => (await runCli(["status", ...common])).stdout;
      // Seconds, not bytes: a replica that stops acknowledging is past 2 s whatever the write rate.
      const run = spawnCli([
        "--execute",
        "--rps",
        "400",
        "--max-latency",
        "0",
        "--max-replica-lag",
        "2s",
        "--json",
        ...common,
      ]);
      try {
        await waitFor("the run migrating", async () => (await countKeys(client, "ai:job:*")) > 0);
        replica.signal("SIGSTOP");
        await waitFor(
          "the pause on replica lag",
          () => /throttle on: replica lag above --max-replica-lag; paused/.test(run.stderrSoFar()),
          20_000,
        );
        await waitFor("the pause in the status", async () => /rate: paused/.test(await status()));
        assert.match(await status(), /throttled: [^)]*replica_lag/);
        const frozen = await countKeys(client, "ai:job:*");
        assert.ok(frozen < jobs.length, "paused before the end");
        await new Promise((resolve) => setTimeout(resolve, 1500));
        // What was admitted before the pause may still land (a sub-batch or two), nothing more.
        const later = await countKeys(client, "ai:job:*");
        assert.ok(later - frozen <= 200, `${later - frozen} keys written while paused`);

        replica.signal("SIGCONT");
        await waitFor(
          "the resume",
          () => /throttle off: replica lag back under --max-replica-lag/.test(run.stderrSoFar()),
          20_000,
        );
        const result = await run.done;
        assert.equal(result.code, 0, result.stderr);
        assert.equal(JSON.parse(result.stdout).migrated, jobs.length);
        await assertMigrated(client, jobs);
        const log = result.stderr;
        assert.ok(
          log.indexOf("throttle on: replica lag") < log.indexOf("throttle off: replica lag"),
          "paused, then resumed",
        );
      } finally {
        try {
          run.child.kill("SIGKILL");
        } catch {
          // Already exited.
        }
        await run.done.catch(() => {});
      }
    } finally {
      replica.signal("SIGCONT");
      await replica.stop();
    }
  });
});
