/**
 * A kill -9 between a cluster copy's WRITE and its RECHECK, on a real 3-master cluster: a wide job
 * whose old and new keys live on different masters; after the copy READ it, the application
 * changes the job (HDEL on the old key, then on the new one, which does not exist yet) or deletes
 * it (DEL old, then new); the copy's WRITE then creates the new key from its stale snapshot, and
 * the process is killed with SIGKILL as soon as the new key appears, before its RECHECK. The next
 * run must leave the new key equal to the old key's final state (or absent when the job was
 * deleted), and say that it repaired what the dead run left.
 *
 * The process killed is tests/support/cluster_copy_child.ts (the real cluster copy; the test holds
 * its WRITE back until the application has written, which makes the window certain).
 */
import assert from "node:assert/strict";
import type { Buffer } from "node:buffer";
import { strategyFor } from "../src/migrate/select.ts";
import { connectRedis } from "../src/redis/connect.ts";
import type { Cluster } from "../src/redis/ioredis.ts";
import { KeySchema } from "../src/schema.ts";
import { newKeyFor, oldKeyFor } from "./support/keys.ts";
import { runJson } from "./support/cli.ts";
import { redisCli, startCluster, type TestCluster } from "./support/cluster.ts";

const CHILD = new URL("./support/cluster_copy_child.ts", import.meta.url).pathname;
const WS = "ws-a";

async function portOf(client: Cluster, key: string | Buffer): Promise<number> {
  const slot = Number(await client.call("CLUSTER", "KEYSLOT", key));
  const ranges = await client.cluster("SLOTS") as unknown as [number, number, [string, number]][];
  return ranges.find(([start, end]) => slot >= start && slot <= end)![2][1];
}

/** A job id whose old and new key are served by different masters. */
async function jobAcrossMasters(client: Cluster): Promise<string> {
  for (let i = 0;; i++) {
    const id = `crash-${i}`;
    if (await portOf(client, oldKeyFor(id)) !== await portOf(client, newKeyFor(WS, id))) return id;
  }
}

