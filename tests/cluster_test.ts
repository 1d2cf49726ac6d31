/**
 * Redis Cluster through the real CLI: a 3-master cluster of real redis-server processes.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { connectRedis } from "../src/redis/connect.ts";
import type { Cluster, Redis } from "../src/redis/ioredis.ts";
import { strategyFor } from "../src/migrate/select.ts";
import { KeySchema } from "../src/schema.ts";
import { oldKeyFor } from "./support/keys.ts";
import { VERIFY_DEFAULTS } from "../src/defaults.ts";
import { runVerify } from "../src/verify/run.ts";
import { cliCommand, runJson, waitFor } from "./support/cli.ts";
import {
  countClusterKeys,
  redisCli,
  seedOldCluster,
  startCluster,
  type TestCluster,
  writeCounters,
} from "./support/cluster.ts";
import { freePort } from "./support/redis_server.ts";
import { assertMigrated, makeJobs, newKey, type TestJob } from "./support/seed.ts";

async function withCluster(
  fn: (cluster: TestCluster, client: Cluster, nodes: Redis[]) => Promise<void>,
  options: Parameters<typeof startCluster>[0] = {},
) {
  const cluster = await startCluster(options);
  const client = cluster.client();
  const nodes = cluster.nodeClients();
  try {
    await fn(cluster, client, nodes);
  } finally {
    client.disconnect();
    for (const node of nodes) node.disconnect();
    await cluster.stop();
  }
}

/** Every job's new key has the old key's fields, and its TTL (within 2 s) or none. */

Deno.test("cluster: dry-run writes nothing on any node and classifies like execute", async () => {
  await withCluster(async (cluster, client, nodes) => {
    const jobs = makeJobs(600);
    await seedOldCluster(client, jobs);
    // job-0: partial dual-write (lacks `attempt` and the TTL) → repaired; job-1: complete → exists.
    await client.hset(newKey(jobs[0]!), { workspace_id: "ws-a", status: "queued", payload: "p0" });
    await client.hset(newKey(jobs[1]!), { ...jobs[1]!.fields, workspace_id: "ws-b" });
    await client.set("ai:jobs:not-a-hash", "x");
    await client.hset("ai:jobs:bad-ws", { workspace_id: "has space" });
    await client.hset("ai:jobs:no-ws", { status: "queued" });
    const before = await writeCounters(nodes);
    // Two seeds, the first one dead: the second one is used.
    const { code, summary, stderr } = await runJson([
      "--dry-run",
      "--rps",
      "0",
      "--batch",
      "100",
      "--redis-url",
      `redis://127.0.0.1:${freePort()},${cluster.url}`,
    ]);
    assert.equal(code, 0, stderr);
    assert.match(stderr, /\(cluster\)/);
    assert.deepEqual(
      { ...summary, duration_seconds: 0 },
      {
        mode: "dry-run",
        scanned: 603,
        migrated: 598,
        repaired: 1,
        skipped_exists: 1,
        skipped_invalid: 3,
        skipped_gone: 0,
        filtered: 0,
        errors: 0,
        duration_seconds: 0,
        completed: true,
        cursor: summary.cursor,
        // The preflight ran on every master (read-only): the user may run everything.
        preflight: { ok: true, missing: [] },
      },
    );
    assert.deepEqual(await writeCounters(nodes), before, "no write on any node");
    assert.equal(await countClusterKeys(nodes, "ai:job:*"), 2);
  });
});

