/**
 * The cluster copy under the application's concurrent dual-writes, expiring wide jobs and huge
 * jobs, on a real 3-master cluster.
 */
import assert from "node:assert/strict";
import type { Buffer } from "node:buffer";
import { connectRedis } from "../src/redis/connect.ts";
import type { RedisTarget } from "../src/redis/target.ts";
import type { Cluster } from "../src/redis/ioredis.ts";
import { strategyFor } from "../src/migrate/select.ts";
import { SCRIPTS } from "../src/migrate/cluster/scripts.ts";
import { KeySchema } from "../src/schema.ts";
import { newKeyFor, oldKeyFor, parseNewKey } from "./support/keys.ts";
import { cliCommand, runJson } from "./support/cli.ts";
import { redisCli, startCluster, type TestCluster } from "./support/cluster.ts";

async function withCluster(
  fn: (cluster: TestCluster, client: Cluster, target: RedisTarget) => Promise<void>,
) {
  const cluster = await startCluster();
  const client = cluster.client();
  let target: RedisTarget | undefined;
  try {
    target = await connectRedis([cluster.url]);
    await fn(cluster, client, target);
  } finally {
    await target?.close();
    client.disconnect();
    await cluster.stop();
  }
}

/** Port of the master serving `key`. */
async function portOf(client: Cluster, key: Buffer): Promise<number> {
  const slot = Number(await client.call("CLUSTER", "KEYSLOT", key));
  const ranges = await client.cluster("SLOTS") as unknown as [number, number, [string, number]][];
  return ranges.find(([start, end]) => slot >= start && slot <= end)![2][1];
}

function wideFields(count: number, tag: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (let i = 0; i < count; i++) fields[`f${i}`] = `${tag}-${i}`;
  return fields;
}

/** Every new key equals its old key (fields, absolute expiry within 2 s); no stray new key. */
async function audit(cluster: TestCluster): Promise<string[]> {
  const problems: string[] = [];
  for (const node of cluster.nodes) {
    const direct = node.client();
    try {
      let cursor = "0";
      do {
        const [next, keys] = await direct.scanBuffer(cursor, "MATCH", "ai:job:*", "COUNT", 500);
        cursor = next.toString();
        for (const key of keys) problems.push(...await auditNewKey(cluster, key));
      } while (cursor !== "0");
    } finally {
      direct.disconnect();
    }
  }
  return problems;
}

async function auditNewKey(cluster: TestCluster, key: Buffer): Promise<string[]> {
  const client = auditClient(cluster);
  const parsed = parseNewKey(key)!;
  const oldKey = oldKeyFor(parsed.jobId);
  const [oldFields, newFields, oldAt, newAt] = await Promise.all([
    client.hgetall(oldKey),
    client.hgetall(key),
    client.pexpiretime(oldKey),
    client.pexpiretime(key),
  ]);
  const name = key.toString();
  if (Object.keys(oldFields).length === 0) return [`${name}: no old key (resurrected)`];
  if (oldFields.workspace_id !== parsed.workspace) return [`${name}: under another workspace`];
  const out: string[] = [];
  try {
    assert.deepEqual(newFields, oldFields);
  } catch {
    out.push(`${name}: fields differ`);
  }
  const ttlOk = oldAt === newAt || (oldAt > 0 && newAt > 0 && Math.abs(oldAt - newAt) < 2000);
  if (!ttlOk) out.push(`${name}: expiry ${newAt} vs old ${oldAt}`);
  return out;
}

let shared: Cluster | undefined;
function auditClient(cluster: TestCluster): Cluster {
  shared ??= cluster.client();
  return shared;
}

/** One random application dual-write: the old key first, then the new key, as the app does. */
async function appWrite(client: Cluster, id: string, rng: () => number): Promise<void> {
  const oldKey = oldKeyFor(id);
  const ws = await client.hget(oldKey, "workspace_id");
  if (ws === null) return;
  const newKey = newKeyFor(ws, id);
  const at = Date.now() + 3_600_000 + Math.floor(rng() * 1000);
  switch (Math.floor(rng() * 7)) {
    case 0: // the job's secret is removed from both schemas
      await client.hdel(oldKey, "secret");
      await client.hdel(newKey, "secret");
      break;
    case 1: // the TTL is extended
      await client.pexpireat(oldKey, at);
      await client.pexpireat(newKey, at);
      break;
    case 2: // the TTL is removed
      await client.persist(oldKey);
      await client.persist(newKey);
      break;
    case 3: { // the job moves to another workspace
      const to = ws === "ws-a" ? "ws-b" : "ws-a";
      await client.hset(oldKey, "workspace_id", to);
      const fields = await client.hgetall(oldKey);
      const expiry = await client.pexpiretime(oldKey);
      const moved = newKeyFor(to, id);
      await client.multi().del(moved).hset(moved, fields).exec();
      if (expiry > 0) await client.pexpireat(moved, expiry);
      await client.del(newKey);
      break;
    }
    case 4: { // the job is rewritten without its old-only field
      const fields = { workspace_id: ws, status: "rewritten", payload: `r-${id}` };
      await client.multi().del(oldKey).hset(oldKey, fields).exec();
      await client.multi().del(newKey).hset(newKey, fields).exec();
      break;
    }
    case 5: // the job is deleted
      await client.del(oldKey);
      await client.del(newKey);
      break;
    default: // a field is updated
      await client.hset(oldKey, "status", `s${Math.floor(rng() * 100)}`);
      await client.hset(newKey, "status", await client.hget(oldKey, "status") ?? "");
  }
}

