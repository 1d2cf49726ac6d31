/**
 * Fencing on a real 3-master cluster without persistence: runner 1 copies; the master that holds
 * the run locks restarts empty, so the locks are gone, and runner 2 takes them (the same lock set
 * `--execute` takes, with its fence). Runner 1 must not write once runner 2 holds the locks: its
 * next copy script is refused by Redis itself (`FENCED`), not at its next renewal, and it exits 4.
 *
 * The jobs' old and new keys all live on the two other masters, so runner 1 never writes to the
 * restarted master's data and keeps its own fence there until runner 2 replaces it.
 */
import assert from "node:assert/strict";
import type { Cluster } from "../src/redis/ioredis.ts";
import { lockKey } from "../src/safety/lock.ts";
import { acquireLocks } from "../src/safety/lock.ts";
import { keySlot } from "../src/redis/slot.ts";
import { newKeyFor, oldKeyFor } from "./support/keys.ts";
import { spawnCli, waitFor } from "./support/cli.ts";
import { startCluster } from "./support/cluster.ts";

const PROGRESS = "ai:backfill";

/** The port of the master serving each key, from one CLUSTER SLOTS. */
async function portsOf(client: Cluster): Promise<(key: string | Uint8Array) => number> {
  const ranges = await client.cluster("SLOTS") as unknown as [number, number, [string, number]][];
  return (key) => {
    const slot = keySlot(typeof key === "string" ? new TextEncoder().encode(key) : key);
    return ranges.find(([start, end]) => slot >= start && slot <= end)![2][1];
  };
}

async function newKeys(client: Cluster, ids: string[]): Promise<number> {
  let count = 0;
  for (let i = 0; i < ids.length; i += 500) {
    const found = await Promise.all(
      ids.slice(i, i + 500).map((id) => client.exists(newKeyFor("ws-a", id))),
    );
    count += found.reduce((a, b) => a + b, 0);
  }
  return count;
}

Deno.test("cluster fence: once another runner holds the locks, Redis refuses the first runner's writes", async () => {
  const cluster = await startCluster();
  const client = cluster.client();
  try {
    const portOf = await portsOf(client);
    const lockPort = portOf(`{${PROGRESS}}:lock:x`);
    const ids: string[] = [];
    for (let i = 0; ids.length < 3000; i++) {
      const id = `job-${i}`;
      const elsewhere = portOf(oldKeyFor(id)) !== lockPort &&
        portOf(newKeyFor("ws-a", id)) !== lockPort;
      if (elsewhere) ids.push(id);
    }
    for (let i = 0; i < ids.length; i += 500) {
      await Promise.all(
        ids.slice(i, i + 500).map((id) =>
          client.hset(oldKeyFor(id), { workspace_id: "ws-a", status: "queued" })
        ),
      );
    }
    const runner1 = spawnCli([
      "--execute",
      "--rps",
      "400",
      "--batch",
      "50",
      "--max-outage",
      "60",
      "--redis-url",
      cluster.url,
    ]);
    let takenOver: Awaited<ReturnType<typeof acquireLocks>> | undefined;
    try {
      await waitFor("runner 1 copying", async () => await newKeys(client, ids) > 100);
      // The lock master restarts empty: runner 1's locks (and its fence there) are gone.
      const lockNode = cluster.nodes.find((node) => node.port === lockPort)!;
      await lockNode.kill();
      await lockNode.start();
      await cluster.waitHealthy();
      const nodeIds = await Promise.all(
        cluster.nodes.map(async (node) => {
          const direct = node.client();
          try {
            return String(await direct.call("CLUSTER", "MYID"));
          } finally {
            direct.disconnect();
          }
        }),
      );
      takenOver = await acquireLocks(client, nodeIds.map((id) => lockKey(PROGRESS, id)), {
        fence: PROGRESS,
        waitMs: 10_000,
      });
      const atTakeover = await newKeys(client, ids);
      const result = await runner1.done;
      assert.equal(result.code, 4, result.stderr);
      assert.match(result.stderr, /Redis refused a write: FENCED the run lock/);
      assert.equal(
        await newKeys(client, ids),
        atTakeover,
        "no copy of runner 1 landed after runner 2 took the locks",
      );
      assert.ok(atTakeover < ids.length, `runner 1 was stopped mid-run (${atTakeover} copied)`);
    } finally {
      try {
        runner1.child.kill("SIGKILL");
      } catch {
        // it has exited
      }
      await runner1.done.catch(() => {});
      await takenOver?.release();
    }
  } finally {
    client.disconnect();
    await cluster.stop();
  }
});
