/**
 * `--shard I/N` for real: three runner processes on a 6-master cluster of real redis-server
 * processes, one of them killed with SIGKILL mid-run and restarted; every job is migrated exactly
 * once, and each runner scans only its own masters.
 */
import assert from "node:assert/strict";
import type { Cluster, Redis } from "../src/redis/ioredis.ts";
import { type CliResult, runJson, spawnCli, waitFor } from "./support/cli.ts";
import { countClusterKeys, seedOldCluster, startCluster } from "./support/cluster.ts";
import { assertMigrated, makeJobs, newKey, type TestJob } from "./support/seed.ts";

const SHARD_LINE = /shard (\d)\/3: (\d) of 6 masters: (.*)/;

/** The node ids a runner logged it took (`shard I/3: 2 of 6 masters: host:port (id), …`). */
function mastersOf(stderr: string): string[] {
  const line = stderr.split("\n").find((l) => SHARD_LINE.test(l));
  assert.ok(line, `no shard line in:\n${stderr}`);
  return [...line.matchAll(/\(([0-9a-f]{40})\)/g)].map((m) => m[1]!);
}

/** Old keys per master node id. */
async function oldKeysByNode(nodes: Redis[]): Promise<Map<string, string[]>> {
  const byNode = new Map<string, string[]>();
  for (const node of nodes) {
    const id = String(await node.call("CLUSTER", "MYID"));
    const keys: string[] = [];
    let cursor = "0";
    do {
      const [next, batch] = await node.scan(cursor, "MATCH", "ai:jobs:*", "COUNT", 1000);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== "0");
    byNode.set(id, keys);
  }
  return byNode;
}

/** Jobs of the given masters whose new key exists now. */
async function copiedOn(
  client: Cluster,
  ids: string[],
  byNode: Map<string, string[]>,
  jobs: Map<string, TestJob>,
): Promise<number> {
  let copied = 0;
  for (const id of ids) {
    for (const key of byNode.get(id)!) {
      const job = jobs.get(key.slice("ai:jobs:".length))!;
      copied += await client.exists(newKey(job));
    }
  }
  return copied;
}

/** The summary fields the test reads. */
interface Counts {
  scanned: number;
  migrated: number;
  skipped_exists: number;
  errors: number;
}

function summaryOf(result: CliResult): Counts {
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout);
}

Deno.test("shard: 3 runners on 6 masters, one killed -9 and restarted: every job copied once", async () => {
  const cluster = await startCluster({ masters: 6 });
  const client = cluster.client();
  const nodes = cluster.nodeClients();
  const runners = [] as ReturnType<typeof spawnCli>[];
  try {
    const jobs = makeJobs(6000);
    await seedOldCluster(client, jobs);
    const byNode = await oldKeysByNode(nodes);
    const jobById = new Map(jobs.map((job) => [job.id, job]));
    const args = (i: number) => [
      "--execute",
      "--shard",
      `${i}/3`,
      "--rps",
      "500",
      "--batch",
      "50",
      "--json",
      "--redis-url",
      cluster.url,
    ];
    for (let i = 0; i < 3; i++) runners.push(spawnCli(args(i)));
    const victim = runners[1]!;
    await waitFor("runner 1's shard line", () => SHARD_LINE.test(victim.stderrSoFar()), 60_000);
    const victimIds = mastersOf(victim.stderrSoFar());
    // Killed after both its masters have a checkpoint, well before its ~4 s of work are done.
    await waitFor("checkpoints of runner 1", async () => {
      const cursors = await Promise.all(
        victimIds.map((id) => client.exists(`{ai:backfill}:cursor:${id}`)),
      );
      return cursors.every((n) => n === 1);
    }, 60_000);
    victim.child.kill("SIGKILL");
    await victim.done.catch(() => undefined);
    const killedCopied = await copiedOn(client, victimIds, byNode, jobById);
    const victimKeys = victimIds.reduce((n, id) => n + byNode.get(id)!.length, 0);
    assert.ok(killedCopied < victimKeys, `killed mid-run (${killedCopied} of ${victimKeys})`);
    // Its locks outlive it (up to 30 s): the restart waits for them (--wait-lock 45 by default).
    for (const id of victimIds) assert.ok(await client.pttl(`{ai:backfill}:lock:${id}`) > 0);

    const restarted = await runJson(args(1).filter((a) => a !== "--json"));
    assert.equal(restarted.code, 0, restarted.stderr);
    assert.match(restarted.stderr, /waiting for the lock \{ai:backfill\}:lock:[0-9a-f]{40}/);
    assert.match(restarted.stderr, /Resuming from stored cursor=/);
    assert.deepEqual(mastersOf(restarted.stderr), victimIds, "the same masters after a restart");
    const others = await Promise.all([runners[0]!.done, runners[2]!.done]);

    // The three runners split the six masters two by two, with no master shared.
    const taken = [mastersOf(others[0].stderr), victimIds, mastersOf(others[1].stderr)];
    assert.deepEqual(taken.map((ids) => ids.length), [2, 2, 2]);
    assert.deepEqual(new Set(taken.flat()), new Set(byNode.keys()));
    const keysOf = (ids: string[]) => ids.reduce((n, id) => n + byNode.get(id)!.length, 0);

    // Runners 0 and 2 scanned exactly the old keys of their masters and copied every one.
    for (const [i, result] of [[0, others[0]], [2, others[1]]] as const) {
      const summary = summaryOf(result);
      const mine = keysOf(taken[i]!);
      assert.equal(summary.scanned, mine, `runner ${i} scanned only its masters`);
      assert.equal(summary.migrated, mine, `runner ${i} migrated`);
      assert.equal(summary.errors, 0);
    }
    // The restarted runner resumed: what the killed one copied plus what it copied is its share,
    // and the keys it re-read (the batch in flight at the kill) count as already there.
    const resumed = restarted.summary as unknown as Counts;
    assert.equal(resumed.errors, 0);
    assert.equal(resumed.migrated + killedCopied, victimKeys, "each job copied exactly once");
    assert.ok(resumed.scanned < victimKeys, "resumed from its checkpoints, not from 0");
    assert.ok(resumed.skipped_exists <= killedCopied);
    const migratedSum = summaryOf(others[0]).migrated + summaryOf(others[1]).migrated +
      resumed.migrated + killedCopied;
    assert.equal(migratedSum, jobs.length);

    assert.equal(await countClusterKeys(nodes, "ai:job:*"), jobs.length);
    assert.equal(await countClusterKeys(nodes, "ai:jobs:*"), jobs.length, "old keys untouched");
    await assertMigrated(client, jobs);
    // The migration's running totals stay (until --reset-progress) and each runner's last status
    // (it expires by itself); locks and checkpoints go.
    assert.equal(await countClusterKeys(nodes, "*backfill*:lock*"), 0, "locks gone");
    assert.equal(await countClusterKeys(nodes, "*backfill*:cursor*"), 0, "checkpoints gone");
    assert.equal(await countClusterKeys(nodes, "*backfill}:totals"), 1, "the totals are left");
  } finally {
    for (const runner of runners) {
      try {
        runner.child.kill("SIGKILL");
      } catch {
        // already exited
      }
      await runner.done.catch(() => undefined);
    }
    client.disconnect();
    for (const node of nodes) node.disconnect();
    await cluster.stop();
  }
});
