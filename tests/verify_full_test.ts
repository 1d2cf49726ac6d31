/**
 * `backfill verify --full` through the real CLI against real redis-server processes: exact counts
 * with one tampered key of each kind (standalone and a 3-master cluster), a report that matches
 * the counts and holds no value, a live dual-writer, kill -9 and resume, read-only, bad input.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type { Cluster, Redis } from "../src/redis/ioredis.ts";
import { newKeyFor, oldKeyFor } from "./support/keys.ts";
import { runCli, runJson, spawnCli, waitFor } from "./support/cli.ts";
import { seedOldCluster, startCluster } from "./support/cluster.ts";
import { freePort, startRedis } from "./support/redis_server.ts";
import { seedOld, type TestJob } from "./support/seed.ts";

/** Every field value carries this, so a leak of any value shows up in a grep. */
const MARKER = "VALUE-MARKER-7f3a";

function jobs(count: number): TestJob[] {
  return Array.from({ length: count }, (_, i) => ({
    id: `job-${i}`,
    workspace: ["ws-a", "ws-b", "ws-c"][i % 3]!,
    fields: { status: `${MARKER}-s${i}`, payload: `${MARKER}-p${i}`, n: String(i) },
    ttl: i % 3 === 0 ? 3600 : undefined,
  }));
}

/** One key of each kind (jobs 1–5 must exist: job-3 has a TTL). Returns the expected counts. */
async function tamper(client: Redis | Cluster, all: TestJob[]) {
  const key = (i: number) => newKeyFor(all[i]!.workspace, all[i]!.id);
  await client.del(key(1)); // missing
  await client.hdel(key(2), "payload"); // field_missing
  await client.hset(key(4), "status", `${MARKER}-changed`); // field_differs
  await client.expire(key(3), 99_999); // ttl
  await client.del(key(5));
  await client.set(key(5), `${MARKER}-string`); // type
  await client.hset(oldKeyFor("bad"), "workspace_id", "bad:ws", "x", MARKER); // invalid
  await client.hset(newKeyFor("ws-a", "ghost"), "workspace_id", "ws-a", "x", MARKER); // orphan
  // A copy under another workspace than its old key names.
  await client.hset(newKeyFor("ws-z", all[7]!.id), "workspace_id", "ws-z", "x", MARKER);
  return {
    checked: all.length + 1,
    matched: all.length - 5,
    missing: 1,
    field_missing: 1,
    field_differs: 1,
    ttl: 1,
    type: 1,
    invalid: 1,
    orphans: 2,
    // every new key: the seeded ones minus the deleted one, plus the two orphans
    new_checked: all.length - 1 + 2,
  };
}

async function assertReport(path: string, expected: Record<string, number>, stderr: string) {
  const text = await Deno.readTextFile(path);
  assert.ok(!text.includes(MARKER) && !stderr.includes(MARKER), "no field value leaks");
  const lines = text.trim().split("\n").map((line) => JSON.parse(line));
  const byKind: Record<string, number> = {};
  for (const line of lines) byKind[line.kind] = (byKind[line.kind] ?? 0) + 1;
  for (const kind of ["missing", "field_missing", "field_differs", "ttl", "type", "invalid"]) {
    assert.equal(byKind[kind] ?? 0, expected[kind], `report lines of ${kind}`);
  }
  assert.equal(byKind.orphan ?? 0, expected.orphans);
  assert.equal(new Set(lines.map((l) => `${l.kind}/${l.job_id}`)).size, lines.length, "no twice");
  const find = (kind: string) => lines.find((line) => line.kind === kind);
  assert.deepEqual(find("field_missing").fields, ["payload"]);
  assert.deepEqual(find("field_differs").fields, ["status"]);
  assert.equal(find("invalid").workspace, null);
  const wrongWorkspace = lines.find((line) => line.reason === "other_workspace");
  assert.deepEqual(
    { job_id: wrongWorkspace.job_id, workspace: wrongWorkspace.workspace },
    { job_id: "job-7", workspace: "ws-z" },
  );
}

