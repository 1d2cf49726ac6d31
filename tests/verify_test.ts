import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { Cluster, type Redis } from "../src/redis/ioredis.ts";
import { KeySchema } from "../src/schema.ts";
import { newKeyFor, oldKeyFor } from "./support/keys.ts";
import {
  runVerify,
  type VerifyDeps,
  type VerifyOptions,
  type VerifyTarget,
} from "../src/verify/run.ts";
import { VERIFY_DEFAULTS } from "../src/defaults.ts";
import type { RateLimiter } from "../src/control/rate_limit.ts";
import {
  computeParity,
  formatPercent,
  renderVerifyText,
  verifyPassed,
  type VerifyReport,
} from "../src/verify/report.ts";
import { sampleKeys } from "../src/verify/sample.ts";
import { type RedisServer, startRedis } from "./support/redis_server.ts";

// ---------------------------------------------------------------------------------------------
// helpers

type Fields = Record<string, string | Buffer>;

interface Job {
  id: string | Buffer;
  workspace: string;
  fields: Fields;
  ttlMs?: number;
}

/** Job `i` of `workspace`: even jobs carry a TTL, so TTL handling is always exercised. */
function job(i: number, workspace = "ws1"): Job {
  return {
    id: `job-${i}`,
    workspace,
    fields: { workspace_id: workspace, status: "done", payload: `secret-payload-${i}` },
    ttlMs: i % 2 === 0 ? 600_000 : undefined,
  };
}

/** Writes the old key of each job, and the new key (same fields, same TTL) when `migrated`. */
async function seed(client: Redis, jobs: Job[], migrated: (job: Job, i: number) => boolean) {
  const pipeline = client.pipeline();
  jobs.forEach((j, i) => {
    const keys = [oldKeyFor(j.id)];
    if (migrated(j, i)) keys.push(newKeyFor(j.workspace, j.id));
    for (const key of keys) {
      pipeline.hset(key, j.fields);
      if (j.ttlMs !== undefined) pipeline.pexpire(key, j.ttlMs);
    }
  });
  await pipeline.exec();
}

/** The verify target of a standalone server. */
function standalone(client: Redis): VerifyTarget {
  return { kind: "standalone", client, masters: () => [client] };
}

function range(n: number, from = 0): number[] {
  return Array.from({ length: n }, (_, i) => from + i);
}

function options(overrides: Partial<VerifyOptions> = {}): VerifyOptions {
  return { ...VERIFY_DEFAULTS, keys: new KeySchema(), recheckDelayMs: 5, ...overrides };
}

async function rdbChanges(client: Redis): Promise<number> {
  const info = await client.info("persistence");
  const match = /rdb_changes_since_last_save:(\d+)/.exec(info);
  assert.ok(match, "INFO persistence has rdb_changes_since_last_save");
  return Number(match[1]);
}

/** runVerify against a standalone server, asserting that it wrote nothing. */
async function verifyReadOnly(
  client: Redis,
  overrides: Partial<VerifyOptions> = {},
  deps: VerifyDeps = {},
): Promise<VerifyReport> {
  const before = await rdbChanges(client);
  const report = await runVerify(standalone(client), options(overrides), deps);
  assert.equal(await rdbChanges(client), before, "verify wrote to Redis");
  return report;
}

async function withRedis(fn: (client: Redis, server: RedisServer) => Promise<void>) {
  const server = await startRedis();
  const client = server.client();
  try {
    await fn(client, server);
  } finally {
    await client.quit();
    await server.stop();
  }
}

/** A limiter stand-in that records each acquire and can act just before the n-th one returns. */
class RecordingLimiter implements Pick<RateLimiter, "acquire"> {
  calls: number[] = [];
  constructor(private readonly before?: (call: number) => Promise<void>) {}
  async acquire(n: number): Promise<number> {
    this.calls.push(n);
    await this.before?.(this.calls.length);
    return 0;
  }
}

const sorted = (items: string[]) => [...items].sort();

// ---------------------------------------------------------------------------------------------
// pure parts