/** Reads the child's stdout until `word` is a line of it. */
async function waitLine(reader: ReadableStreamDefaultReader<string>, seen: string[], word: string) {
  while (!seen.includes(word)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the copy process ended before "${word}" (${seen.join(", ")})`);
    seen.push(...value.split("\n").filter((line) => line !== ""));
  }
}

/**
 * Copies the job in a child process, lets `app` change it between READ and WRITE, and kills the
 * child with SIGKILL once the WRITE created the new key.
 */
async function crashAfterWrite(
  cluster: TestCluster,
  client: Cluster,
  id: string,
  app: () => Promise<void>,
): Promise<void> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-q", "-A", CHILD, cluster.url, id],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const seen: string[] = [];
  try {
    await waitLine(reader, seen, "read");
    await app();
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode("write\n"));
    // Kill -9 as soon as the WRITE's new key is there: its RECHECK is never sent.
    const deadline = Date.now() + 30_000;
    while (await client.exists(newKeyFor(WS, id)) === 0) {
      if (Date.now() > deadline) throw new Error("the WRITE never created the new key");
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    child.kill("SIGKILL");
    await child.status;
    await writer.close().catch(() => {});
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await reader.cancel().catch(() => {});
  }
}

async function withWideJob(
  fn: (cluster: TestCluster, client: Cluster, id: string) => Promise<void>,
): Promise<void> {
  const cluster = await startCluster();
  const client = cluster.client();
  try {
    const id = await jobAcrossMasters(client);
    const fields: Record<string, string> = { workspace_id: WS };
    for (let i = 0; i < 300; i++) fields[`f${i}`] = `value-${i}`;
    await client.hset(oldKeyFor(id), fields);
    await client.pexpire(oldKeyFor(id), 3_600_000);
    await fn(cluster, client, id);
  } finally {
    client.disconnect();
    await cluster.stop();
  }
}

/** Keys matching `pattern` on any node. */
async function keysLike(cluster: TestCluster, pattern: string): Promise<string[]> {
  const found: string[] = [];
  for (const node of cluster.nodes) {
    found.push(...(await redisCli(node.port, "--scan", "--pattern", pattern)).split("\n"));
  }
  return found.filter((key) => key !== "");
}

const intentKeys = (cluster: TestCluster) => keysLike(cluster, "*:intents*");

Deno.test("cluster crash: a kill -9 after WRITE, the app having deleted fields: the rerun repairs the copy", async () => {
  await withWideJob(async (cluster, client, id) => {
    const lost = Array.from({ length: 150 }, (_, i) => `f${i}`);
    await crashAfterWrite(cluster, client, id, async () => {
      // The application's change: the old key first, then the new key (not written yet: a no-op).
      await client.hdel(oldKeyFor(id), ...lost);
      await client.hdel(newKeyFor(WS, id), ...lost);
    });
    const stale = await client.hlen(newKeyFor(WS, id));
    assert.equal(stale, 301, "the dead run's copy holds the fields the old key lost");

    const rerun = await runJson(["--execute", "--redis-url", cluster.url]);
    assert.equal(rerun.code, 0, rerun.stderr);
    assert.deepEqual(
      await client.hgetall(newKeyFor(WS, id)),
      await client.hgetall(oldKeyFor(id)),
      "the new key equals the old key's final state",
    );
    assert.equal(
      await client.pexpiretime(newKeyFor(WS, id)),
      await client.pexpiretime(oldKeyFor(id)),
      "with the old key's absolute expiry",
    );
    assert.deepEqual(await keysLike(cluster, "*:fence*"), [], "the run removed its fence");
    assert.equal(rerun.summary.intents_completed, 1, JSON.stringify(rerun.summary));
    assert.match(rerun.stderr, /completed 1 of 1 cluster copies an earlier run left unverified/);
    assert.match(rerun.stderr, /1 taken back and copied again from the old key/);
    assert.deepEqual(await intentKeys(cluster), [], "no intent left");
  });
});

Deno.test("cluster crash: a kill -9 after WRITE, the app having deleted the job: the rerun removes the copy", async () => {
  await withWideJob(async (cluster, client, id) => {
    await crashAfterWrite(cluster, client, id, async () => {
      await client.del(oldKeyFor(id));
      await client.del(newKeyFor(WS, id));
    });
    assert.equal(await client.exists(newKeyFor(WS, id)), 1, "the dead run resurrected the job");
    const dry = await runJson(["--dry-run", "--redis-url", cluster.url]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(
      dry.stderr,
      /1 cluster copies an earlier run left unverified/,
      "a dry-run says so",
    );
    assert.equal((await intentKeys(cluster)).length, 1, "and leaves it to --execute");

    const rerun = await runJson(["--execute", "--redis-url", cluster.url]);
    assert.equal(rerun.code, 0, rerun.stderr);
    assert.equal(await client.exists(newKeyFor(WS, id)), 0, "the deleted job is not re-created");
    assert.equal(rerun.summary.intents_completed, 1, JSON.stringify(rerun.summary));
    assert.match(rerun.stderr, /1 removed \(the old key is gone\)/);
    assert.deepEqual(await intentKeys(cluster), [], "no intent left");
  });
});

Deno.test("cluster crash: a copy that meets an intent left by a dead run completes it before writing", async () => {
  await withWideJob(async (cluster, client, id) => {
    const lost = Array.from({ length: 150 }, (_, i) => `f${i}`);
    await crashAfterWrite(cluster, client, id, async () => {
      await client.hdel(oldKeyFor(id), ...lost);
      await client.hdel(newKeyFor(WS, id), ...lost);
    });
    // No start-of-run completion here: the copy's own WRITE finds the intent ("pending").
    const target = await connectRedis([cluster.url]);
    try {
      const strategy = strategyFor(target, new KeySchema());
      await strategy.init();
      const results = await strategy.migrate([oldKeyFor(id)], { dryRun: false });
      assert.deepEqual(results.map((r) => r.outcome), ["migrated"]);
    } finally {
      await target.close();
    }
    assert.deepEqual(await client.hgetall(newKeyFor(WS, id)), await client.hgetall(oldKeyFor(id)));
    assert.deepEqual(await intentKeys(cluster), [], "no intent left");
  });
});