function assertCounts(summary: Record<string, unknown>, expected: Record<string, number>) {
  for (const [name, value] of Object.entries(expected)) {
    assert.equal(summary[name], value, name);
  }
}

Deno.test("verify --full (standalone): exact counts of each kind, matching report, no values", async () => {
  const server = await startRedis();
  const client = server.client();
  const report = await Deno.makeTempFile({ suffix: ".ndjson" });
  try {
    const all = jobs(600);
    await seedOld(client, all);
    assert.equal(
      (await runCli(["--execute", "--rps", "0", "-q", "--redis-url", server.url])).code,
      0,
    );
    const expected = await tamper(client, all);
    const result = await runJson([
      "verify",
      "--full",
      "--orphans",
      "--report",
      report,
      "--redis-url",
      server.url,
      "--recheck-delay",
      "20",
    ]);
    assert.equal(result.code, 1, result.stderr);
    assertCounts(result.summary, expected);
    assert.ok(!result.stdout.includes(MARKER));
    assert.match(String(result.summary.verdict), /^NOT READY: 1 missing/);
    await assertReport(report, expected, result.stderr);
    // Finished: the checkpoint and the lock are gone.
    assert.equal(await client.exists("ai:backfill:verify:state", "ai:backfill:verify:lock"), 0);
  } finally {
    client.disconnect();
    await server.stop();
    await Deno.remove(report);
  }
});

Deno.test("verify --full (3-master cluster): exact counts of each kind, matching report", async () => {
  const cluster = await startCluster();
  const client = cluster.client();
  const report = await Deno.makeTempFile({ suffix: ".ndjson" });
  try {
    const all = jobs(600);
    await seedOldCluster(client, all);
    const run = await runCli(["--execute", "--rps", "0", "-q", "--redis-url", cluster.url]);
    assert.equal(run.code, 0, run.stderr);
    const expected = await tamper(client, all);
    const nodes = cluster.nodeClients();
    try {
      for (const node of nodes) await node.call("CONFIG", "RESETSTAT");
      const result = await runJson([
        "verify",
        "--full",
        "--orphans",
        "--report",
        report,
        "--redis-url",
        cluster.url,
        "--recheck-delay",
        "20",
      ]);
      assert.equal(result.code, 1, result.stderr);
      assertCounts(result.summary, expected);
      await assertReport(report, expected, result.stderr);
      // New keys on other masters (~2/3 of 600) are found by slot, not by a failing read that
      // would count one error reply each (the few counted come from the connection's set-up).
      for (const node of nodes) {
        const errors = Number(/total_error_replies:(\d+)/.exec(await node.info("stats"))?.[1]);
        assert.ok(errors < 20, `${errors} error replies`);
      }
    } finally {
      for (const node of nodes) node.disconnect();
    }
    // A clean store passes: repair what tamper() broke, and the verdict says ready.
    for (const key of [newKeyFor("ws-a", "ghost"), newKeyFor("ws-z", "job-7"), oldKeyFor("bad")]) {
      await client.del(key);
    }
    for (const i of [1, 2, 3, 4, 5]) await client.del(newKeyFor(all[i]!.workspace, all[i]!.id));
    assert.equal(
      (await runCli(["--execute", "--rps", "0", "-q", "--redis-url", cluster.url])).code,
      0,
    );
    const clean = await runJson(["verify", "--full", "--orphans", "--redis-url", cluster.url]);
    assert.equal(clean.code, 0, clean.stdout);
    assert.equal(clean.summary.parity, 1);
    assert.match(String(clean.summary.verdict), /^READY/);
  } finally {
    client.disconnect();
    await cluster.stop();
    await Deno.remove(report);
  }
});

