/**
 * Redis Sentinel through the real CLI: a primary, a replica and two sentinels (real processes).
 */
import assert from "node:assert/strict";
import { oldKeyFor } from "./support/keys.ts";
import { cliCommand, runCli, runJson } from "./support/cli.ts";
import { freePort } from "./support/redis_server.ts";
import { keyState, makeJobs, newKey, seedOld, type TestJob } from "./support/seed.ts";
import { MASTER_NAME, startSentinel, type TestSentinel, waitUntil } from "./support/sentinel.ts";
import type { Redis } from "../src/redis/ioredis.ts";

async function withSentinel(fn: (setup: TestSentinel) => Promise<void>) {
  const setup = await startSentinel();
  try {
    await fn(setup);
  } finally {
    await setup.stop();
  }
}

async function assertMigrated(client: Redis, jobs: TestJob[]) {
  for (const job of jobs) {
    const old = await keyState(client, oldKeyFor(job.id));
    const fresh = await keyState(client, newKey(job));
    assert.deepEqual(fresh.fields, old.fields, job.id);
    if (job.ttl) assert.ok(Math.abs(fresh.pttl - old.pttl) < 2000, `${job.id} TTL`);
    else assert.equal(fresh.pttl, -1, `${job.id} has no TTL`);
  }
}

Deno.test("sentinel: redis+sentinel:// finds the primary and migrates there", async () => {
  await withSentinel(async (setup) => {
    const client = setup.primary.client();
    try {
      const jobs = makeJobs(400);
      await seedOld(client, jobs);
      const urls = setup.sentinelPorts.flatMap((port) => [
        "--redis-url",
        `redis+sentinel://127.0.0.1:${port}/${MASTER_NAME}`,
      ]);
      const dry = await runJson(["--dry-run", "--rps", "0", ...urls]);
      assert.equal(dry.code, 0, dry.stderr);
      assert.match(dry.stderr, /\(sentinel\)/);
      assert.equal(dry.summary.migrated, 400);
      const run = await runJson(["--execute", "--rps", "0", ...urls]);
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.summary.migrated, 400);
      await assertMigrated(client, jobs);
    } finally {
      client.disconnect();
    }
  });
});

Deno.test("sentinel: the primary killed mid-run; the run moves to the promoted replica, rescanned from 0", async () => {
  await withSentinel(async (setup) => {
    const primary = setup.primary.client();
    primary.on("error", () => {});
    const replica = setup.replica.client();
    try {
      const jobs = makeJobs(1500);
      await seedOld(primary, jobs);
      await waitUntil(
        "the replica to have every job",
        async () => (await replica.dbsize()) === 1500,
      );
      const child = cliCommand([
        "--execute",
        "--rps",
        "200",
        "--batch",
        "50",
        "--json",
        "--redis-url",
        setup.url,
      ]).spawn();
      let output: Deno.CommandOutput;
      try {
        await waitUntil(
          "a checkpoint",
          async () => (await primary.exists("ai:backfill:cursor")) === 1,
        );
        // The primary dies; the sentinels promote the replica after down-after-milliseconds.
        await setup.primary.kill();
        await waitUntil(
          "the replica to be promoted",
          async () => (await setup.currentPrimaryPort()) === setup.replica.port,
        );
        output = await child.output();
      } catch (error) {
        child.kill("SIGKILL");
        await child.output();
        throw error;
      }
      const stderr = new TextDecoder().decode(output.stderr);
      assert.equal(output.code, 0, stderr);
      const summary = JSON.parse(new TextDecoder().decode(output.stdout));
      assert.equal(summary.errors, 0);
      assert.match(stderr, /\(new run_id\).*rescanning from cursor 0/);
      // The new primary (the former replica) holds every copy.
      await assertMigrated(replica, jobs);
    } finally {
      primary.disconnect();
      replica.disconnect();
    }
  });
});

Deno.test("sentinel: no sentinel answering exits 3 naming the sentinels, never the password", async () => {
  const port = freePort();
  const { code, stderr } = await runCli([
    "--dry-run",
    "--redis-url",
    `redis+sentinel://app:topsecret@127.0.0.1:${port}/${MASTER_NAME}`,
  ]);
  assert.equal(code, 3, stderr);
  assert.match(stderr, new RegExp(`master '${MASTER_NAME}' via sentinels 127\\.0\\.0\\.1:${port}`));
  assert.ok(!stderr.includes("topsecret"));
});
