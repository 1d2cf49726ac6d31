/**
 * Two mappings other than the default, end to end on a standalone server and on a 3-master cluster:
 * a hash-tagged `--to` (each workspace's new keys in one slot) and a renamed prefix whose new name
 * takes a placeholder of the old name and another hash field (`tenant`, with its own `--pattern`).
 * Each runs under a live dual-writer, is killed with SIGKILL mid-run, is refused when resumed with
 * another mapping, resumes with its own, and ends with `verify --full` READY.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { keySlot } from "../src/redis/slot.ts";
import type { Cluster, Redis } from "../src/redis/ioredis.ts";
import { KeySchema } from "../src/schema.ts";
import { runCli, runJson, spawnCli, waitFor } from "./support/cli.ts";
import { countClusterKeys, startCluster } from "./support/cluster.ts";
import { startRedis } from "./support/redis_server.ts";
import { countKeys } from "./support/seed.ts";

/** A mapping, its flags, and how the application names its jobs under it. */
interface Mapping {
  flags: string[];
  keys: KeySchema;
  /** The old key and the field value (its workspace) of job `i`. */
  job(i: number): { old: Buffer; value: string };
  /** SCAN MATCH of the new keys. */
  newMatch: string;
}

const TAGGED: Mapping = {
  flags: ["--to", "ai:job:{{workspace_id}}:{job_id}"],
  keys: new KeySchema({ to: "ai:job:{{workspace_id}}:{job_id}" }),
  job: (i) => ({ old: Buffer.from(`ai:jobs:job-${i}`), value: `ws-${i % 3}` }),
  newMatch: "ai:job:{*}:*",
};

const RENAMED: Mapping = {
  flags: [
    "--from",
    "jobs:{queue}:{job_id}",
    "--to",
    "tasks:{tenant}:{queue}:{job_id}",
    "--pattern",
    "tenant=^t[0-9]+$",
  ],
  keys: new KeySchema({
    from: "jobs:{queue}:{job_id}",
    to: "tasks:{tenant}:{queue}:{job_id}",
    patterns: { tenant: "^t[0-9]+$" },
  }),
  job: (i) => ({ old: Buffer.from(`jobs:${i % 2 ? "high" : "low"}:job-${i}`), value: `t${i % 3}` }),
  newMatch: "tasks:*",
};

async function seed(client: Redis | Cluster, mapping: Mapping, from: number, to: number) {
  const field = mapping.keys.workspaceField;
  for (let i = from; i < to; i += 500) {
    const writes = [];
    for (let j = i; j < Math.min(i + 500, to); j++) {
      const { old, value } = mapping.job(j);
      writes.push(client.hset(old, { [field]: value, status: "queued", payload: `p${j}` }));
    }
    await Promise.all(writes);
  }
}

/**
 * The application's dual-write under `mapping`: every change to the old key first, then to the
 * new key; a delete removes the old key first; new jobs are created in both.
 */
