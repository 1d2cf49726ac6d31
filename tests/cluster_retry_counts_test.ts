/**
 * Counts after a retried call on a Redis Cluster: every master is reached through a delaying
 * proxy (its announced port), and the proxies drop every connection a few times mid-run, so calls
 * that Redis ran lose their replies. The cluster copy retries them (a routed call, the engine's
 * re-read): the new keys their first attempt created are this run's copies, counted `migrated`,
 * never `skipped_exists`.
 */
import assert from "node:assert/strict";
import { type DelayProxy, startDelayProxy } from "../bench/delay_proxy.ts";
import { connectRedis } from "../src/redis/connect.ts";
import { spawnCli, waitFor } from "./support/cli.ts";
import { redisCli, seedOldCluster, startCluster } from "./support/cluster.ts";
import { assertMigrated, makeJobs } from "./support/seed.ts";

Deno.test("cluster: replies lost with the connection: migrated equals the new keys this run created, exactly", async () => {
  const cluster = await startCluster({ masters: 3 });
  const client = cluster.client();
  const proxies: DelayProxy[] = [];
  try {
    const jobs = makeJobs(12_000);
    await seedOldCluster(client, jobs);
    proxies.push(...await announceProxies(cluster.nodes.map((n) => n.port), 20));
    const run = spawnCli([
      "--execute",
      "--rps",
      "0",
      "--batch",
      "500",
      "--max-latency",
      "0",
      "--max-outage",
      "30",
      "--json",
      "--redis-url",
      `redis://127.0.0.1:${proxies[0]!.port}`,
    ]);
    // 20 ms each way and no rate limit: calls are always in flight on every master, and those
    // Redis ran in the last 20 ms before a drop lose their replies.
    let drops = 0;
    const migrating = async () => (await countNew(cluster.nodes.map((n) => n.port))) > 500;
    const waitUntil = Date.now() + 30_000;
    while (!await migrating()) {
      assert.ok(Date.now() < waitUntil, `the run copies:\n${run.stderrSoFar()}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    // Drops all through the run (calls of every step are in flight on every master by then).
    for (; drops < 12 && !/"completed"/.test(run.stderrSoFar()); drops++) {
      for (const proxy of proxies) proxy.drop();
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    const result = await run.done;
    assert.equal(result.code, 0, result.stderr);
    assert.ok(drops >= 3, `connections dropped mid-run (${drops})`);
    const summary = JSON.parse(result.stdout);
    assert.equal(summary.errors, 0, JSON.stringify(summary));
    assert.equal(summary.completed, true);
    // No job had a new key before the run: every one is a copy this run made.
    assert.equal(summary.skipped_exists, 0, JSON.stringify(summary));
    assert.equal(summary.migrated, jobs.length, JSON.stringify(summary));
    await assertMigrated(client, jobs);
  } finally {
    client.disconnect();
    await Promise.all(proxies.map((p) => p.close()));
    await cluster.stop();
  }
});

Deno.test("cluster: a routed call whose connection closes before its reply fails; the client never sends it again", async () => {
  const cluster = await startCluster({ masters: 3 });
  const proxies = await announceProxies(cluster.nodes.map((n) => n.port), 250);
  const target = await connectRedis([`redis://127.0.0.1:${proxies[0]!.port}`]);
  // Direct connections (around the proxies) see the script run at once, also on a busy machine.
  const direct = cluster.nodeClients();
  try {
    const key = "resend:probe";
    await target.client.get(key); // connects to the key's master first
    // 250 ms each way: the script runs ~250 ms after the send; its reply would come ~250 ms later.
    const call = target.client.call("EVAL", "return redis.call('INCR', KEYS[1])", 1, key);
    const settled = call.then(() => "replied", () => "failed");
    // The key's master answers; the others redirect (MOVED), read as null.
    const runs = () => Promise.all(direct.map((node) => node.get(key).catch(() => null)));
    await waitFor("the script to run", async () => (await runs()).includes("1"), 5_000);
    for (const proxy of proxies) proxy.drop();
    assert.equal(await settled, "failed", "the call whose reply was lost fails");
    // A resend (ioredis's own retry of a closed connection) would run the script a second time.
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    assert.deepEqual((await runs()).filter((r) => r !== null), ["1"], "the script ran once");
  } finally {
    direct.forEach((node) => node.disconnect());
    await target.close();
    await Promise.all(proxies.map((p) => p.close()));
    await cluster.stop();
  }
});

/** New keys over the masters (DBSIZE would count the old keys too). */
async function countNew(ports: number[]): Promise<number> {
  let total = 0;
  for (const port of ports) {
    const out = await redisCli(port, "EVAL", "return #redis.call('KEYS', 'ai:job:*')", "0");
    total += Number(out.trim()) || 0;
  }
  return total;
}

/**
 * A delaying proxy (`delayMs` each way) before each node, announced as the node's port in
 * CLUSTER SLOTS, so clients reach every master through its proxy.
 */
async function announceProxies(ports: number[], delayMs: number): Promise<DelayProxy[]> {
  const proxies = ports.map((port) => startDelayProxy({ targetPort: port, delayMs }));
  for (const [i, port] of ports.entries()) {
    await redisCli(port, "CONFIG", "SET", "cluster-announce-port", String(proxies[i]!.port));
  }
  const announced = proxies.map((p) => `${p.port}`);
  await waitFor("every node to announce the proxies", async () => {
    const views = await Promise.all(ports.map((port) => redisCli(port, "CLUSTER", "SLOTS")));
    return views.every((v) => announced.every((port) => v.includes(port)));
  });
  return proxies;
}