Deno.test("cluster copy: a random concurrent dual-writer leaves every new key equal to its old key", async () => {
  await withCluster(async (cluster, client) => {
    const ids = Array.from({ length: 2000 }, (_, i) => `job-${i}`);
    for (let i = 0; i < ids.length; i += 200) {
      await Promise.all(
        ids.slice(i, i + 200).map(async (id, j) => {
          const wide = (i + j) % 250 === 7;
          const fields = wide ? wideFields(50_000, id) : { status: "queued", old_only: "x" };
          await client.hset(oldKeyFor(id), {
            workspace_id: (i + j) % 2 ? "ws-a" : "ws-b",
            secret: "s",
            ...fields,
          });
          if ((i + j) % 3 === 0) await client.pexpire(oldKeyFor(id), 3_600_000 + j);
        }),
      );
    }
    const child = cliCommand([
      "--execute",
      "--rps",
      "1500",
      "--batch",
      "100",
      "--json",
      "--redis-url",
      cluster.url,
    ])
      .spawn();
    let running = true;
    const done = child.output().finally(() => running = false);
    let seed = 42;
    const rng = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    let writes = 0;
    // Each writer owns a quarter of the jobs, as an application serializes the writes of one job:
    // two writers moving and deleting the same job at once would leave an orphan by themselves.
    const writer = async (part: number) => {
      const mine = ids.filter((_, i) => i % 4 === part);
      while (running) {
        await appWrite(client, mine[Math.floor(rng() * mine.length)]!, rng);
        writes++;
      }
    };
    await Promise.all([writer(0), writer(1), writer(2), writer(3)]);
    const output = await done;
    const stderr = new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 0, stderr);
    assert.ok(writes > 500, `the writer overlapped the run (${writes} writes)`);
    // Partial new keys the application wrote after the run had scanned their job are completed
    // by a second run; it adds only missing fields, so what the first run got wrong remains.
    const second = await runJson(["--execute", "--rps", "0", "--redis-url", cluster.url]);
    assert.equal(second.code, 0, second.stderr);
    const problems = await audit(cluster);
    shared?.disconnect();
    shared = undefined;
    assert.deepEqual(problems.slice(0, 20), [], `${problems.length} problems`);
    assert.deepEqual(await intentKeys(cluster), [], "every write's intent settled");
  });
});

/** Job ids whose new key (under `ws`) is served by another master than their old key. */
async function idsAcrossNodes(client: Cluster, ws: string, count: number, from = 0) {
  const ids: string[] = [];
  for (let i = from; ids.length < count; i++) {
    const id = `job-${i}`;
    const [a, b] = await Promise.all([
      portOf(client, oldKeyFor(id)),
      portOf(client, newKeyFor(ws, id)),
    ]);
    if (a !== b) ids.push(id);
  }
  return ids;
}

Deno.test("cluster copy: an expiring wide job whose new key's node is paused never comes back immortal", async () => {
  await withCluster(async (_cluster, client, target) => {
    const ids = await idsAcrossNodes(client, "ws-a", 1);
    const id = ids[0]!;
    await client.hset(oldKeyFor(id), { workspace_id: "ws-a", ...wideFields(150, id) });
    await client.pexpire(oldKeyFor(id), 2500);
    const strategy = strategyFor(target, new KeySchema());
    await strategy.init();
    const paused = await portOf(client, newKeyFor("ws-a", id));
    await redisCli(paused, "CLIENT", "PAUSE", "5000", "WRITE");
    const results = await strategy.migrate([oldKeyFor(id)], { dryRun: false });
    assert.deepEqual(results.map((r) => r.outcome), ["skipped_gone"]);
    await new Promise((resolve) => setTimeout(resolve, 600));
    assert.equal(await client.exists(oldKeyFor(id)), 0, "the old key expired");
    assert.equal(await client.exists(newKeyFor("ws-a", id)), 0, "no immortal copy");
  });
});