Deno.test("the pair rule (in Redis) classifies field, type and TTL differences", async () => {
  await withRedis(async (client) => {
    const at = Date.now() + 600_000;
    const base = { workspace_id: "ws1", a: "1" };
    // [new key's fields or a string, old key's PEXPIREAT, new key's PEXPIREAT] per job.
    const cases: Record<string, [Record<string, string> | "string", number?, number?]> = {
      same: [base],
      "ttl-within": [base, at + 10_000, at + 15_000], // 5 s apart: within --ttl-tolerance 5
      "ttl-beyond": [base, at + 10_000, at + 15_001],
      "ttl-old-only": [base, at],
      "ttl-new-only": [base, undefined, at],
      "value-differs": [{ ...base, a: "2" }],
      "extra-field": [{ ...base, b: "1" }],
      "not-a-hash": ["string"],
    };
    for (const [id, [fresh, oldAt, newAt]] of Object.entries(cases)) {
      await client.hset(oldKeyFor(id), base);
      if (oldAt !== undefined) await client.pexpireat(oldKeyFor(id), oldAt);
      const key = newKeyFor("ws1", id);
      if (fresh === "string") await client.set(key, "x");
      else await client.hset(key, fresh);
      if (newAt !== undefined) await client.pexpireat(key, newAt);
    }
    await client.hset(oldKeyFor("no-copy"), base);
    const report = await verifyReadOnly(client, { ttlToleranceSeconds: 5, recheck: 0 });
    assert.deepEqual(
      { matched: report.matched, missing: report.missing, mismatched: report.mismatched },
      { matched: 2, missing: 1, mismatched: 6 },
    );
    assert.deepEqual(report.mismatch_reasons, { type: 1, fields: 2, ttl: 3 });
    assert.deepEqual(sorted(report.examples.mismatched), sorted(Object.keys(cases).slice(2)));
    assert.deepEqual(report.examples.missing, ["no-copy"]);
  });
});

Deno.test("sampled verify compares in Redis: no field value is read outside the script", async () => {
  const server = await startRedis();
  const client = server.client();
  const monitor = await server.client().monitor();
  try {
    const jobs = range(20).map((i) => job(i));
    await seed(client, jobs, (_, i) => i !== 3);
    await client.hset(newKeyFor("ws1", "job-4"), "payload", "changed");
    const outside = new Set<string>();
    monitor.on("monitor", (_time: string, args: string[], source: string) => {
      if (source !== "lua") outside.add(args[0]!.toLowerCase());
    });
    const report = await runVerify(standalone(client), options({ recheck: 1 }));
    await client.ping();
    assert.deepEqual(
      { matched: report.matched, missing: report.missing, mismatched: report.mismatched },
      { matched: 18, missing: 1, mismatched: 1 },
    );
    // What reaches the client: counts, names, codes and digests, never a value.
    for (const command of ["hgetall", "hget", "hmget", "hvals", "pttl", "exists"]) {
      assert.ok(!outside.has(command), `${command} sent outside the script: ${[...outside]}`);
    }
    assert.ok(outside.has("evalsha_ro"), [...outside].join(" "));
  } finally {
    monitor.disconnect();
    client.disconnect();
    await server.stop();
  }
});

Deno.test("parity, threshold and rendering", async (t) => {
  await t.step("parity is 1 when nothing valid was sampled", () => {
    assert.equal(computeParity(0, 0, 0), 1);
    assert.equal(computeParity(0, 3, 3), 1);
    assert.equal(computeParity(29, 103, 3), 0.29);
  });
  await t.step("threshold is inclusive despite float noise; orphans fail", () => {
    assert.equal(verifyPassed(0.29, 29, 0), true);
    assert.equal(verifyPassed(0.2899, 29, 0), false);
    assert.equal(verifyPassed(1, 100, 1), false);
  });
  await t.step("percent rounds down", () => {
    assert.equal(formatPercent(0.99999), "99.99%");
    assert.equal(formatPercent(1), "100.00%");
    assert.equal(formatPercent(0.5), "50.00%");
  });
});

// ---------------------------------------------------------------------------------------------
// against redis-server

Deno.test("half-migrated keyspace: parity 0.5, fails at 100, passes at 30 and at exactly 50", async () => {
  await withRedis(async (client) => {
    await seed(client, range(200).map((i) => job(i)), (_, i) => i % 2 === 0);
    const report = await verifyReadOnly(client);
    assert.equal(report.sampling, "scan");
    assert.equal(report.old_keys, 200);
    assert.equal(report.old_keys_exact, true);
    assert.equal(report.sampled, 200);
    assert.equal(report.matched, 100);
    assert.equal(report.missing, 100);
    assert.equal(report.mismatched, 0);
    assert.equal(report.parity, 0.5);
    assert.equal(report.orphans, 0);
    assert.equal(report.passed, false);
    assert.equal(report.examples.missing.length, 10);

    assert.equal((await verifyReadOnly(client, { minParity: 30 })).passed, true);
    assert.equal((await verifyReadOnly(client, { minParity: 50 })).passed, true);
  });
});

