/**
 * Replicas and demotion: `--execute` on a replica says so and waits for a primary; a
 * primary demoted mid-run (READONLY) is an outage that is waited out, with no per-key errors.
 */
import assert from "node:assert/strict";
import { runCli, runJson, spawnCli, waitFor } from "./support/cli.ts";
import { freePort, type RedisServer, startRedis } from "./support/redis_server.ts";
import { makeJobs, newKey, seedOld } from "./support/seed.ts";
import type { Redis } from "../src/redis/ioredis.ts";

/** A primary with `jobs` old jobs and a replica that has caught up with it. */
async function withReplica(
  jobs: number,
  fn: (primary: RedisServer, replica: RedisServer, client: Redis) => Promise<void>,
): Promise<void> {
  const primary = await startRedis();
  const client = primary.client();
  let replica: RedisServer | undefined;
  try {
    await seedOld(client, makeJobs(jobs));
    replica = await startRedis({ args: ["--replicaof", "127.0.0.1", String(primary.port)] });
    const replicaClient = replica.client();
    try {
      await waitFor("the replica in sync", async () => (await replicaClient.dbsize()) === jobs);
    } finally {
      replicaClient.disconnect();
    }
    await fn(primary, replica, client);
  } finally {
    client.disconnect();
    await replica?.stop();
    await primary.stop();
  }
}

Deno.test("--execute on a replica says it is a replica, waits --max-outage, exits 3; dry-run and verify work", async () => {
  await withReplica(300, async (primary, replica, client) => {
    const started = performance.now();
    const run = await runCli(["--execute", "--max-outage", "2", "--redis-url", replica.url]);
    assert.equal(run.code, 3, run.stderr);
    assert.ok(performance.now() - started >= 1500, "waited for a primary first");
    assert.doesNotMatch(run.stderr, /internal error|Stream isn't writeable/);
    assert.match(run.stderr, new RegExp(`127\\.0\\.0\\.1:${replica.port} is a replica`));
    assert.match(run.stderr, /point --redis-url at the primary/);
    assert.equal((await client.keys("ai:backfill*")).length, 0, "nothing written");
    assert.equal((await client.keys("ai:job:*")).length, 0, "nothing written");

    const dry = await runJson(["--dry-run", "--rps", "0", "--redis-url", replica.url]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.equal(dry.summary.migrated, 300);
    const verify = await runJson(["verify", "--redis-url", replica.url]);
    assert.equal(verify.code, 1, verify.stderr);
    assert.equal(verify.summary.missing, 300);
    void primary;
  });
});

Deno.test("--execute on a replica that is promoted within --max-outage goes on and finishes", async () => {
  await withReplica(300, async (_primary, replica) => {
    const run = spawnCli([
      "--execute",
      "--rps",
      "0",
      "--max-outage",
      "30",
      "--json",
      "--redis-url",
      replica.url,
    ]);
    await waitFor("the replica warning", () => /is a replica/.test(run.stderrSoFar()));
    const promoted = replica.client();
    try {
      await promoted.call("REPLICAOF", "NO", "ONE");
      const result = await run.done;
      assert.equal(result.code, 0, result.stderr);
      assert.equal(JSON.parse(result.stdout).migrated, 300);
      for (const job of makeJobs(300)) assert.equal(await promoted.exists(newKey(job)), 1, job.id);
    } finally {
      promoted.disconnect();
    }
  });
});

Deno.test("a primary demoted mid-run (READONLY) is waited out: no per-key errors, every job migrated", async () => {
  const server = await startRedis();
  const client = server.client();
  try {
    const jobs = makeJobs(5000);
    await seedOld(client, jobs);
    const run = spawnCli([
      "--execute",
      "--rps",
      "1500",
      "--batch",
      "200",
      "--max-outage",
      "30",
      "--json",
      "--redis-url",
      server.url,
    ]);
    await waitFor("a checkpoint", async () => (await client.exists("ai:backfill:cursor")) === 1);
    // A replica of a primary that is not there: read-only, and it keeps its data.
    await client.call("REPLICAOF", "127.0.0.1", String(freePort()));
    await new Promise((resolve) => setTimeout(resolve, 3000));
    await client.call("REPLICAOF", "NO", "ONE");
    const result = await run.done;
    assert.equal(result.code, 0, result.stderr);
    assert.doesNotMatch(result.stderr, /internal error|key_error|failed after retrying/);
    assert.match(result.stderr, /lost Redis at 127\.0\.0\.1:\d+ \(READONLY|connection/);
    const summary = JSON.parse(result.stdout);
    assert.equal(summary.errors, 0);
    assert.equal(summary.completed, true);
    for (const job of jobs) assert.equal(await client.exists(newKey(job)), 1, job.id);
  } finally {
    client.disconnect();
    await server.stop();
  }
});