Deno.test("cluster: execute copies fields and TTLs on every node; a rerun skips all", async () => {
  await withCluster(async (cluster, client, nodes) => {
    const jobs = makeJobs(1500);
    await seedOldCluster(client, jobs);
    const first = await runJson([
      "--execute",
      "--rps",
      "0",
      "--batch",
      "200",
      "--redis-url",
      cluster.url,
    ]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.summary.migrated, 1500);
    assert.equal(first.summary.errors, 0);
    assert.equal(first.summary.completed, true);
    await assertMigrated(client, jobs);
    assert.equal(await countClusterKeys(nodes, "ai:jobs:*"), 1500, "old keys untouched");
    // The migration's running totals stay (until --reset-progress), the run's last status (it
    // expires by itself: "the last run finished N s ago") and its call records (they expire by
    // themselves, one per master); nothing else.
    const records = await countClusterKeys(nodes, "ai:backfill:calls:*");
    assert.ok(records <= 3, `call records: ${records}`);
    for (const node of nodes) {
      for (const key of await node.keys("ai:backfill:calls:*")) {
        const pttl = await node.pttl(key);
        assert.ok(pttl > 0 && pttl <= 3_600_000, `${key} expires within the hour: ${pttl}`);
      }
    }
    assert.equal(
      await countClusterKeys(nodes, "*backfill*") - records,
      2,
      "checkpoints cleared, lock released",
    );
    assert.equal(await client.exists("{ai:backfill}:totals"), 1);
    assert.ok((await client.pttl("ai:backfill:status")) > 0, "the last status expires");

    assert.doesNotMatch(first.stderr, /call_clock/);

    // The rerun times its calls (the SCANs) on the client, as on a server that freezes time in
    // scripts: the same answer, and one line that names the masters.
    const second = await runJson([
      "--execute",
      "--rps",
      "0",
      "--call-clock",
      "client",
      "--redis-url",
      cluster.url,
    ]);
    assert.equal(second.code, 0, second.stderr);
    assert.equal(second.summary.migrated, 0);
    assert.equal(second.summary.skipped_exists, 1500);
    assert.match(
      second.stderr,
      /call_clock: script calls on 3 master\(s\) are timed on the client/,
    );
  });
});

/** Checkpoint cursors stored per master: `{ai:backfill}:cursor:<node-id>` → cursor. */
async function storedCursors(client: Cluster, nodes: Redis[]): Promise<Map<string, string>> {
  const cursors = new Map<string, string>();
  for (const node of nodes) {
    const id = String(await node.call("CLUSTER", "MYID"));
    const cursor = await client.get(`{ai:backfill}:cursor:${id}`);
    if (cursor !== null) cursors.set(id, cursor);
  }
  return cursors;
}

Deno.test("cluster: kill -9 mid-run, then resume from the per-node checkpoints", async () => {
  await withCluster(async (cluster, client, nodes) => {
    const jobs = makeJobs(1500);
    await seedOldCluster(client, jobs);
    const child = cliCommand([
      "--execute",
      "--rps",
      "300",
      "--batch",
      "50",
      "--redis-url",
      cluster.url,
    ]).spawn();
    try {
      // Every master has stored a cursor: all three scans are under way.
      await waitFor(
        "a checkpoint on every master",
        async () => (await storedCursors(client, nodes)).size === 3,
      );
    } finally {
      child.kill("SIGKILL");
      await child.output();
    }
    const saved = await storedCursors(client, nodes);
    assert.equal(saved.size, 3);
    const copied = await countClusterKeys(nodes, "ai:job:*");
    assert.ok(copied > 0 && copied < 1500, `${copied} copied before the kill`);
    // The dead run's locks (one per master) would expire by itself within 30 s; don't wait.
    const locks = [...saved.keys()].map((id) => `{ai:backfill}:lock:${id}`);
    assert.equal(await client.del(...locks), 3);

    const resumed = await runJson([
      "--execute",
      "--rps",
      "0",
      "--batch",
      "50",
      "--redis-url",
      cluster.url,
    ]);
    assert.equal(resumed.code, 0, resumed.stderr);
    for (const [id, cursor] of saved) {
      assert.match(
        resumed.stderr,
        new RegExp(
          `Resuming from stored cursor=${cursor}, last_job=job-\\d+ on 127\\.0\\.0\\.1:\\d+`,
        ),
        id,
      );
    }
    assert.equal(resumed.summary.errors, 0);
    // Nothing re-copied from scratch: each node re-reads at most its last unfinished batch.
    assert.equal(Number(resumed.summary.migrated), 1500 - copied);
    assert.ok(Number(resumed.summary.scanned) < 1500 - copied + 3 * 50 * 2);
    await assertMigrated(client, jobs);
    assert.equal((await storedCursors(client, nodes)).size, 0, "finished scans clear the cursors");
  });
});