Deno.test("random sampling of a large half-migrated keyspace: parity about 0.5", async () => {
  await withRedis(async (client) => {
    await seed(client, range(4000).map((i) => job(i)), (_, i) => i % 2 === 0);
    const report = await verifyReadOnly(client, {
      sample: 400,
      orphanSample: 200,
      sampling: { scanBelow: 0 },
    });
    assert.equal(report.sampling, "random");
    assert.equal(report.orphan_sampling, "random");
    assert.equal(report.sampled, 400);
    assert.equal(report.matched + report.missing, 400);
    // 400 draws: the standard error of the parity is 0.025; 0.1 is four of them.
    assert.ok(Math.abs(report.parity - 0.5) < 0.1, `parity ${report.parity}`);
    assert.ok(Math.abs(report.old_keys - 4000) < 1000, `estimate ${report.old_keys}`);
    assert.equal(report.old_keys_exact, false);
    assert.equal(report.orphans_sampled, 200);
    assert.equal(report.passed, false);
  });
});

Deno.test("a population too rare for random draws falls back to an exact scan", async () => {
  await withRedis(async (client) => {
    await seed(client, range(3000).map((i) => job(i)), () => false);
    const report = await verifyReadOnly(client, {
      sample: 100,
      recheck: 0,
      sampling: { scanBelow: 0 },
    });
    assert.equal(report.sampling, "random");
    assert.equal(report.missing, 100);
    // no new keys at all: the probe finds none and scans instead of drawing on
    assert.equal(report.orphan_sampling, "scan");
    assert.equal(report.new_keys, 0);
    assert.equal(report.new_keys_exact, true);
    assert.equal(report.orphans_sampled, 0);
  });
});

Deno.test("fully migrated keyspace: parity 1 and passed, in both sampling modes", async () => {
  await withRedis(async (client) => {
    await seed(client, range(3000).map((i) => job(i)), () => true);
    const exact = await verifyReadOnly(client, { sample: 5000 });
    assert.equal(exact.sampled, 3000);
    assert.equal(exact.matched, 3000);
    assert.equal(exact.parity, 1);
    assert.equal(exact.orphans_sampled, 3000);
    assert.equal(exact.orphans, 0);
    assert.equal(exact.passed, true);

    const sampled = await verifyReadOnly(client, { sample: 300, sampling: { scanBelow: 0 } });
    assert.equal(sampled.sampling, "random");
    assert.equal(sampled.sampled, 300);
    assert.equal(sampled.parity, 1);
    assert.equal(sampled.passed, true);
  });
});