Deno.test("cluster copy: a 100k-field job is copied whole and its sub-batch migrates", async () => {
  await withCluster(async (_cluster, client, target) => {
    // Old keys of one master, as a SCAN batch holds them.
    const home = await portOf(client, oldKeyFor("job-0"));
    const ids: string[] = [];
    for (let i = 0; ids.length < 60; i++) {
      if (await portOf(client, oldKeyFor(`job-${i}`)) === home) ids.push(`job-${i}`);
    }
    const huge = ids[30]!;
    for (const id of ids) {
      const fields = id === huge ? wideFields(100_000, id) : { status: "done", payload: id };
      await client.hset(oldKeyFor(id), { workspace_id: "ws-c", ...fields });
    }
    await client.pexpire(oldKeyFor(huge), 3_600_000);
    const strategy = strategyFor(target, new KeySchema());
    await strategy.init();
    const results = await strategy.migrate(ids.map((id) => oldKeyFor(id)), { dryRun: false });
    assert.deepEqual(
      results.map((r) => r.outcome),
      ids.map(() => "migrated"),
    );
    for (const id of ids) {
      const [oldFields, newFields] = await Promise.all([
        client.hgetall(oldKeyFor(id)),
        client.hgetall(newKeyFor("ws-c", id)),
      ]);
      assert.deepEqual(newFields, oldFields, id);
    }
    const [oldAt, newAt] = await Promise.all([
      client.pexpiretime(oldKeyFor(huge)),
      client.pexpiretime(newKeyFor("ws-c", huge)),
    ]);
    assert.equal(newAt, oldAt, "the exact absolute expiry");
  });
});

/** The intent hashes left on any node (none once every write is settled). */
async function intentKeys(cluster: TestCluster): Promise<string[]> {
  const found: string[] = [];
  for (const node of cluster.nodes) {
    found.push(...(await redisCli(node.port, "--scan", "--pattern", "*:intents*")).split("\n"));
  }
  return found.filter((key) => key !== "");
}

/** Script calls (EVAL*, EVALSHA*) each node served since its stats were reset. */
async function scriptCallsPerNode(cluster: TestCluster): Promise<Map<number, number>> {
  const calls = new Map<number, number>();
  for (const node of cluster.nodes) {
    const direct = node.client();
    try {
      const stats = await direct.info("commandstats");
      let sum = 0;
      for (const m of stats.matchAll(/^cmdstat_eval(?:sha)?(?:_ro)?:calls=(\d+)/gm)) {
        sum += Number(m[1]);
      }
      calls.set(node.port, sum);
    } finally {
      direct.disconnect();
    }
  }
  return calls;
}

async function resetStats(cluster: TestCluster): Promise<void> {
  await Promise.all(cluster.nodes.map((node) => redisCli(node.port, "CONFIG", "RESETSTAT")));
}

Deno.test("cluster copy: node-local jobs take one script call; cross-node ones READ, WRITE and SETTLE per node, RECHECK", async () => {
  await withCluster(async (cluster, client, target) => {
    const home = await portOf(client, oldKeyFor("job-0"));
    const local: string[] = [];
    const remote: string[] = [];
    for (let i = 0; local.length < 20 || remote.length < 20; i++) {
      const id = `job-${i}`;
      if (await portOf(client, oldKeyFor(id)) !== home) continue;
      const there = await portOf(client, newKeyFor("ws-a", id)) !== home;
      const list = there ? remote : local;
      if (list.length < 20) list.push(id);
    }
    for (const id of [...local, ...remote]) {
      await client.hset(oldKeyFor(id), { workspace_id: "ws-a", status: "done", payload: id });
    }
    const strategy = strategyFor(target, new KeySchema());
    await strategy.init();
    // Load the scripts on every node first, so that no NOSCRIPT retry is counted.
    for (const node of cluster.nodes) {
      for (const script of Object.values(SCRIPTS)) {
        await redisCli(node.port, "SCRIPT", "LOAD", script.lua);
      }
    }
    await resetStats(cluster);
    const localResults = await strategy.migrate(local.map((id) => oldKeyFor(id)), {
      dryRun: false,
    });
    assert.deepEqual(localResults.map((r) => r.outcome), local.map(() => "migrated"));
    const afterLocal = await scriptCallsPerNode(cluster);
    assert.equal(afterLocal.get(home), 1, "one call on the old keys' master");
    assert.equal([...afterLocal.values()].reduce((a, b) => a + b), 1, "and none elsewhere");

    await resetStats(cluster);
    const remoteResults = await strategy.migrate(remote.map((id) => oldKeyFor(id)), {
      dryRun: false,
    });
    assert.deepEqual(remoteResults.map((r) => r.outcome), remote.map(() => "migrated"));
    const afterRemote = await scriptCallsPerNode(cluster);
    const destinations = new Set<number>();
    for (const id of remote) destinations.add(await portOf(client, newKeyFor("ws-a", id)));
    assert.equal(afterRemote.get(home), 2, "READ and RECHECK on the old keys' master");
    for (const port of destinations) {
      assert.equal(afterRemote.get(port), 2, "one WRITE and one SETTLE per node");
    }
    assert.deepEqual(await intentKeys(cluster), [], "every intent settled");
    for (const id of [...local, ...remote]) {
      assert.deepEqual(
        await client.hgetall(newKeyFor("ws-a", id)),
        await client.hgetall(oldKeyFor(id)),
      );
    }
  });
});
