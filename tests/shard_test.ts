/**
 * `--shard I/N` without a cluster of six: the flag's parsing, the pure master order, the refusal
 * on a standalone server, a runner with no master, and `backfill status` over several shards.
 */
import assert from "node:assert/strict";
import { parseCommand } from "../src/cli/args.ts";
import {
  type RunStatus,
  STATUS_TTL_MS,
  statusKey,
  statusShardsKey,
  writeStatus,
} from "../src/control/remote.ts";
import { UsageError } from "../src/errors.ts";
import { parseShard, pickShard, type Shard } from "../src/redis/shard.ts";
import { runCli, runJson } from "./support/cli.ts";
import { countClusterKeys, startCluster } from "./support/cluster.ts";
import { withRedis } from "./support/redis_server.ts";
import { writeCounter } from "./support/seed.ts";

Deno.test("--shard: I/N with 0 <= I < N, else a one-line usage error", () => {
  assert.deepEqual(parseShard("2/3"), { index: 2, count: 3 });
  assert.deepEqual(parseShard("0/1"), { index: 0, count: 1 });
  for (const bad of ["3/3", "0/0", "-1/3", "1", "a/b", "1/3/4", "1.5/3", "", "0/100000"]) {
    assert.throws(() => parseShard(bad), UsageError, bad);
  }
  const run = parseCommand(["--execute", "--shard", "1/4"]);
  assert.ok(run.kind === "run");
  assert.deepEqual(run.options.shard, { index: 1, count: 4 });
  const whole = parseCommand(["--execute"]);
  assert.ok(whole.kind === "run");
  assert.deepEqual(whole.options.shard, { index: 0, count: 1 });
});

Deno.test("shard order: by first slot, slot-less masters last; I takes every N-th", () => {
  const masters = [
    { nodeId: "f", firstSlot: 10923 },
    { nodeId: "e" }, // no slots
    { nodeId: "a", firstSlot: 5461 },
    { nodeId: "c", firstSlot: 0 },
    { nodeId: "b" },
  ];
  const ids = (shard: Shard) => pickShard(masters, shard).map((m) => m.nodeId);
  assert.deepEqual(ids({ index: 0, count: 1 }), ["c", "a", "f", "b", "e"]);
  assert.deepEqual(ids({ index: 0, count: 2 }), ["c", "f", "e"]);
  assert.deepEqual(ids({ index: 1, count: 2 }), ["a", "b"]);
  assert.deepEqual(ids({ index: 6, count: 7 }), []);
  // A promoted replica has another node id but the same slots: the same shard takes it.
  const failedOver = masters.map((m) => m.nodeId === "a" ? { ...m, nodeId: "z" } : m);
  assert.deepEqual(pickShard(failedOver, { index: 1, count: 2 }).map((m) => m.nodeId), ["z", "b"]);
});

Deno.test("--shard: bad values and shards on a standalone server exit 2, nothing written", async () => {
  await withRedis(async (server, client) => {
    await client.hset("ai:jobs:j1", { workspace_id: "ws-a" });
    const before = await writeCounter(client);
    for (const shard of ["3/3", "x"]) {
      const bad = await runCli(["--execute", "--shard", shard, "--redis-url", server.url]);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /^error: --shard must be I\/N with whole numbers 0 <= I < N/m);
    }
    const standalone = await runCli(["--execute", "--shard", "1/2", "--redis-url", server.url]);
    assert.equal(standalone.code, 2, standalone.stderr);
    assert.match(standalone.stderr, /error: --shard 1\/2 needs a Redis Cluster; a standalone/);
    assert.equal(await writeCounter(client), before, "nothing written");
    // 0/1 is the whole server: the ordinary run, with the ordinary lock.
    const whole = await runJson(["--execute", "--shard", "0/1", "--redis-url", server.url]);
    assert.equal(whole.code, 0, whole.stderr);
    assert.equal(whole.summary.migrated, 1);
  });
});

