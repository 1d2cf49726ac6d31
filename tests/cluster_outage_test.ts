/**
 * One master of a real 3-master cluster lost mid-run (killed, or frozen with SIGSTOP) while the
 * other two keep serving: the run ends with exit 3 within --max-outage of the fault, the other
 * masters' work stops and settles before the locks are released (MONITOR on them sees nothing
 * after the release), and the summary counts what was copied.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type { Cluster } from "../src/redis/ioredis.ts";
import { keySlot } from "../src/redis/slot.ts";
import { spawnCli, waitFor } from "./support/cli.ts";
import {
  countClusterKeys,
  redisCli,
  seedOldCluster,
  startCluster,
  type TestCluster,
} from "./support/cluster.ts";
import type { RedisServer } from "./support/redis_server.ts";
import { makeJobs } from "./support/seed.ts";

/** A 3-master cluster (no replicas, AOF) whose masters serve their slots whoever else is down. */
async function withCluster(fn: (cluster: TestCluster, client: Cluster) => Promise<void>) {
  const cluster = await startCluster({ masters: 3, aof: true });
  const client = cluster.client();
  try {
    for (const node of cluster.nodes) {
      await redisCli(node.port, "CONFIG", "SET", "cluster-require-full-coverage", "no");
    }
    await fn(cluster, client);
  } finally {
    client.disconnect();
    await cluster.stop();
  }
}

/** The master that holds the run's locks and checkpoints, and another one (to be lost). */
async function pickMasters(
  cluster: TestCluster,
  client: Cluster,
): Promise<{ progress: RedisServer; lost: RedisServer; others: RedisServer[] }> {
  await client.ping();
  const owner = client.slots[keySlot(Buffer.from("{ai:backfill}:lock"))]?.[0];
  const progress = cluster.nodes.find((node) => `127.0.0.1:${node.port}` === owner);
  assert.ok(progress, `no node serves the progress keys (${owner})`);
  const lost = cluster.nodes.find((node) => node !== progress)!;
  return { progress, lost, others: cluster.nodes.filter((node) => node !== lost) };
}

