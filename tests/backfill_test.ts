/**
 * The core engine against a real redis-server, through the real CLI (subprocess, binary permissions).
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { newKeyFor, oldKeyFor } from "./support/keys.ts";
import { runCli, runJson } from "./support/cli.ts";
import { freePort, withRedis } from "./support/redis_server.ts";
import { countKeys, keyState, makeJobs, newKey, seedOld, writeCounter } from "./support/seed.ts";

const ZERO = {
  migrated: 0,
  repaired: 0,
  skipped_exists: 0,
  skipped_invalid: 0,
  skipped_gone: 0,
  filtered: 0,
  errors: 0,
};

Deno.test("dry-run writes nothing at all but counts what execute would do", async () => {
  await withRedis(async (server, client) => {
    const jobs = makeJobs(300);
    await seedOld(client, jobs);
    await client.hset(newKey(jobs[0]!), { workspace_id: "ws-a", status: "queued", payload: "p0" });
    await client.hset(newKey(jobs[1]!), { ...jobs[1]!.fields, workspace_id: "ws-b" });
    await client.set("ai:jobs:not-a-hash", "x");
    const before = await writeCounter(client);
    const keysBefore = await client.dbsize();
    const { code, summary } = await runJson(["--dry-run", "--rps", "0", "--redis-url", server.url]);
    assert.equal(code, 0);
    assert.deepEqual(summary, {
      mode: "dry-run",
      scanned: 301,
      ...ZERO,
      migrated: 298,
      repaired: 1, // job-0's new key lacks `attempt` and the TTL
      skipped_exists: 1,
      skipped_invalid: 1,
      duration_seconds: summary.duration_seconds,
      completed: true,
      cursor: "0",
      // What the user may not run that --execute needs (safety/preflight.ts): nothing.
      preflight: { ok: true, missing: [] },
    });
    assert.equal(await writeCounter(client), before, "no write of any kind");
    assert.equal(await client.dbsize(), keysBefore);
    assert.equal(await client.exists("ai:backfill:cursor", "ai:backfill:lock"), 0);
  });
});

Deno.test("execute copies every field and the TTL; the text summary has every row", async () => {
  await withRedis(async (server, client) => {
    const jobs = makeJobs(1200);
    await seedOld(client, jobs);
    const { code, stdout } = await runCli([
      "--execute",
      "--rps",
      "0",
      "--batch",
      "100",
      "--redis-url",
      server.url,
    ]);
    assert.equal(code, 0, stdout);
    for (
      const row of [
        "=== Backfill Summary ===",
        /Scanned:\s+1200/,
        /Migrated:\s+1200\n/,
        /Repaired:\s+0/,
        /Skipped \(exists\):\s+0/,
        /Skipped \(invalid\):\s+0/,
        /Skipped \(gone\):\s+0/,
        /Filtered:\s+0/,
        /Errors:\s+0/,
        /Completed:\s+yes/,
      ]
    ) typeof row === "string" ? assert.ok(stdout.includes(row)) : assert.match(stdout, row);
    for (const job of jobs) {
      const old = await keyState(client, oldKeyFor(job.id));
      const fresh = await keyState(client, newKey(job));
      assert.deepEqual(fresh.fields, old.fields, job.id);
      if (job.ttl) assert.ok(Math.abs(fresh.pttl - old.pttl) < 2000, `${job.id} TTL`);
      else assert.equal(fresh.pttl, -1, `${job.id} has no TTL`);
    }
    assert.equal(await countKeys(client, "ai:jobs:*"), 1200, "old keys untouched");
    assert.equal(await client.exists("ai:backfill:cursor"), 0, "a finished scan clears the cursor");
    assert.equal(await client.exists("ai:backfill:lock"), 0, "lock released");
  });
});

Deno.test("a second execute migrates nothing and counts every job as skipped_exists", async () => {
  await withRedis(async (server, client) => {
    await seedOld(client, makeJobs(500));
    const first = await runJson(["--execute", "--rps", "0", "--redis-url", server.url]);
    assert.equal(first.summary.migrated, 500);
    const jobs = makeJobs(500);
    const dumps = async () =>
      await Promise.all(jobs.map((job) => client.dumpBuffer(newKey(job)).then(String)));
    const snapshot = await dumps();
    const before = await writeCounter(client);
    const second = await runJson(["--execute", "--rps", "0", "--redis-url", server.url]);
    assert.equal(second.code, 0);
    assert.equal(second.summary.migrated, 0);
    assert.equal(second.summary.skipped_exists, 500);
    // No job key changed; only the bookkeeping was written: the lock, the status, the checkpoint
    // (one chain token per script call, see "Checkpoint inside the copy script") and the totals.
    assert.deepEqual(await dumps(), snapshot);
    const written = (await writeCounter(client)) - before;
    assert.ok(written < 500, `bookkeeping writes: ${written}`);
  });
});

Deno.test("--max-keys stops early, and the next run resumes without losing the trimmed batch", async () => {
  await withRedis(async (server, client) => {
    const jobs = makeJobs(2000);
    await seedOld(client, jobs);
    const first = await runJson([
      "--execute",
      "--rps",
      "0",
      "--batch",
      "300",
      "--max-keys",
      "450",
      "--redis-url",
      server.url,
    ]);
    assert.equal(first.code, 0);
    assert.equal(first.summary.scanned, 450);
    assert.equal(first.summary.migrated, 450);
    assert.equal(first.summary.completed, false);
    const stored = await client.get("ai:backfill:cursor");
    assert.equal(stored, first.summary.cursor);
    assert.ok(await client.exists("ai:backfill:last_job"));

    const second = await runJson([
      "--execute",
      "--rps",
      "0",
      "--batch",
      "300",
      "--redis-url",
      server.url,
    ]);
    assert.equal(second.code, 0);
    assert.match(
      second.stderr,
      new RegExp(`Resuming from stored cursor=${stored}, last_job=job-\\d+`),
    );
    assert.equal(second.summary.completed, true);
    // At most one batch (the trimmed one) is looked at again; nothing is lost.
    assert.equal(Number(second.summary.migrated) + 450, 2000);
    assert.ok(Number(second.summary.skipped_exists) <= 300);
    for (const job of jobs) assert.equal(await client.exists(newKey(job)), 1, job.id);
    assert.equal(await client.exists("ai:backfill:cursor"), 0);
  });
});

Deno.test("--cursor overrides the stored cursor; --reset-progress starts over", async () => {
  await withRedis(async (server, client) => {
    await seedOld(client, makeJobs(1000));
    await runJson([
      "--execute",
      "--rps",
      "0",
      "--batch",
      "200",
      "--max-keys",
      "200",
      "--redis-url",
      server.url,
    ]);
    const fromZero = await runJson([
      "--execute",
      "--rps",
      "0",
      "--cursor",
      "0",
      "--redis-url",
      server.url,
    ]);
    assert.match(fromZero.stderr, /starting from --cursor 0/);
    assert.equal(fromZero.summary.scanned, 1000);
    await runJson([
      "--execute",
      "--rps",
      "0",
      "--batch",
      "200",
      "--max-keys",
      "200",
      "--redis-url",
      server.url,
    ]);
    assert.equal(await client.exists("ai:backfill:cursor"), 1);
    const reset = await runJson([
      "--execute",
      "--rps",
      "0",
      "--reset-progress",
      "--redis-url",
      server.url,
    ]);
    assert.match(reset.stderr, /cleared the stored checkpoint/);
    assert.equal(reset.summary.scanned, 1000);
  });
});

Deno.test("invalid jobs are skipped and never get a new key", async () => {
  await withRedis(async (server, client) => {
    await seedOld(client, makeJobs(10));
    await client.set("ai:jobs:string", "x");
    await client.rpush("ai:jobs:list", "x");
    await client.hset("ai:jobs:no-ws", { status: "x" });
    await client.hset("ai:jobs:bad-ws", { workspace_id: "has space" });
    await client.hset("ai:jobs:colon-ws", { workspace_id: "a:b" });
    await client.hset("ai:jobs:long-ws", { workspace_id: "w".repeat(65) });
    await client.hset("ai:jobs:", { workspace_id: "ws-a" }); // empty job id
    const { code, summary, stderr } = await runJson([
      "--execute",
      "--rps",
      "0",
      "--redis-url",
      server.url,
    ]);
    assert.equal(code, 0);
    assert.equal(summary.scanned, 17);
    assert.equal(summary.migrated, 10);
    assert.equal(summary.skipped_invalid, 7);
    assert.equal(await countKeys(client, "ai:job:*"), 10);
    assert.ok(!stderr.includes("has space"));
  });
});

Deno.test("--workspace migrates only that workspace; the rest is filtered", async () => {
  await withRedis(async (server, client) => {
    const jobs = makeJobs(90);
    await seedOld(client, jobs);
    const { summary } = await runJson([
      "--execute",
      "--rps",
      "0",
      "--workspace",
      "ws-b",
      "--redis-url",
      server.url,
    ]);
    assert.equal(summary.scanned, 90);
    assert.equal(summary.migrated, 30);
    assert.equal(summary.filtered, 60);
    for (const job of jobs) {
      assert.equal(await client.exists(newKey(job)), job.workspace === "ws-b" ? 1 : 0);
    }
  });
});

Deno.test("--workspace-pattern replaces the validity rule (checked in the client, copied atomically)", async () => {
  await withRedis(async (server, client) => {
    await client.hset("ai:jobs:1", { workspace_id: "team.one", x: "1" });
    await client.hset("ai:jobs:2", { workspace_id: "ws-a", x: "2" });
    await client.hset("ai:jobs:3", { workspace_id: "TEAM.TWO", x: "3" });
    await client.expire("ai:jobs:1", 500);
    const { summary } = await runJson([
      "--execute",
      "--rps",
      "0",
      "--workspace-pattern",
      "^[a-z]+\\.[a-z]+$",
      "--redis-url",
      server.url,
    ]);
    assert.equal(summary.migrated, 1);
    assert.equal(summary.skipped_invalid, 2);
    assert.deepEqual(await client.hgetall("ai:job:team.one:1"), {
      workspace_id: "team.one",
      x: "1",
    });
    assert.ok((await client.ttl("ai:job:team.one:1")) > 490);
    const again = await runJson([
      "--dry-run",
      "--workspace-pattern",
      "^[a-z]+\\.[a-z]+$",
      "--redis-url",
      server.url,
    ]);
    assert.equal(again.summary.skipped_exists, 1);
  });
});

Deno.test("a partial dual-write is completed with the missing fields only, and gets the TTL", async () => {
  await withRedis(async (server, client) => {
    await client.hset("ai:jobs:p1", {
      workspace_id: "ws-a",
      status: "old",
      result: "r",
      extra: "e",
    });
    await client.expire("ai:jobs:p1", 900);
    await client.hset("ai:job:ws-a:p1", { workspace_id: "ws-a", status: "new" });
    const { summary } = await runJson(["--execute", "--rps", "0", "--redis-url", server.url]);
    assert.equal(summary.repaired, 1);
    assert.deepEqual(await client.hgetall("ai:job:ws-a:p1"), {
      workspace_id: "ws-a",
      status: "new", // the application's value wins
      result: "r",
      extra: "e",
    });
    assert.ok((await client.ttl("ai:job:ws-a:p1")) > 890);
    const again = await runJson(["--execute", "--rps", "0", "--redis-url", server.url]);
    assert.equal(again.summary.skipped_exists, 1);
  });
});

Deno.test("create-only: values the application writes to new keys during the run survive", async () => {
  await withRedis(async (server, client) => {
    const jobs = makeJobs(3000);
    await seedOld(client, jobs);
    const writer = server.client();
    let stop = false;
    const written = new Map<string, string>();
    const loop = (async () => {
      let i = 0;
      while (!stop) {
        const job = jobs[(i * 7919) % jobs.length]!;
        const value = `app-${i++}`;
        // dual-write: both schemas, the new one as a full object
        await writer.multi()
          .hset(oldKeyFor(job.id), "status", value)
          .hset(newKey(job), { ...job.fields, workspace_id: job.workspace, status: value })
          .exec();
        written.set(job.id, value);
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    })();
    const { code, summary } = await runJson([
      "--execute",
      "--rps",
      "3000",
      "--batch",
      "100",
      "--redis-url",
      server.url,
    ]);
    stop = true;
    await loop;
    writer.disconnect();
    assert.equal(code, 0);
    assert.ok(written.size > 30, `writer made ${written.size} writes`);
    for (const job of jobs) {
      const fresh = await client.hgetall(newKey(job));
      const expected = written.get(job.id) ?? job.fields!.status;
      assert.equal(fresh.status, expected, job.id);
    }
    assert.equal(
      Number(summary.migrated) + Number(summary.skipped_exists) + Number(summary.repaired),
      3000,
    );
  });
});

Deno.test("binary key names are migrated byte-exact; a binary workspace id is invalid", async () => {
  await withRedis(async (server, client) => {
    const id = Buffer.from([0x6a, 0xff, 0xfe, 0x00, 0x20, 0x0a]);
    await client.hset(oldKeyFor(id), { workspace_id: "ws-a", f: "v" });
    await client.hset(oldKeyFor("bin-ws"), "workspace_id", Buffer.from([0x77, 0xc3]));
    const { summary } = await runJson(["--execute", "--rps", "0", "--redis-url", server.url]);
    assert.equal(summary.migrated, 1);
    assert.equal(summary.skipped_invalid, 1);
    assert.deepEqual(await client.hgetall(newKeyFor("ws-a", id)), { workspace_id: "ws-a", f: "v" });
    const keys = await client.keysBuffer("ai:job:*");
    assert.deepEqual(keys, [newKeyFor("ws-a", id)]);
  });
});

Deno.test("--rps holds the run to the rate", async () => {
  await withRedis(async (server, client) => {
    await seedOld(client, makeJobs(150));
    const started = performance.now();
    const { summary } = await runJson([
      "--execute",
      "--rps",
      "50",
      "--batch",
      "40",
      "--redis-url",
      server.url,
    ]);
    const seconds = (performance.now() - started) / 1000;
    assert.equal(summary.migrated, 150);
    // 150 jobs at 50/s: the first 50 go at once, the other 100 need two more windows.
    assert.ok(Number(summary.duration_seconds) >= 1.9, `took ${summary.duration_seconds} s`);
    assert.ok(seconds < 15);
  });
});

Deno.test("bad flags exit 2 with one line and write nothing", async () => {
  await withRedis(async (server, client) => {
    await seedOld(client, makeJobs(20));
    const before = await writeCounter(client);
    for (
      const args of [
        ["--execute", "--batch", "0"],
        ["--execute", "--dry-run"],
        ["--execute", "--bogus"],
        ["--execute", "--rps", "fast"],
        ["--execute", "--max-keys", "0"],
      ]
    ) {
      const result = await runCli([...args, "--redis-url", server.url]);
      assert.equal(result.code, 2, args.join(" "));
      assert.equal(result.stdout, "");
      assert.match(result.stderr, /^error: [^\n]+\n$/);
    }
    assert.equal(await writeCounter(client), before);
  });
});

Deno.test("an unreachable Redis exits 3 within about 10 s", async () => {
  const port = freePort();
  const started = performance.now();
  const result = await runCli(["--dry-run", "--redis-url", `redis://127.0.0.1:${port}`]);
  const seconds = (performance.now() - started) / 1000;
  assert.equal(result.code, 3);
  assert.match(result.stderr, new RegExp(`error: Redis at 127.0.0.1:${port} is unreachable`));
  assert.ok(seconds < 15, `took ${seconds} s`);
});

Deno.test("passwords never reach the output; a wrong one exits 3", async () => {
  await withRedis(async (server, client) => {
    await seedOld(client, makeJobs(10));
    const good = await runCli(["--execute", "--redis-url", server.url]);
    assert.equal(good.code, 0, good.stderr);
    assert.ok(!(good.stdout + good.stderr).includes("Sup3rSecret"));
    assert.match(good.stderr, /redis:\/\/:\*\*\*@127\.0\.0\.1/);
    const env = await runCli(["--dry-run"], { REDIS_URL: server.url });
    assert.equal(env.code, 0);
    assert.ok(!(env.stdout + env.stderr).includes("Sup3rSecret"));
    const bad = await runCli([
      "--dry-run",
      "--redis-url",
      `redis://:WrongSecret@127.0.0.1:${server.port}`,
    ]);
    assert.equal(bad.code, 3);
    assert.match(bad.stderr, /refused the credentials/);
    assert.ok(!(bad.stdout + bad.stderr).includes("WrongSecret"));
  }, { password: "Sup3rSecret" });
});

Deno.test("--help and --version", async () => {
  const help = await runCli(["--help"]);
  assert.equal(help.code, 0);
  for (
    const flag of [
      "--dry-run",
      "--execute",
      "--rps",
      "--batch",
      "--cursor",
      "--max-keys",
      "--workspace",
      "--progress-key",
      "--redis-url",
      "--json",
      "--reset-progress",
      "--workspace-pattern",
    ]
  ) {
    assert.ok(help.stdout.includes(flag), flag);
  }
  const version = await runCli(["--version"]);
  const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  assert.equal(version.stdout, `backfill ${config.version}\n`);
  const verifyHelp = await runCli(["verify", "--help"]);
  assert.match(verifyHelp.stdout, /--sample N/);
});