Deno.test("--shard: an idle runner exits 0 at once; a run without --shard needs every lock", async () => {
  const cluster = await startCluster({ masters: 3 });
  const client = cluster.client();
  try {
    await client.hset("ai:jobs:j1", { workspace_id: "ws-a" });
    const idle = await runJson(["--execute", "--shard", "3/4", "--redis-url", cluster.url]);
    assert.equal(idle.code, 0, idle.stderr);
    assert.match(idle.stderr, /shard 3\/4: 0 of 3 masters/);
    assert.match(idle.stderr, /shard 3\/4 has no master \(more runners than masters\)/);
    assert.equal(idle.summary.scanned, 0);
    assert.equal(idle.summary.completed, true);
    const busy = await runJson(["--execute", "--shard", "0/4", "--redis-url", cluster.url]);
    assert.equal(busy.code, 0, busy.stderr);
    assert.match(busy.stderr, /shard 0\/4: 1 of 3 masters: 127\.0\.0\.1:\d+ \([0-9a-f]{40}\)/);
    assert.match(busy.stderr, /holding \{ai:backfill\}:lock:[0-9a-f]{40} as /);
    // A run without --shard needs every master's lock: one held by a shard runner refuses it.
    const held = `{ai:backfill}:lock:${(busy.stderr.match(/\(([0-9a-f]{40})\)/))![1]}`;
    await client.set(held, JSON.stringify({ host: "pod-0", pid: 7, started: "x", token: "t" }));
    await client.pexpire(held, 60_000);
    const nodes = cluster.nodeClients();
    const copiesBefore = await countClusterKeys(nodes, "ai:job:*");
    const whole = await runCli(["--execute", "--wait-lock", "0", "--redis-url", cluster.url]);
    assert.equal(whole.code, 4, whole.stderr);
    assert.ok(whole.stderr.includes(`another backfill holds the lock ${held}: pod-0 pid 7`));
    assert.equal(await countClusterKeys(nodes, "ai:job:*"), copiesBefore, "nothing copied");
    assert.equal(await countClusterKeys(nodes, "{ai:backfill}:lock:*"), 1, "none left behind");
    for (const node of nodes) node.disconnect();
  } finally {
    client.disconnect();
    await cluster.stop();
  }
});

function status(overrides: Partial<RunStatus>): Omit<RunStatus, "updated_at"> {
  return {
    mode: "execute",
    phase: "running",
    holder: { host: "pod-0", pid: 1 },
    started_at: new Date().toISOString(),
    rate: { rps: 500, cap_rps: 500, paused: false, throttled: [] },
    counts: { scanned: 100, migrated: 90 },
    estimated_total: 1000,
    eta_seconds: 10,
    cursors: { "10.0.0.1:6379": "42" },
    ...overrides,
  };
}

Deno.test("status lists every shard's runner and a total, in text and JSON", async () => {
  await withRedis(async (server, client) => {
    await writeStatus(client, "p", status({}), { index: 0, count: 3 });
    await writeStatus(
      client,
      "p",
      status({ holder: { host: "pod-1", pid: 2 }, counts: { scanned: 50, migrated: 50 } }),
      { index: 1, count: 3 },
    );
    await writeStatus(client, "p", status({ holder: { host: "pod-2", pid: 3 } }), {
      index: 2,
      count: 3,
    });
    assert.equal(statusKey("p", { index: 1, count: 3 }), "p:status:1/3");
    assert.deepEqual((await client.smembers(statusShardsKey("p"))).sort(), ["0/3", "1/3", "2/3"]);
    // Shard 2's runner died 10 s ago: its status has aged (age is read from the key's TTL).
    await client.pexpire("p:status:2/3", STATUS_TTL_MS - 10_000);
    const before = await writeCounter(client);

    const text = await runCli(["status", "--progress-key", "p", "--redis-url", server.url]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^shard 0\/3: active: execute, holder pod-0 pid 1, updated/m);
    assert.match(text.stdout, /^shard 1\/3: active: execute, holder pod-1 pid 2, updated/m);
    assert.match(text.stdout, /^shard 2\/3: stale: last update 1\d s ago \(holder pod-2 pid 3\)/m);
    assert.match(
      text.stdout,
      /^total: 3 runners \(2 active, 1 stale, 0 finished\); scanned 250 of ~3000 \(8\.3%\); rate 1000\/s; scanned=250 migrated=230\n$/m,
    );

    const json = JSON.parse(
      (await runCli(["status", "--json", "--progress-key", "p", "--redis-url", server.url]))
        .stdout,
    );
    assert.equal(json.state, "active");
    assert.deepEqual(json.runners.map((r: { shard: string }) => r.shard), ["0/3", "1/3", "2/3"]);
    assert.deepEqual(json.runners.map((r: { state: string }) => r.state), [
      "active",
      "active",
      "stale",
    ]);
    assert.deepEqual(json.total, {
      runners: 3,
      active: 2,
      stale: 1,
      finished: 0,
      counts: { scanned: 250, migrated: 230 },
      estimated_total: 3000,
      rps: 1000,
    });
    assert.equal(await writeCounter(client), before, "status writes nothing");
    // One run over everything (no --shard) keeps the one-run output.
    await writeStatus(client, "q", status({}));
    const single = await runCli(["status", "--progress-key", "q", "--redis-url", server.url]);
    assert.match(single.stdout, /^active: execute, holder pod-0 pid 1/);
  });
});