Deno.test("tampered values, deleted new keys, stripped TTLs and invalid keys are counted exactly", async () => {
  await withRedis(async (client) => {
    const jobs = range(100).map((i) => job(i));
    await seed(client, jobs, () => true);
    const newKey = (i: number) => newKeyFor("ws1", `job-${i}`);
    const fieldTampered = [1, 2, 3];
    for (const i of fieldTampered) await client.hset(newKey(i), "status", "failed");
    await client.hset(newKey(5), "extra", "x"); // an extra field is a difference too
    const deleted = [10, 11, 12, 13];
    for (const i of deleted) await client.del(newKey(i));
    const stripped = [20, 22, 24];
    for (const i of stripped) await client.persist(newKey(i));
    await client.expire(newKey(31), 100); // old has no TTL, new has one
    await client.pexpire(newKey(40), 600_000 + 3_000); // within the 5 s tolerance: matched
    await client.pexpire(newKey(42), 600_000 + 10_000); // beyond it
    await client.del(newKey(50));
    await client.set(newKey(50), "not a hash");
    // invalid old keys: no workspace_id, not a hash, a workspace id with ':', an empty job id
    await client.hset("ai:jobs:bad-nows", { status: "done" });
    await client.set("ai:jobs:bad-type", "x");
    await client.hset("ai:jobs:bad-ws", { workspace_id: "bad:ws" });
    await client.hset("ai:jobs:", { workspace_id: "ws1" });

    const report = await verifyReadOnly(client, { recheck: 1 });
    assert.equal(report.sampled, 104);
    assert.equal(report.invalid, 4);
    assert.equal(report.missing, 4);
    assert.deepEqual(report.mismatch_reasons, { fields: 4, ttl: 5, type: 1 });
    assert.equal(report.mismatched, 10);
    assert.equal(report.matched, 86);
    assert.equal(report.parity, 0.86);
    assert.equal(report.orphans, 0);
    assert.equal(report.gone, 0);
    assert.equal(report.transient, 0);
    assert.equal(report.passed, false);
    const ids = (list: number[]) => sorted(list.map((i) => `job-${i}`));
    assert.deepEqual(sorted(report.examples.missing), ids(deleted));
    assert.deepEqual(
      sorted(report.examples.mismatched),
      ids([...fieldTampered, 5, ...stripped, 31, 42, 50]),
    );
    assert.deepEqual(
      sorted(report.examples.invalid),
      sorted(["bad-nows", "bad-type", "bad-ws", ""]),
    );

    const text = renderVerifyText(report);
    const json = JSON.stringify(report);
    for (const output of [text, json]) {
      assert.ok(!output.includes("secret-payload"), "a field value leaked into the report");
      assert.ok(!output.includes("failed"), "a tampered value leaked into the report");
    }
    assert.match(text, /^Parity:\s+86\.00%/m);
    assert.match(text, /^Missing:\s+4$/m);
    assert.match(text, /^Mismatched:\s+10\s+\(fields: 4, ttl: 5, type: 1\)$/m);
    assert.match(text, /^Result:\s+FAILED$/m);
    assert.match(text, /^ {2}job-10$/m);
    assert.match(text, /^ {2}\(empty job id\)$/m);
    const parsed = JSON.parse(json);
    for (const field of ["sampled", "matched", "missing", "mismatched", "invalid", "orphans"]) {
      assert.equal(typeof parsed[field], "number", field);
    }
    assert.equal(parsed.parity, 0.86);
  });
});

Deno.test("orphans: new keys without an old twin fail the verify even at full parity", async () => {
  await withRedis(async (client) => {
    await seed(client, range(50).map((i) => job(i)), () => true);
    for (const id of ["stray-1", "stray-2", "stray-3"]) {
      await client.hset(newKeyFor("ws2", id), { workspace_id: "ws2" });
    }
    const report = await verifyReadOnly(client);
    assert.equal(report.parity, 1);
    assert.equal(report.orphans_sampled, 53);
    assert.equal(report.orphans, 3);
    assert.deepEqual(sorted(report.examples.orphans), ["stray-1", "stray-2", "stray-3"]);
    assert.equal(report.passed, false);
    assert.match(renderVerifyText(report), /^Orphans:\s+3\s/m);
  });
});

Deno.test("job ids and field names are compared and reported byte for byte", async () => {
  await withRedis(async (client) => {
    const binaryId = Buffer.from([0x6a, 0xff, 0x00, 0x01]);
    const twinId = Buffer.from([0x6a, 0xfe]);
    // Two field names that are both invalid UTF-8: decoded as strings they would collide.
    await client.hset(oldKeyFor(binaryId), "workspace_id", "ws1", Buffer.from([0xff]), "a");
    await client.hset(newKeyFor("ws1", binaryId), "workspace_id", "ws1", Buffer.from([0xfe]), "a");
    await client.hset(oldKeyFor(twinId), "workspace_id", "ws1", Buffer.from([0xff]), "a");
    await client.hset(newKeyFor("ws1", twinId), "workspace_id", "ws1", Buffer.from([0xff]), "a");
    const report = await verifyReadOnly(client);
    assert.equal(report.sampled, 2);
    assert.equal(report.matched, 1);
    assert.equal(report.mismatched, 1);
    assert.deepEqual(report.examples.mismatched, ["j\\xff\\x00\\x01"]);
  });
});

