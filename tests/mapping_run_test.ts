/**
 * The two mappings of docs/mappings.md, end to end on a standalone server and on a 3-master
 * cluster: a hash-tagged `--to` (each workspace's new keys in one slot) and a renamed prefix whose
 * new name takes a placeholder of the old name and two hash fields (`tenant` and `region`, each
 * with its own `--pattern`). Each runs under a live dual-writer, is killed with SIGKILL mid-run, is
 * refused when resumed with another mapping, resumes with its own, and ends with `verify --full`
 * READY. Then, on each, a name built from two fields under the default rules (checked in the
 * scripts) and under a rule of the client: every field's value is checked, per key.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { keySlot } from "../src/redis/slot.ts";
import type { Cluster, Redis } from "../src/redis/ioredis.ts";
import { KeySchema } from "../src/schema.ts";
import { escapeForLog } from "../src/telemetry/redact.ts";
import { runCli, runJson, spawnCli, waitFor } from "./support/cli.ts";
import { countClusterKeys, startCluster } from "./support/cluster.ts";
import { startRedis } from "./support/redis_server.ts";
import { countKeys } from "./support/seed.ts";

/** A mapping, its flags, and how the application names its jobs under it. */
interface Mapping {
  flags: string[];
  keys: KeySchema;
  /** The old key and the fields its new name reads (name → value) of job `i`. */
  job(i: number): { old: Buffer; values: Record<string, string> };
  /** SCAN MATCH of the new keys. */
  newMatch: string;
}

const TAGGED: Mapping = {
  flags: ["--to", "ai:job:{{workspace_id}}:{job_id}"],
  keys: new KeySchema({ to: "ai:job:{{workspace_id}}:{job_id}" }),
  job: (i) => ({ old: Buffer.from(`ai:jobs:job-${i}`), values: { workspace_id: `ws-${i % 3}` } }),
  newMatch: "ai:job:{*}:*",
};

const TWO_FIELDS: Mapping = {
  flags: [
    "--from",
    "jobs:{queue}:{job_id}",
    "--to",
    "tasks:{tenant}:{region}:{queue}:{job_id}",
    "--pattern",
    "tenant=^t[0-9]+$",
    "--pattern",
    "region=^[a-z]{2}-[0-9]+$",
  ],
  keys: new KeySchema({
    from: "jobs:{queue}:{job_id}",
    to: "tasks:{tenant}:{region}:{queue}:{job_id}",
    patterns: { tenant: "^t[0-9]+$", region: "^[a-z]{2}-[0-9]+$" },
  }),
  job: (i) => ({
    old: Buffer.from(`jobs:${i % 2 ? "high" : "low"}:job-${i}`),
    values: { tenant: `t${i % 3}`, region: i % 5 < 2 ? "eu-1" : "us-12" },
  }),
  newMatch: "tasks:*",
};

/** The new key of job `i` under `mapping`. */
function newKeyOfJob(mapping: Mapping, i: number): Buffer {
  const { old, values } = mapping.job(i);
  return mapping.keys.newKeyOf(old, mapping.keys.fields.map((field) => values[field]!))!;
}

/** The words of each `M=(…)` shell array of a page, in order. */
function shellArrays(text: string): string[][] {
  return [...text.matchAll(/^M=\(((?:[^()']|'[^']*')*)\)$/gm)].map((m) =>
    [...m[1]!.matchAll(/'([^']*)'|[^\s']+/g)].map((word) => word[1] ?? word[0])
  );
}

Deno.test("the mappings run here are the ones docs/mappings.md shows", () => {
  const page = Deno.readTextFileSync(new URL("../docs/mappings.md", import.meta.url));
  assert.deepEqual(shellArrays(page), [TAGGED.flags, TWO_FIELDS.flags]);
});

