/**
 * A primary demoted mid-run with no primary to take its place is an outage like a killed one:
 * `--max-outage` counts from the first refusal (READONLY on standalone; on a cluster, the slots
 * served by nobody), and the run ends with exit 3 within it, not after waiting it out twice (or
 * for good). A real failover within --max-outage is followed (cluster_failover_test.ts,
 * sentinel_test.ts).
 */
import assert from "node:assert/strict";
import { LossClock } from "../src/redis/availability.ts";
import { Redis } from "../src/redis/ioredis.ts";
import { type CliResult, spawnCli, waitFor } from "./support/cli.ts";
import { redisCli, seedOldCluster, startCluster } from "./support/cluster.ts";
import { freePort, type RedisServer, startRedis } from "./support/redis_server.ts";
import { makeJobs, seedOld } from "./support/seed.ts";

/**
 * --max-outage of these runs, and how much later than it a busy machine may end the run: the
 * watchdog's period, the other masters' calls settling, and the lock release, whose calls to the
 * slots nobody serves wait out the cluster client's redirection retries (about 6 s here).
 */
const MAX_OUTAGE_S = 4;
const SLACK_S = 11;

Deno.test("standalone: a primary demoted with REPLICAOF mid-run (no Sentinel) ends the run within --max-outage: exit 3", async () => {
  const server = await startRedis();
  const client = server.client();
  try {
    await seedOld(client, makeJobs(20_000));
    const run = spawnCli([
      "--execute",
      "--rps",
      "1000",
      "--batch",
      "200",
      "--max-outage",
      String(MAX_OUTAGE_S),
      "--json",
      "--redis-url",
      server.url,
    ]);
    await waitFor("a checkpoint", async () => (await client.exists("ai:backfill:cursor")) === 1);
    // A replica of a primary that is not there: read-only for good, and it keeps its data.
    await client.call("REPLICAOF", "127.0.0.1", String(freePort()));
    await assertEndsWithinMaxOutage(run);
  } finally {
    client.disconnect();
    await server.stop();
  }
});

Deno.test("cluster: a master demoted mid-run with no master left for its slots ends the run within --max-outage: exit 3", async () => {
  const cluster = await startCluster({ replicas: 1 });
  const client = cluster.client();
  try {
    await seedOldCluster(client, makeJobs(6000));
    const { master, replica } = await masterAndReplica(cluster.nodes);
    const run = spawnCli([
      "--execute",
      "--rps",
      "300",
      "--batch",
      "50",
      "--max-outage",
      String(MAX_OUTAGE_S),
      "--json",
      "--redis-url",
      cluster.url,
    ]);
    await waitFor("copies", () => /migrated [1-9]/.test(run.stderrSoFar()), 60_000);
    // The master stays a replica: its replica takes its slots over, then is killed, and nobody
    // serves those slots any more.
    await redisCli(master.port, "CONFIG", "SET", "cluster-replica-no-failover", "yes");
    assert.match(await redisCli(replica.port, "CLUSTER", "FAILOVER", "TAKEOVER"), /OK/);
    await waitFor("the master demoted", async () => {
      const role = await redisCli(master.port, "ROLE");
      return role.startsWith("slave") && role.includes(String(replica.port));
    });
    await replica.kill();
    await assertEndsWithinMaxOutage(run);
  } finally {
    client.disconnect();
    await cluster.stop();
  }
});

/** A master with slots and its synced replica. */
async function masterAndReplica(
  nodes: RedisServer[],
): Promise<{ master: RedisServer; replica: RedisServer }> {
  for (const master of nodes) {
    if (!(await redisCli(master.port, "ROLE")).startsWith("master")) continue;
    for (const replica of nodes) {
      const info = await redisCli(replica.port, "INFO", "replication");
      if (info.includes(`master_port:${master.port}`) && info.includes("master_link_status:up")) {
        return { master, replica };
      }
    }
  }
  throw new Error("no master with a synced replica");
}

Deno.test("LossClock: a READONLY reply marks its server lost until it runs a write script again; a closed connection's mark clears at its next reply", async () => {
  const server = await startRedis();
  const name = `127.0.0.1:${server.port}`;
  const clock = new LossClock();
  const client = new Redis({ port: server.port, lazyConnect: true, maxRetriesPerRequest: 0 });
  client.on("error", () => {});
  clock.watch(client, () => name);
  const write = () => client.eval("return redis.call('SET', KEYS[1], '1')", 1, "k");
  try {
    await client.connect();
    await write();
    await client.call("REPLICAOF", "127.0.0.1", String(freePort()));
    const demoted = performance.now();
    await assert.rejects(write, /READONLY/);
    const since = clock.lostSince(name);
    assert.ok(since !== undefined && since >= demoted, `lost since ${since}`);
    // Reads, and a read-only script, work on a replica: it is still no primary.
    await client.ping();
    await client.call("EVAL_RO", "return redis.call('GET', KEYS[1])", 1, "k");
    assert.equal(clock.lostSince(name), since);
    await client.call("REPLICAOF", "NO", "ONE");
    await write();
    assert.equal(clock.lostSince(name), undefined);
    // A connection closed for good (no reconnect to clear it) marks the server; the server's
    // next reply on another connection clears it.
    const other = new Redis({ port: server.port, lazyConnect: true });
    clock.watch(other, () => name);
    await other.connect();
    other.disconnect();
    await waitFor("the close", () => clock.lostSince(name) !== undefined);
    await client.ping();
    assert.equal(clock.lostSince(name), undefined);
  } finally {
    client.disconnect();
    await server.stop();
  }
});

/** The run ends with exit 3 for the outage, within --max-outage (and the slack) from now. */
async function assertEndsWithinMaxOutage(run: { done: Promise<CliResult> }): Promise<void> {
  const demoted = performance.now();
  const result = await run.done;
  const seconds = (performance.now() - demoted) / 1000;
  assert.equal(result.code, 3, result.stderr);
  assert.match(result.stderr, /for longer than --max-outage/);
  assert.ok(
    seconds < MAX_OUTAGE_S + SLACK_S,
    `ended ${seconds.toFixed(1)} s after the demotion:\n${result.stderr.slice(-4000)}`,
  );
  assert.doesNotMatch(result.stderr, /internal error/);
}