Deno.test("--workspace restricts both samples to that workspace's jobs", async () => {
  await withRedis(async (client) => {
    const w1 = range(600).map((i) => job(i, "w1"));
    const w2 = range(1400, 1000).map((i) => job(i, "w2"));
    await seed(client, [...w1, ...w2], (j) => j.workspace === "w1");
    await client.hset("ai:jobs:no-ws", { status: "x" });
    await client.set("ai:jobs:not-hash", "x");

    const exact1 = await verifyReadOnly(client, { workspace: "w1", sample: 2000 });
    assert.equal(exact1.sampling, "scan");
    assert.equal(exact1.old_keys, 600);
    assert.equal(exact1.sampled, 600);
    assert.equal(exact1.matched, 600);
    assert.equal(exact1.invalid, 0);
    assert.equal(exact1.orphans_sampled, 600);
    assert.equal(exact1.passed, true);

    const exact2 = await verifyReadOnly(client, { workspace: "w2", sample: 2000 });
    assert.equal(exact2.sampled, 1400);
    assert.equal(exact2.missing, 1400);
    assert.equal(exact2.parity, 0);
    assert.equal(exact2.orphans_sampled, 0);
    assert.equal(exact2.workspace, "w2");

    const random1 = await verifyReadOnly(client, {
      workspace: "w1",
      sample: 50,
      sampling: { scanBelow: 0 },
    });
    assert.equal(random1.sampling, "random");
    assert.equal(random1.sampled, 50);
    assert.equal(random1.matched, 50);
    const random2 = await verifyReadOnly(client, {
      workspace: "w2",
      sample: 50,
      sampling: { scanBelow: 0 },
    });
    assert.equal(random2.sampled, 50);
    assert.equal(random2.missing, 50);
  });
});

Deno.test("a difference that a live write resolves before a recheck is not counted", async () => {
  await withRedis(async (client) => {
    const jobs = range(10).map((i) => job(i));
    await seed(client, jobs, () => true);
    await client.del(newKeyFor("ws1", "job-3"));
    await client.hset(newKeyFor("ws1", "job-4"), "status", "failed");
    // Call 2 is the first recheck round: the "application" completes job-3's dual write then.
    const limiter = new RecordingLimiter(async (call) => {
      if (call === 2) await seed(client, [jobs[3] as Job], () => true);
    });
    const report = await runVerify(
      standalone(client),
      options({ recheck: 3 }),
      { limiter },
    );
    assert.equal(report.matched, 9);
    assert.equal(report.missing, 0);
    assert.equal(report.mismatched, 1);
    assert.equal(report.transient, 1);
    // forward check of 10, rechecks of 2, then 1, then 1; orphan check of 10
    assert.deepEqual(limiter.calls, [10, 2, 1, 1, 10]);
  });
});

Deno.test("keys that vanish while verifying are counted as gone, not sampled", async () => {
  await withRedis(async (client) => {
    await seed(client, range(10).map((i) => job(i)), () => true);
    const limiter = new RecordingLimiter(async (call) => {
      if (call === 1) await client.del(oldKeyFor("job-7"), newKeyFor("ws1", "job-7"));
    });
    const report = await runVerify(standalone(client), options(), { limiter });
    assert.equal(report.gone, 1);
    assert.equal(report.sampled, 9);
    assert.equal(report.matched, 9);
    assert.equal(report.orphans_sampled, 9);
    assert.equal(report.passed, true);
  });
});

Deno.test("--rps paces every key check through the limiter", async () => {
  await withRedis(async (client) => {
    await seed(client, range(10).map((i) => job(i)), () => true);
    const limiter = new RecordingLimiter();
    const report = await verifyReadOnly(client, { rps: 8 }, { limiter });
    assert.equal(report.matched, 10);
    // a quarter second's budget per batch: 2 keys, for 10 old and 10 new keys
    assert.deepEqual(limiter.calls, Array(10).fill(2));

    // Without an injected limiter, the real sliding window paces: 20 checks at 10/s wait ~1 s.
    const paced = await verifyReadOnly(client, { rps: 10 });
    assert.equal(paced.matched, 10);
    assert.ok(paced.limiter_wait_seconds >= 0.9, `waited ${paced.limiter_wait_seconds} s`);
  });
});

Deno.test("bad options and aborts reject", async () => {
  await withRedis(async (client) => {
    await seed(client, range(5).map((i) => job(i)), (_, i) => i > 0);
    const target: VerifyTarget = standalone(client);
    await assert.rejects(runVerify(target, options({ sample: 0 })), RangeError);
    await assert.rejects(runVerify(target, options({ minParity: 101 })), RangeError);
    await assert.rejects(runVerify(target, options({ recheck: -1 })), RangeError);
    await assert.rejects(runVerify(target, options({ rps: 1.5 })), RangeError);

    const aborted = new AbortController();
    aborted.abort(new Error("stop"));
    await assert.rejects(runVerify(target, options(), { signal: aborted.signal }), /stop/);

    // job-0 stays missing, so verify sits in a long recheck pause when the abort comes.
    const later = new AbortController();
    const timer = setTimeout(() => later.abort(new Error("late stop")), 100);
    const started = performance.now();
    try {
      await assert.rejects(
        runVerify(target, options({ recheckDelayMs: 60_000 }), { signal: later.signal }),
        /late stop/,
      );
    } finally {
      clearTimeout(timer);
    }
    assert.ok(performance.now() - started < 10_000);
  });
});