async function seed(client: Redis | Cluster, mapping: Mapping, from: number, to: number) {
  for (let i = from; i < to; i += 500) {
    const writes = [];
    for (let j = i; j < Math.min(i + 500, to); j++) {
      const { old, values } = mapping.job(j);
      writes.push(client.hset(old, { ...values, status: "queued", payload: `p${j}` }));
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
  let next = jobs;
  for (let n = 0; !stop(); n++) {
    const i = (n * 7919) % jobs;
    if (deleted.has(i)) continue;
    const { old } = mapping.job(i);
    const fresh = newKeyOfJob(mapping, i);
    switch (n % 4) {
      case 0: {
        const made = next++;
        const fields = { ...mapping.job(made).values, status: "live" };
        await app.hset(mapping.job(made).old, fields);
        await app.hset(newKeyOfJob(mapping, made), fields);
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

/** The JSON log lines of `event`. */
function logLines(stderr: string, event: string): Record<string, unknown>[] {
  return stderr.split("\n").filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((line) => line.event === event);
}

/**
 * A new name built from two fields (`w<v>:{workspace_id}:{region}:{job_id}`), under the default
 * rules (checked in the scripts; on a cluster, the copy made by READ where the new key is) and
 * with a rule for `region` (checked by the client; the scripts check the values are unchanged):
 * a key missing either field, or with either value invalid, is skipped as invalid with its reason;
 * `--workspace` filters on the first field; `verify --full --orphans` compares both values.
 */
async function fieldChecks(target: {
  url: string;
  client: Redis | Cluster;
  count: (match: string) => Promise<number>;
}) {
  for (const ruled of [false, true]) {
    const v = ruled ? 1 : 0;
    const flags = [
      "--from",
      `q${v}:{job_id}`,
      "--to",
      `w${v}:{workspace_id}:{region}:{job_id}`,
      ...(ruled ? ["--pattern", "region=^[a-z]{2}-[0-9]+$"] : []),
      "--progress-key",
      `bf:fields${v}`,
      "--redis-url",
      target.url,
    ];
    const jobs = 40;
    for (let i = 0; i < jobs; i++) {
      await target.client.hset(`q${v}:j-${i}`, {
        workspace_id: i % 2 ? "ws-a" : "ws-b",
        region: `eu-${i % 3}`,
        status: "queued",
      });
    }
    const seeded: [string, Record<string, string>, string | undefined][] = [
      ["ok", { workspace_id: "ws-a", region: "eu-1" }, undefined],
      ["other", { workspace_id: "ws-b", region: "eu-1" }, undefined],
      ["no-region", { workspace_id: "ws-a" }, "no_workspace_id"],
      ["no-ws", { region: "eu-1" }, "no_workspace_id"],
      ["bad-region", { workspace_id: "ws-a", region: "eu 1" }, "invalid_workspace_id"],
      ["colon-region", { workspace_id: "ws-a", region: "eu:1" }, "invalid_workspace_id"],
      ["bad-ws", { workspace_id: "bad ws", region: "eu-1" }, "invalid_workspace_id"],
      // Valid under the default rule, not under region's own.
      [
        "loose",
        { workspace_id: "ws-a", region: "x_1" },
        ruled ? "invalid_workspace_id" : undefined,
      ],
    ];
    for (const [id, fields] of seeded) {
      await target.client.hset(`q${v}:${id}`, { ...fields, status: "queued" });
    }
    const invalid = new Map(
      seeded.flatMap(([id, , reason]) => reason === undefined ? [] : [[`q${v}:${id}`, reason]]),
    );
    const valid = jobs + seeded.length - invalid.size;

    const only = await runJson(["--execute", "--rps", "0", "--workspace", "ws-a", ...flags]);
    assert.equal(only.code, 0, only.stderr);
    // ws-a: half the jobs, ok (and loose, under the default rules); ws-b: the other half, other.
    assert.equal(only.summary.migrated, jobs / 2 + (ruled ? 1 : 2));
    assert.equal(only.summary.filtered, jobs / 2 + 1);
    assert.equal(only.summary.skipped_invalid, invalid.size);

    const all = await runJson([
      "--execute",
      "--rps",
      "0",
      "--log-format",
      "json",
      "--reset-progress",
      ...flags,
    ]);
    assert.equal(all.code, 0, all.stderr);
    assert.equal(all.summary.migrated, jobs / 2 + 1);
    assert.equal(all.summary.skipped_exists, jobs / 2 + (ruled ? 1 : 2));
    assert.equal(all.summary.skipped_invalid, invalid.size);
    const logged = new Map(logLines(all.stderr, "invalid_key").map((l) => [l.key, l.reason]));
    for (const [key, reason] of invalid) {
      assert.equal(
        logged.get(escapeForLog(key, 200)),
        reason,
        `${key} (${ruled ? "rule" : "default"})`,
      );
    }
    assert.equal(await target.count(`w${v}:*`), valid);
    const ok = await target.client.hgetall(`w${v}:ws-a:eu-1:ok`);
    assert.deepEqual(ok, { workspace_id: "ws-a", region: "eu-1", status: "queued" });

    const verify = await runJson(["verify", "--full", "--orphans", ...flags]);
    assert.equal(verify.code, 0, verify.stdout + verify.stderr);
    assert.match(String(verify.summary.verdict), /^READY/);
    assert.equal(verify.summary.invalid, invalid.size);
    assert.equal(verify.summary.matched, valid);
    // A sampled verify of one workspace reads the first field on both sides: ws-a's old keys are
    // its 20 jobs and 4 seeded keys (a key missing a field of the new name belongs to no
    // workspace), its new keys the copies.
    const wsInvalid = [...invalid.keys()].filter((key) => !/:(no-ws|bad-ws|no-region)$/.test(key))
      .length;
    const wsA = await runJson(["verify", "--sample", "1000", "--workspace", "ws-a", ...flags]);
    assert.equal(wsA.code, 0, wsA.stdout + wsA.stderr);
    assert.equal(wsA.summary.workspace, "ws-a");
    assert.equal(wsA.summary.sampled, jobs / 2 + 4);
    assert.equal(wsA.summary.invalid, wsInvalid);
    assert.equal(wsA.summary.matched, jobs / 2 + 4 - wsInvalid);
    assert.equal(wsA.summary.orphans_sampled, jobs / 2 + 4 - wsInvalid);
    // A new key whose old key holds another region, and one whose old key is gone: orphans.
    await target.client.hset(`w${v}:ws-a:us-1:ok`, { workspace_id: "ws-a", region: "us-1" });
    await target.client.hset(`w${v}:ws-a:eu-1:gone`, { workspace_id: "ws-a", region: "eu-1" });
    const orphans = await runJson(["verify", "--full", "--orphans", ...flags]);
    assert.equal(orphans.summary.orphans, 2, orphans.stdout);
    assert.match(String(orphans.summary.verdict), /^NOT READY/);
    assert.notEqual(orphans.code, 0);
  }
}

Deno.test("mappings on a standalone server: dual-writer, kill -9, resume, verify --full READY", async () => {
  const server = await startRedis();
  const client = server.client();
  try {
    for (const mapping of [TAGGED, TWO_FIELDS]) {
      await story(mapping, {
        url: server.url,
        client,
        checkpointed: async () => (await client.get("ai:backfill:cursor") ?? "0") !== "0",
        unlock: async () => void await client.del("ai:backfill:lock"),
        count: (match) => countKeys(client, match),
      }, 3000);
    }
    await fieldChecks({ url: server.url, client, count: (match) => countKeys(client, match) });
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
    for (const mapping of [TAGGED, TWO_FIELDS]) {
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
    await fieldChecks({
      url: cluster.url,
      client,
      count: (match) => countClusterKeys(nodes, match),
    });
  } finally {
    client.disconnect();
    for (const node of nodes) node.disconnect();
    await cluster.stop();
  }
});