/** `redis-cli MONITOR` on a node, until stopped: every command it served, with its time. */
function monitor(node: RedisServer): { stop(): Promise<{ at: number; line: string }[]> } {
  const child = new Deno.Command("redis-cli", {
    args: ["-p", String(node.port), "MONITOR"],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  let text = "";
  const reading = child.stdout.pipeThrough(new TextDecoderStream()).pipeTo(
    new WritableStream({ write: (chunk) => void (text += chunk) }),
  );
  return {
    async stop() {
      // MONITOR lines reach redis-cli after the commands ran: a marker sent last, once seen,
      // says every earlier line is in (a busy machine may not have printed the last ones yet).
      const marker = `monitor-end-${crypto.randomUUID()}`;
      try {
        await redisCli(node.port, "ECHO", marker);
        await waitFor(
          `MONITOR of ${node.port} to print its last line`,
          () => text.includes(marker),
          10_000,
        );
      } finally {
        child.kill("SIGTERM");
        await child.status;
        await reading.catch(() => {});
      }
      return text.split("\n").flatMap((line) => {
        const at = /^(\d+\.\d+) \[/.exec(line)?.[1];
        return at === undefined ? [] : [{ at: Number(at), line }];
      });
    },
  };
}

/** Every old key is in place and the run is copying on every master. */
async function untilCopyingEverywhere(cluster: TestCluster, client: Cluster): Promise<void> {
  await waitFor("a checkpoint on every master", async () => {
    let stored = 0;
    for (const node of cluster.nodes) {
      const id = (await redisCli(node.port, "CLUSTER", "MYID")).trim();
      if ((await client.exists(`{ai:backfill}:cursor:${id}`)) === 1) stored++;
    }
    return stored === 3;
  }, 60_000);
}

/** The lock's release (a script that deletes the lock if it is still ours), as MONITOR shows it. */
const RELEASE =
  /"eval" "if redis\.call\(\\"GET\\", KEYS\[1\]\) == ARGV\[1\] then\\n {2}return redis\.call\(\\"DEL\\"/i;
/** A command that writes, or runs a script (what a copy or a checkpoint sends). */
const WRITE =
  /\] "(eval|evalsha|eval_ro|evalsha_ro|fcall|multi|exec|set|hset|hsetnx|hdel|del|copy|pexpire|pexpireat|persist)"/i;

const RUN = ["--execute", "--rps", "300", "--batch", "50", "--json"];

Deno.test("cluster: a master killed mid-run ends the run (exit 3) within --max-outage; the others stop before the locks are released", async () => {
  await withCluster(async (cluster, client) => {
    await seedOldCluster(client, makeJobs(4000));
    const { progress, lost, others } = await pickMasters(cluster, client);
    const watching = others.map((node) => ({ node, monitor: monitor(node) }));
    const maxOutage = 15;
    const run = spawnCli([...RUN, "--max-outage", String(maxOutage), "--redis-url", progress.url]);
    let killed = 0;
    try {
      await untilCopyingEverywhere(cluster, client);
      await lost.kill();
      killed = performance.now();
    } finally {
      if (killed === 0) run.child.kill("SIGKILL");
    }
    const result = await run.done;
    const seconds = (performance.now() - killed) / 1000;
    const seen = await Promise.all(
      watching.map(async (w) => ({ ...w, lines: await w.monitor.stop() })),
    );
    assert.equal(result.code, 3, result.stderr);
    assert.ok(seconds < maxOutage + 10, `exit 3 came ${seconds} s after the kill`);
    assert.match(result.stderr, new RegExp(`error: lost Redis at 127\\.0\\.0\\.1:${lost.port}`));
    assert.doesNotMatch(result.stderr, /internal error|\n\s+at /);
    // The locks were released last: nothing reached the other masters after that.
    const onProgress = seen.find((s) => s.node === progress)!.lines;
    const release = onProgress.findLast((l) => RELEASE.test(l.line));
    assert.ok(release, `the locks were released:\n${result.stderr}`);
    const released = release.at;
    for (const { node, lines } of seen) {
      // (The release's own script lines excepted.)
      const after = lines.filter((l) =>
        l.at > released && WRITE.test(l.line) &&
        !/\[0 lua\] "(GET|DEL)" "\{ai:backfill\}:lock/.test(l.line)
      );
      assert.deepEqual(after.map((l) => l.line), [], `sent to ${node.port} after the release`);
    }
    // What the summary counts was copied; what was copied and not counted is at most what was in
    // flight (one batch per master) when the master was lost.
    const summary = JSON.parse(result.stdout);
    await lost.start();
    await cluster.waitHealthy();
    const nodes = cluster.nodeClients();
    try {
      const copies = await countClusterKeys(nodes, "ai:job:*");
      const counted = summary.migrated + summary.repaired;
      assert.ok(counted <= copies, `counted ${counted}, ${copies} copies exist`);
      assert.ok(copies - counted <= 3 * 50, `counted ${counted}, ${copies} copies exist`);
    } finally {
      for (const node of nodes) node.disconnect();
    }
  });
});

for (const which of ["another master", "the master that holds the locks and checkpoints"]) {
  Deno.test(`cluster: ${which} frozen (SIGSTOP) past --max-outage ends the run with exit 3 within the bound`, async () => {
    await withCluster(async (cluster, client) => {
      await seedOldCluster(client, makeJobs(4000));
      const masters = await pickMasters(cluster, client);
      const lost = which === "another master" ? masters.lost : masters.progress;
      const maxOutage = 5;
      const run = spawnCli([...RUN, "--max-outage", String(maxOutage), "--redis-url", cluster.url]);
      let frozen = 0;
      try {
        await untilCopyingEverywhere(cluster, client);
        lost.signal("SIGSTOP");
        frozen = performance.now();
        // Frozen far longer than the bound: the run must not wait for it to thaw.
        const thaw = setTimeout(() => lost.signal("SIGCONT"), 40_000);
        const result = await run.done.finally(() => clearTimeout(thaw));
        const seconds = (performance.now() - frozen) / 1000;
        assert.equal(result.code, 3, result.stderr);
        assert.ok(seconds < maxOutage + 10, `exit 3 came ${seconds} s after the freeze`);
        assert.match(
          result.stderr,
          new RegExp(`error: lost Redis at 127\\.0\\.0\\.1:${lost.port}`),
        );
        assert.doesNotMatch(result.stderr, /internal error|\n\s+at /);
        assert.equal(JSON.parse(result.stdout).completed, false);
      } finally {
        lost.signal("SIGCONT");
        if (frozen === 0) run.child.kill("SIGKILL");
        await run.done.catch(() => {});
      }
    });
  });
}