Deno.test("sampling weighs nodes by key count and is exact when N covers the population", async () => {
  const a = await startRedis();
  const b = await startRedis();
  const clientA = a.client();
  const clientB = b.client();
  try {
    const fill = async (client: Redis, keys: string[]) => {
      const pipeline = client.pipeline();
      for (const key of keys) pipeline.hset(key, "workspace_id", "ws1");
      await pipeline.exec();
    };
    await fill(clientA, range(3000).map((i) => `ai:jobs:a-${i}`));
    await fill(clientB, [
      ...range(1000).map((i) => `ai:jobs:b-${i}`),
      ...range(2000).map((i) => `other:${i}`),
    ]);
    const population = {
      match: "ai:jobs:*",
      isCandidate: (key: Buffer) => key.toString().startsWith("ai:jobs:"),
    };
    const nodes = [clientA, clientB];

    const random = await sampleKeys(nodes, population, 400, { tuning: { scanBelow: 0 } });
    assert.equal(random.method, "random");
    const names = random.keys.map((key) => key.toString());
    assert.equal(new Set(names).size, 400);
    const fromA = names.filter((name) => name.startsWith("ai:jobs:a-")).length;
    // A holds 3/4 of the old keys (standard error of the share: 0.022 over 400 keys).
    assert.ok(Math.abs(fromA / 400 - 0.75) < 0.1, `share of A: ${fromA / 400}`);

    const all = await sampleKeys(nodes, population, 4000, { tuning: { scanBelow: 0 } });
    assert.equal(all.method, "scan");
    assert.equal(all.exact, true);
    assert.equal(all.population, 4000);
    const allNames = all.keys.map((key) => key.toString());
    assert.equal(allNames.length, 4000);
    assert.equal(new Set(allNames).size, 4000);

    const part = await sampleKeys(nodes, population, 1000, { tuning: { scanBelow: 100_000 } });
    assert.equal(part.method, "scan");
    assert.equal(part.population, 4000);
    assert.equal(new Set(part.keys.map((key) => key.toString())).size, 1000);
  } finally {
    await clientA.quit();
    await clientB.quit();
    await a.stop();
    await b.stop();
  }
});

Deno.test("reads through a cluster client (single-master cluster)", async () => {
  const server = await startRedis({
    // announce-ip: otherwise CLUSTER SLOTS reports an empty host that ioredis cannot reach.
    args: [
      "--cluster-enabled",
      "yes",
      "--cluster-config-file",
      "nodes.conf",
      "--cluster-announce-ip",
      "127.0.0.1",
    ],
  });
  const node = server.client();
  let cluster: Cluster | undefined;
  try {
    await node.call("CLUSTER", "ADDSLOTSRANGE", "0", "16383");
    // The state turns ok on the next cluster cron tick (about a second or two).
    let ready = false;
    for (let i = 0; i < 100 && !ready; i++) {
      ready = String(await node.call("CLUSTER", "INFO")).includes("cluster_state:ok");
      if (!ready) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.ok(ready, "single-master cluster did not reach cluster_state:ok");
    await seed(node, range(20).map((i) => job(i)), (_, i) => i < 15);
    await node.hset(newKeyFor("ws1", "stray"), { workspace_id: "ws1" });
    await node.hset(newKeyFor("ws1", "job-1"), "status", "failed");
    cluster = new Cluster([{ host: "127.0.0.1", port: server.port }]);
    const before = await rdbChanges(node);
    const report = await runVerify(
      { kind: "cluster", client: cluster, masters: () => [node] },
      options(),
    );
    assert.equal(await rdbChanges(node), before);
    assert.equal(report.sampled, 20);
    assert.equal(report.matched, 14);
    assert.equal(report.mismatched, 1);
    assert.equal(report.missing, 5);
    assert.equal(report.orphans, 1);
    assert.deepEqual(report.examples.orphans, ["stray"]);
  } finally {
    await cluster?.quit();
    await node.quit();
    await server.stop();
  }
});