Deno.test("cluster: a master restarted mid-run (new run_id) is rescanned from cursor 0", async () => {
  await withCluster(async (cluster, client, nodes) => {
    const jobs = makeJobs(1500);
    await seedOldCluster(client, jobs);
    const child = cliCommand([
      "--execute",
      "--rps",
      "300",
      "--batch",
      "50",
      "--json",
      "--redis-url",
      cluster.url,
    ]).spawn();
    let output: Deno.CommandOutput;
    try {
      await waitFor(
        "a checkpoint on every master",
        async () => (await storedCursors(client, nodes)).size === 3,
      );
      const restarted = cluster.nodes[0]!;
      await restarted.kill();
      await restarted.start();
      output = await child.output();
    } catch (error) {
      child.kill("SIGKILL");
      await child.output();
      throw error;
    }
    const stderr = new TextDecoder().decode(output.stderr);
    const summary = JSON.parse(new TextDecoder().decode(output.stdout) || "{}");
    assert.equal(output.code, 0, stderr);
    assert.match(
      stderr,
      new RegExp(
        `Redis at 127\\.0\\.0\\.1:${
          cluster.nodes[0]!.port
        } restarted or failed over \\(new run_id\\).*rescanning from cursor 0`,
      ),
    );
    assert.equal(summary.errors, 0);
    await cluster.waitHealthy();
    await assertMigrated(client, jobs);
  }, { aof: true });
});

Deno.test("cluster: a checkpoint of a master restarted between runs is not trusted", async () => {
  await withCluster(async (cluster, client, nodes) => {
    const jobs = makeJobs(900);
    await seedOldCluster(client, jobs);
    const first = await runJson([
      "--execute",
      "--rps",
      "0",
      "--batch",
      "20",
      "--max-keys",
      "100",
      "--redis-url",
      cluster.url,
    ]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal((await storedCursors(client, nodes)).size, 3);
    const restarted = cluster.nodes[1]!;
    await restarted.kill();
    await restarted.start();
    await cluster.waitHealthy();
    const second = await runJson(["--execute", "--rps", "0", "--redis-url", cluster.url]);
    assert.equal(second.code, 0, second.stderr);
    assert.match(
      second.stderr,
      new RegExp(
        `Redis at 127\\.0\\.0\\.1:${restarted.port} restarted since the checkpoint \\(run_id changed\\)`,
      ),
    );
    assert.equal((second.stderr.match(/Resuming from stored cursor=/g) ?? []).length, 2);
    assert.equal(second.summary.errors, 0);
    await assertMigrated(client, jobs);
  }, { aof: true });
});

Deno.test("cluster: jobs the app deletes mid-run are not resurrected, its updates not overwritten", async () => {
  await withCluster(async (cluster, client) => {
    const jobs = makeJobs(3000);
    await seedOldCluster(client, jobs);
    const child = cliCommand([
      "--execute",
      "--rps",
      "1500",
      "--batch",
      "100",
      "--json",
      "--redis-url",
      cluster.url,
    ]).spawn();
    const deleted = new Set<number>();
    const updated = new Set<number>();
    let running = true;
    const done = child.output().finally(() => running = false);
    // The application: deletes jobs (old key first, then the new one) and updates others in both
    // schemas, in random order, for as long as the backfill runs.
    const order = [...jobs.keys()].sort(() => Math.random() - 0.5);
    for (let n = 0; running && n < order.length; n++) {
      const i = order[n]!;
      const job = jobs[i]!;
      if (n % 2 === 0) {
        await client.del(oldKeyFor(job.id));
        await client.del(newKey(job));
        deleted.add(i);
      } else {
        await client.hset(oldKeyFor(job.id), "status", "updated-by-app");
        await client.hset(newKey(job), "status", "updated-by-app");
        updated.add(i);
      }
    }
    const output = await done;
    const stderr = new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 0, stderr);
    const summary = JSON.parse(new TextDecoder().decode(output.stdout));
    assert.equal(summary.errors, 0);
    assert.ok(deleted.size > 100, `the writer overlapped the run (${deleted.size} deletes)`);
    for (const i of deleted) {
      assert.equal(await client.exists(newKey(jobs[i]!)), 0, `${jobs[i]!.id} resurrected`);
    }
    for (const i of updated) {
      assert.equal(await client.hget(newKey(jobs[i]!), "status"), "updated-by-app", jobs[i]!.id);
    }
    await assertMigrated(client, jobs.filter((_, i) => !deleted.has(i)));
  });
});