Deno.test("verify --full: a live dual-writer gives no false mismatches after rechecks", async () => {
  const server = await startRedis();
  const client = server.client();
  const writers = Array.from({ length: 30 }, () => server.client());
  try {
    const all = jobs(1500);
    await seedOld(client, all);
    assert.equal(
      (await runCli(["--execute", "--rps", "0", "-q", "--redis-url", server.url])).code,
      0,
    );
    // The application: old key first, a pause, then the new key (the window verify may see).
    let stop = false;
    const loops = writers.map(async (writer, w) => {
      for (let n = 0; !stop; n++) {
        const job = all[(w * 7919 + n * 31) % all.length]!;
        const [oldKey, newKey] = [oldKeyFor(job.id), newKeyFor(job.workspace, job.id)];
        const value = `${MARKER}-live-${w}-${n}`;
        await writer.hset(oldKey, "status", value);
        if (n % 5 === 0) await writer.expire(oldKey, 7200);
        await new Promise((resolve) => setTimeout(resolve, 20));
        await writer.hset(newKey, "status", value);
        if (n % 5 === 0) await writer.expire(newKey, 7200);
      }
    });
    try {
      // Without rechecks the writer's windows do show up: the test can see a false mismatch.
      const naive = await runJson([
        "verify",
        "--full",
        "--recheck",
        "0",
        "--redis-url",
        server.url,
      ]);
      assert.ok(Number(naive.summary.mismatched) > 0, "the writer's windows are visible");
      const checked = await runJson([
        "verify",
        "--full",
        "--recheck-delay",
        "100",
        "--redis-url",
        server.url,
      ]);
      assert.equal(checked.code, 0, checked.stdout);
      assert.equal(checked.summary.mismatched, 0);
      assert.equal(checked.summary.checked, all.length);
      assert.ok(!checked.stderr.includes(MARKER) && !checked.stdout.includes(MARKER));
    } finally {
      stop = true;
      await Promise.all(loops);
    }
  } finally {
    for (const writer of writers) writer.disconnect();
    client.disconnect();
    await server.stop();
  }
});

Deno.test("verify --full: kill -9 mid-run, then resume: exact counts, no key counted twice", async () => {
  const server = await startRedis();
  const client = server.client();
  const report = await Deno.makeTempFile({ suffix: ".ndjson" });
  try {
    const all = jobs(8000);
    await seedOld(client, all);
    assert.equal(
      (await runCli(["--execute", "--rps", "0", "-q", "--redis-url", server.url])).code,
      0,
    );
    const expected = await tamper(client, all);
    const args = ["verify", "--full", "--orphans", "--report", report, "--redis-url", server.url];
    const first = spawnCli([...args, "--rps", "1500", "--recheck-delay", "20"]);
    // Killed after at least one checkpoint, before the end.
    await waitFor(
      "a stored verify checkpoint",
      async () => (await client.hget("ai:backfill:verify:state", "node:standalone")) !== null,
    );
    first.child.kill("SIGKILL");
    await first.done;
    const stored = JSON.parse((await client.hget("ai:backfill:verify:state", "node:standalone"))!);
    assert.ok(stored.phase === "jobs" && stored.cursor !== "0", "killed mid-run");
    // The dead holder's lock expires within 30 s: the resume waits for it (--wait-lock 45).
    assert.ok(await client.pttl("ai:backfill:verify:lock") > 0, "the dead verify's lock is held");
    const resumed = await runJson([...args, "--recheck-delay", "20"]);
    assert.equal(resumed.code, 1, resumed.stderr);
    assert.match(
      resumed.stderr,
      /waiting for the lock ai:backfill:verify:lock: held by .+ pid \d+/,
    );
    assert.equal(resumed.summary.resumed, true);
    assertCounts(resumed.summary, expected);
    await assertReport(report, expected, resumed.stderr);
  } finally {
    client.disconnect();
    await server.stop();
    await Deno.remove(report);
  }
});