async function dualWriter(
  app: Redis | Cluster,
  mapping: Mapping,
  jobs: number,
  stop: () => boolean,
): Promise<Set<number>> {
  const deleted = new Set<number>();
  const field = mapping.keys.workspaceField;
  let next = jobs;
  for (let n = 0; !stop(); n++) {
    const i = (n * 7919) % jobs;
    if (deleted.has(i)) continue;
    const { old, value } = mapping.job(i);
    const fresh = mapping.keys.newKeyOf(old, [value])!;
    switch (n % 4) {
      case 0: {
        const made = mapping.job(next++);
        const fields = { [field]: made.value, status: "live" };
        await app.hset(made.old, fields);
        await app.hset(mapping.keys.newKeyOf(made.old, [made.value])!, fields);
        break;
      }
      case 1:
        await app.hset(old, "status", `s-${n}`);
        await app.hset(fresh, "status", `s-${n}`);
        break;
      case 2:
        deleted.add(i);
        await app.del(old);
        await app.del(fresh);
        break;
      case 3:
        await app.expire(old, 7200);
        await app.expire(fresh, 7200);
        break;
    }
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  return deleted;
}

/**
 * The whole story of one mapping: a run killed mid-way under the dual-writer, a resume with the
 * default mapping refused, the resume with its own, then `verify --full` READY.
 */
async function story(
  mapping: Mapping,
  target: {
    url: string;
    client: Redis | Cluster;
    /** True once every node has stored a checkpoint. */
    checkpointed: () => Promise<boolean>;
    /** Removes the killed run's lock(s) (its supervisor knows it is dead). */
    unlock: () => Promise<void>;
    count: (match: string) => Promise<number>;
  },
  jobs: number,
) {
  await seed(target.client, mapping, 0, jobs);
  const run = [...mapping.flags, "--batch", "50", "--redis-url", target.url];
  const dry = await runJson(["--dry-run", "--rps", "0", ...run]);
  assert.equal(dry.code, 0, dry.stderr);
  assert.equal(dry.summary.migrated, jobs);
  assert.equal(await target.count(mapping.newMatch), 0, "a dry-run writes nothing");
  let stop = false;
  const writer = dualWriter(target.client, mapping, jobs, () => stop);
  try {
    const killed = spawnCli(["--execute", "--rps", "400", ...run]);
    await waitFor("a checkpoint on every node", target.checkpointed);
    killed.child.kill("SIGKILL");
    await killed.done;
    await target.unlock();
    // `backfill status` names the mapping of the (dead) run it reads.
    const status = await runCli(["status", "--json", "--redis-url", target.url]);
    assert.equal(JSON.parse(status.stdout).mapping, mapping.keys.fingerprint.mapping);
    const text = await runCli(["status", "--redis-url", target.url]);
    assert.ok(text.stdout.includes(`\nkeys: ${mapping.keys.fingerprint.mapping}\n`), text.stdout);
    const copied = await target.count(mapping.newMatch);
    assert.ok(copied > 0 && copied < jobs, `${copied} copied before the kill`);

    // Another mapping does not resume this run's checkpoint.
    const other = await runJson(["--execute", "--batch", "50", "--redis-url", target.url]);
    assert.notEqual(other.code, 0);
    assert.match(other.stderr, /made with other parameters .*--from\/--to/);

    const resumed = await runJson(["--execute", "--rps", "0", ...run]);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(resumed.stderr, /Resuming from stored cursor=/);
    assert.equal(resumed.summary.errors, 0);
  } finally {
    stop = true;
    await writer;
  }
  const sampled = await runJson(["verify", ...mapping.flags, "--redis-url", target.url]);
  assert.equal(sampled.code, 0, sampled.stdout + sampled.stderr);
  const verify = await runJson(["verify", "--full", ...mapping.flags, "--redis-url", target.url]);
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
  assert.match(String(verify.summary.verdict), /^READY/);
  assert.equal(verify.summary.missing, 0);
  assert.ok(Number(verify.summary.checked) >= jobs / 2, String(verify.summary.checked));
  // Only the mapping's new keys were made (the default schema's stayed empty).
  assert.equal(await target.count("ai:job:ws-*"), 0);
  assert.equal(await target.count(mapping.newMatch), await target.count(mapping.keys.oldMatch));
}

Deno.test("mappings on a standalone server: dual-writer, kill -9, resume, verify --full READY", async () => {
  const server = await startRedis();
  const client = server.client();
  try {
    for (const mapping of [TAGGED, RENAMED]) {
      await story(mapping, {
        url: server.url,
        client,
        checkpointed: async () => (await client.get("ai:backfill:cursor") ?? "0") !== "0",
        unlock: async () => void await client.del("ai:backfill:lock"),
        count: (match) => countKeys(client, match),
      }, 3000);
    }
  } finally {
    client.disconnect();
    await server.stop();
  }
});

Deno.test("mappings on a 3-master cluster: dual-writer, kill -9, resume, verify --full READY", async () => {
  const cluster = await startCluster({ masters: 3 });
  const client = cluster.client();
  const nodes = cluster.nodeClients();
  try {
    const ids = await Promise.all(nodes.map(async (n) => String(await n.call("CLUSTER", "MYID"))));
    for (const mapping of [TAGGED, RENAMED]) {
      await story(mapping, {
        url: cluster.url,
        client,
        checkpointed: async () =>
          (await Promise.all(ids.map((id) => client.exists(`{ai:backfill}:cursor:${id}`))))
            .every((n) => n === 1),
        unlock: async () => void await client.del(...ids.map((id) => `{ai:backfill}:lock:${id}`)),
        count: (match) => countClusterKeys(nodes, match),
      }, 1500);
    }
    // The hash tag put each workspace's new keys in one slot: the slot of its id.
    let tagged = 0;
    for (const node of nodes) {
      let cursor = "0";
      do {
        const [next, keys] = await node.scanBuffer(cursor, "MATCH", "ai:job:{*", "COUNT", 1000);
        cursor = next.toString();
        for (const key of keys) {
          const workspace = TAGGED.keys.parseNewKey(key)!.workspace;
          assert.equal(keySlot(key), keySlot(Buffer.from(workspace)), key.toString());
          tagged++;
        }
      } while (cursor !== "0");
    }
    assert.ok(tagged > 1000, `${tagged} tagged keys`);
  } finally {
    client.disconnect();
    for (const node of nodes) node.disconnect();
    await cluster.stop();
  }
});