Deno.test("cluster strategy: the app's writes between READ and WRITE are undone and re-read, never copied stale", async () => {
  await withCluster(async (cluster, client) => {
    // Jobs whose new key another master serves than their old key.
    const slotsOf = async (key: Buffer | string) =>
      Number(await client.call("CLUSTER", "KEYSLOT", key));
    const ranges = await client.cluster("SLOTS") as unknown as [number, number, [string, number]][];
    const portOf = async (key: Buffer) => {
      const slot = await slotsOf(key);
      return ranges.find(([start, end]) => slot >= start && slot <= end)![2][1];
    };
    const jobs: (TestJob & { port: number })[] = [];
    for (let i = 0; jobs.length < 3; i++) {
      const job = makeJobs(i + 1, ["ws-a"])[i]!;
      const port = await portOf(newKey(job));
      if (
        port !== await portOf(oldKeyFor(job.id)) && (jobs.length === 0 || port === jobs[0]!.port)
      ) {
        jobs.push({ ...job, port });
      }
    }
    await seedOldCluster(client, jobs);
    await client.hset(newKey(jobs[2]!), { workspace_id: "ws-a", status: "running" });
    const target = await connectRedis([cluster.url]);
    try {
      const strategy = strategyFor(target, new KeySchema());
      await strategy.init();
      // WRITE waits behind the pause; meanwhile the application deletes job-0 and changes job-1.
      await redisCli(jobs[0]!.port, "CLIENT", "PAUSE", "1500", "WRITE");
      const running = strategy.migrate(jobs.map((job) => oldKeyFor(job.id)), { dryRun: false });
      await new Promise((resolve) => setTimeout(resolve, 300));
      await client.del(oldKeyFor(jobs[0]!.id));
      await client.hset(oldKeyFor(jobs[1]!.id), "status", "changed-by-app");
      await client.hdel(oldKeyFor(jobs[1]!.id), "payload");
      const results = await running;
      assert.deepEqual(results, [
        { outcome: "skipped_gone" },
        { outcome: "migrated", workspace: "ws-a" },
        { outcome: "repaired", workspace: "ws-a" },
      ]);
      assert.equal(await client.exists(newKey(jobs[0]!)), 0, "a deleted job is not re-created");
      await assertMigrated(client, [jobs[1]!]);
      assert.equal(await client.hget(newKey(jobs[2]!), "status"), "running", "never overwritten");
      assert.equal(await client.hget(newKey(jobs[2]!), "payload"), jobs[2]!.fields!.payload);
    } finally {
      await target.close();
    }
  });
});

