/**
 * Failovers in the middle of a run, through the real CLI, on a cluster of 3 masters with one
 * replica each (real redis-server processes).
 */
import assert from "node:assert/strict";
import type { Cluster } from "../src/redis/ioredis.ts";
import { cliCommand, runJson, waitFor } from "./support/cli.ts";
import {
  countClusterKeys,
  redisCli,
  seedOldCluster,
  startCluster,
  type TestCluster,
} from "./support/cluster.ts";
import type { RedisServer } from "./support/redis_server.ts";
import { assertMigrated, makeJobs } from "./support/seed.ts";

async function withCluster(fn: (cluster: TestCluster, client: Cluster) => Promise<void>) {
  const cluster = await startCluster({ replicas: 1, aof: true });
  const client = cluster.client();
  try {
    await fn(cluster, client);
  } finally {
    client.disconnect();
    await cluster.stop();
  }
}

/** A master with slots and its replica. */
async function masterAndReplica(
  cluster: TestCluster,
): Promise<{ master: RedisServer; replica: RedisServer }> {
  const roles = await Promise.all(cluster.nodes.map(async (node) => ({
    node,
    id: (await redisCli(node.port, "CLUSTER", "MYID")).trim(),
    info: await redisCli(node.port, "INFO", "replication"),
  })));
  for (const master of roles.filter((r) => r.info.includes("role:master"))) {
    const replica = roles.find((r) =>
      r.info.includes("role:slave") && r.info.includes(`master_port:${master.node.port}`) &&
      r.info.includes("master_link_status:up")
    );
    if (replica) return { master: master.node, replica: replica.node };
  }
  throw new Error("no master with a synced replica");
}

/** Runs the CLI slowly; calls `during` once every master has a checkpoint, then waits for it. */
async function runWith(
  cluster: TestCluster,
  client: Cluster,
  during: () => Promise<void>,
): Promise<{ code: number; stderr: string; summary: Record<string, unknown> }> {
  const child = cliCommand([
    "--execute",
    "--rps",
    "400",
    "--batch",
    "50",
    "--json",
    "--redis-url",
    cluster.url,
  ]).spawn();
  try {
    await waitFor("a checkpoint on every master", async () => {
      let stored = 0;
      for (const node of cluster.nodes) {
        const id = (await redisCli(node.port, "CLUSTER", "MYID")).trim();
        if ((await client.exists(`{ai:backfill}:cursor:${id}`)) === 1) stored++;
      }
      return stored === 3;
    });
    await during();
  } catch (error) {
    child.kill("SIGKILL");
    await child.output();
    throw error;
  }
  const output = await child.output();
  const stdout = new TextDecoder().decode(output.stdout);
  const stderr = new TextDecoder().decode(output.stderr);
  return { code: output.code, stderr, summary: stdout ? JSON.parse(stdout) : {} };
}

Deno.test("cluster failover: a manual failover mid-run loses nothing", async () => {
  await withCluster(async (cluster, client) => {
    const jobs = makeJobs(1500);
    await seedOldCluster(client, jobs);
    const { master, replica } = await masterAndReplica(cluster);
    const run = await runWith(cluster, client, async () => {
      assert.match(await redisCli(replica.port, "CLUSTER", "FAILOVER"), /OK/);
      await waitFor(
        "the replica to take over",
        async () => (await redisCli(replica.port, "ROLE")).startsWith("master"),
      );
    });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.summary.errors, 0);
    assert.match(await redisCli(master.port, "ROLE"), /^slave/);
    await assertMigrated(client, jobs);
    assert.equal(run.summary.migrated, 1500);
  });
});

Deno.test("cluster failover: a master killed mid-run; its replica is promoted and rescanned", async () => {
  await withCluster(async (cluster, client) => {
    const jobs = makeJobs(1500);
    await seedOldCluster(client, jobs);
    const { master, replica } = await masterAndReplica(cluster);
    const run = await runWith(cluster, client, async () => {
      await master.kill();
      await waitFor(
        "the replica to be promoted",
        async () => (await redisCli(replica.port, "ROLE")).startsWith("master"),
      );
    });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.summary.errors, 0);
    assert.match(
      run.stderr,
      // Named as the node that serves the slots now: the promoted replica.
      new RegExp(
        `Redis at 127\\.0\\.0\\.1:${replica.port} restarted or failed over \\(new run_id\\)`,
      ),
    );
    // Writes acknowledged by the killed master but not yet replicated are lost with it (Redis
    // replication is asynchronous): a second run copies whatever the failover took away.
    await master.start();
    await cluster.waitHealthy();
    const again = await runJson(["--execute", "--rps", "0", "--redis-url", cluster.url]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.summary.errors, 0);
    await assertMigrated(client, jobs);
    const nodes = cluster.nodeClients();
    try {
      assert.equal(await countClusterKeys(nodes, "ai:job:*"), 1500);
    } finally {
      for (const node of nodes) node.disconnect();
    }
  });
});