Deno.test("verify --full: a master restarted (AOF) mid-verify is rescanned; counts and report exact", async () => {
  const server = await startRedis({ aof: true });
  let client = server.client();
  const report = await Deno.makeTempFile({ suffix: ".ndjson" });
  try {
    const all = jobs(6000);
    await seedOld(client, all);
    assert.equal(
      (await runCli(["--execute", "--rps", "0", "-q", "--redis-url", server.url])).code,
      0,
    );
    const expected = await tamper(client, all);
    const args = ["verify", "--full", "--orphans", "--report", report, "--redis-url", server.url];
    const first = spawnCli([...args, "--rps", "2000", "--recheck-delay", "20", "--json"]);
    // Restarted after at least one stored chunk (with findings in the report), before the end.
    await waitFor(
      "a stored verify checkpoint",
      async () => (await client.hget("ai:backfill:verify:state", "node:standalone")) !== null,
    );
    client.disconnect();
    await server.kill();
    await server.start();
    client = server.client();
    const out = await first.done;
    let summary: Record<string, unknown>;
    let stderr = out.stderr;
    if (out.code === 3) {
      // The restart broke a call in flight: the run stopped; the next one finds the new run_id.
      await client.del("ai:backfill:verify:lock");
      const resumed = await runJson([...args, "--recheck-delay", "20"]);
      assert.equal(resumed.code, 1, resumed.stderr);
      assert.equal(resumed.summary.resumed, true);
      summary = resumed.summary;
      stderr = resumed.stderr;
    } else {
      // The client reconnected between calls: the run noticed the new run_id by itself.
      assert.equal(out.code, 1, out.stderr);
      summary = JSON.parse(out.stdout);
    }
    assert.match(stderr, /restarted since their keys were checked|restarted during verify/);
    assertCounts(summary, expected);
    await assertReport(report, expected, stderr);
  } finally {
    client.disconnect();
    await server.stop();
    await Deno.remove(report);
  }
});

/** Commands that change a key (their first argument is the key). */
const WRITES = new Set([
  "set",
  "hset",
  "hsetnx",
  "hmset",
  "del",
  "unlink",
  "expire",
  "pexpire",
  "expireat",
  "pexpireat",
  "persist",
  "hdel",
  "copy",
  "restore",
  "rename",
  "setex",
  "psetex",
  "getdel",
  "getex",
]);

Deno.test("verify --full is read-only: it writes only <P>:verify:lock and <P>:verify:state", async () => {
  const server = await startRedis();
  const client = server.client();
  const monitor = await server.client().monitor();
  try {
    const all = jobs(900);
    await seedOld(client, all);
    assert.equal(
      (await runCli(["--execute", "--rps", "0", "-q", "--redis-url", server.url])).code,
      0,
    );
    await tamper(client, all);
    const dumps = async () => {
      const keys = (await client.keysBuffer("*")).sort(Buffer.compare);
      return await Promise.all(keys.map(async (key) => [key, await client.dumpBuffer(key)]));
    };
    const before = await dumps();
    const written = new Set<string>();
    monitor.on("monitor", (_time: string, args: string[]) => {
      if (WRITES.has(args[0]!.toLowerCase())) written.add(args[1]!);
    });
    const result = await runJson([
      "verify",
      "--full",
      "--orphans",
      "--progress-key",
      "audit",
      "--redis-url",
      server.url,
    ]);
    assert.equal(result.code, 1, result.stderr);
    await client.ping();
    assert.deepEqual([...written].sort(), ["audit:verify:lock", "audit:verify:state"]);
    assert.deepEqual(await dumps(), before, "every other key is byte for byte as before");
  } finally {
    monitor.disconnect();
    client.disconnect();
    await server.stop();
  }
});

Deno.test("verify --full: bad input exits 2 before Redis is touched", async () => {
  // An unreachable URL: had anything been read, the exit code would be 3.
  const url = `redis://127.0.0.1:${freePort()}`;
  const cases: [string[], RegExp][] = [
    [["--full", "--sample", "10"], /--full .* cannot be combined with --sample/],
    [["--full", "--report", "/nonexistent-dir/findings.ndjson"], /--report .* cannot be written/],
    [["--full", "--recheck-delay=-1"], /--recheck-delay must be a number/],
    [["--orphans"], /--orphans needs --full/],
    [["--report", "x.ndjson"], /--report needs --full/],
  ];
  for (const [flags, message] of cases) {
    const result = await runCli(["verify", ...flags, "--redis-url", url]);
    assert.equal(result.code, 2, `${flags.join(" ")}: ${result.stderr}`);
    assert.match(result.stderr, message);
    assert.equal(result.stderr.trim().split("\n").length, 1);
  }
});