Deno.test("cluster: a reshard mid-run (MOVED/ASK) loses no job and copies each once", async () => {
  await withCluster(async (cluster, client, nodes) => {
    const jobs = makeJobs(3000);
    await seedOldCluster(client, jobs);
    const [from, to] = await Promise.all(
      cluster.nodes.slice(0, 2).map(async (node) =>
        (await redisCli(node.port, "CLUSTER", "MYID")).trim()
      ),
    );
    const probe = await connectRedis([cluster.url]);
    const layoutBefore = await probe.layout!();
    const child = cliCommand([
      "--execute",
      "--rps",
      "600",
      "--batch",
      "50",
      "--json",
      "--redis-url",
      cluster.url,
    ]).spawn();
    let output: Deno.CommandOutput;
    let reshard: Deno.CommandOutput;
    try {
      await waitFor(
        "the run to start copying",
        async () => (await countClusterKeys(nodes, "ai:job:*")) > 0,
      );
      // Move 2000 of the first master's slots, with their keys, while the run reads and writes them.
      reshard = await new Deno.Command("redis-cli", {
        args: [
          "--cluster",
          "reshard",
          `127.0.0.1:${cluster.nodes[0]!.port}`,
          "--cluster-from",
          from!,
          "--cluster-to",
          to!,
          "--cluster-slots",
          "2000",
          "--cluster-yes",
          "--cluster-pipeline",
          "10",
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      output = await child.output();
    } catch (error) {
      child.kill("SIGKILL");
      await child.output();
      throw error;
    }
    assert.ok(reshard.success, new TextDecoder().decode(reshard.stdout).slice(-2000));
    try {
      assert.notEqual(
        await probe.layout!(),
        layoutBefore,
        "the target sees the slot layout change",
      );
    } finally {
      await probe.close();
    }
    const stderr = new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 0, stderr);
    const first = JSON.parse(new TextDecoder().decode(output.stdout));
    assert.equal(first.errors, 0);
    // A key moved from a not-yet-scanned part of one master to an already-scanned part of another
    // escapes that run's SCAN; the next run picks it up. No key is ever copied twice.
    const second = await runJson(["--execute", "--rps", "0", "--redis-url", cluster.url]);
    assert.equal(second.code, 0, second.stderr);
    assert.equal(second.summary.errors, 0);
    assert.equal(Number(first.migrated) + Number(second.summary.migrated), 3000);
    await assertMigrated(client, jobs);
  });
});

Deno.test("cluster: --workspace, --workspace-pattern and binary key names classify as standalone", async () => {
  await withCluster(async (cluster, client) => {
    const jobs = makeJobs(300, ["ws-a", "ws-b", "team.c"]);
    await seedOldCluster(client, jobs);
    const binary = Buffer.concat([Buffer.from("ai:jobs:"), Buffer.from([0xff, 0xfe, 0x00, 0x41])]);
    await client.hset(binary, { workspace_id: "ws-a", status: "queued" });
    await client.hset("ai:jobs:bin-ws", { workspace_id: Buffer.from([0xc3, 0x28]) });
    // Default keys: `team.c` is invalid; --workspace ws-a filters the rest.
    const only = await runJson([
      "--execute",
      "--rps",
      "0",
      "--workspace",
      "ws-a",
      "--redis-url",
      cluster.url,
    ]);
    assert.equal(only.code, 0, only.stderr);
    assert.deepEqual(
      [only.summary.migrated, only.summary.filtered, only.summary.skipped_invalid],
      [101, 100, 101],
    );
    const copied = Buffer.concat([
      Buffer.from("ai:job:ws-a:"),
      Buffer.from([0xff, 0xfe, 0x00, 0x41]),
    ]);
    assert.deepEqual(await client.hgetall(copied), { workspace_id: "ws-a", status: "queued" });
    // A custom pattern (checked in the client, as on a standalone server) admits `team.c`.
    const custom = await runJson([
      "--execute",
      "--rps",
      "0",
      "--workspace-pattern",
      "^[a-z.-]+$",
      "--redis-url",
      cluster.url,
    ]);
    assert.equal(custom.code, 0, custom.stderr);
    assert.deepEqual(
      [custom.summary.migrated, custom.summary.skipped_exists, custom.summary.skipped_invalid],
      [200, 101, 1],
    );
    await assertMigrated(client, jobs);
  });
});

Deno.test("cluster: --rps is one budget for the whole run, not per master", async () => {
  await withCluster(async (cluster, client) => {
    await seedOldCluster(client, makeJobs(600));
    const { code, summary, stderr } = await runJson([
      "--execute",
      "--rps",
      "200",
      "--redis-url",
      cluster.url,
    ]);
    assert.equal(code, 0, stderr);
    assert.equal(summary.migrated, 600);
    // 600 jobs at 200/s over three masters: about 3 s (2 s at the least), never ~1 s.
    const seconds = Number(summary.duration_seconds);
    assert.ok(seconds >= 1.9 && seconds < 6, `took ${seconds} s`);
  });
});

Deno.test("cluster: verify samples every master and reads through the routed client", async () => {
  await withCluster(async (cluster, client) => {
    const jobs = makeJobs(500);
    await seedOldCluster(client, jobs);
    const run = await runJson(["--execute", "--rps", "0", "--redis-url", cluster.url]);
    assert.equal(run.code, 0, run.stderr);
    await client.del(newKey(jobs[7]!));
    const target = await connectRedis([cluster.url]);
    try {
      const report = await runVerify(
        target,
        { ...VERIFY_DEFAULTS, sample: 1000, recheckDelayMs: 10, keys: new KeySchema() },
      );
      assert.equal(report.sampled, 500);
      assert.equal(report.matched, 499);
      assert.equal(report.missing, 1);
      assert.equal(report.orphans, 0);
    } finally {
      await target.close();
    }
  });
});
