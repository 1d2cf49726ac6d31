/**
 * Permissions: a dry-run reports what --execute may not run, execute refuses before
 * writing anything, and a permission lost mid-run stops the run after one batch with the
 * checkpoint kept instead of failing the keyspace key by key.
 */
import assert from "node:assert/strict";
import { runCli, runJson, spawnCli, waitFor } from "./support/cli.ts";
import { withRedis } from "./support/redis_server.ts";
import { countKeys, makeJobs, newKey, seedOld, writeCounter } from "./support/seed.ts";

const USER = ["ACL", "SETUSER", "mig", "on", ">pw", "~*", "&*", "+@all"];

function asUser(port: number): string {
  return `redis://mig:pw@127.0.0.1:${port}`;
}

Deno.test("a user without COPY: dry-run reports it, execute exits 4 with nothing written", async () => {
  await withRedis(async (server, client) => {
    await seedOld(client, makeJobs(1000));
    await client.call(...USER as [string, ...string[]], "-copy");
    const dry = await runJson(["--dry-run", "--rps", "0", "--redis-url", asUser(server.port)]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.equal(dry.summary.migrated, 1000);
    assert.deepEqual(dry.summary.preflight, {
      ok: false,
      missing: ["COPY on ai:jobs:* → ai:job:*"],
    });
    assert.match(dry.stderr, /may not run what --execute needs: COPY on ai:jobs:\*/);
    const text = await runCli(["--dry-run", "--rps", "0", "--redis-url", asUser(server.port)]);
    assert.match(text.stdout, /Preflight:\s+--execute would refuse: may not run COPY/);

    const before = await writeCounter(client);
    const run = await runCli(["--execute", "--rps", "0", "--redis-url", asUser(server.port)]);
    assert.equal(run.code, 4, run.stderr);
    assert.match(run.stderr, /^error: the Redis user may not run what --execute needs: COPY/m);
    assert.doesNotMatch(run.stderr, /key_error/);
    assert.equal(await writeCounter(client), before, "nothing written, not even the lock");
    assert.equal(await countKeys(client, "ai:backfill*"), 0);

    // A user denied TIME (as some managed services deny it in scripts): the copy scripts read it.
    await client.call(...USER as [string, ...string[]], "+copy", "-time");
    const timeless = await runCli(["--execute", "--rps", "0", "--redis-url", asUser(server.port)]);
    assert.equal(timeless.code, 4, timeless.stderr);
    assert.match(timeless.stderr, /^error: the Redis user may not run what --execute needs: TIME/m);
    assert.equal(await writeCounter(client), before, "nothing written");

    // With every permission the preflight is clean.
    await client.call(...USER as [string, ...string[]], "+time");
    const ok = await runJson(["--dry-run", "--rps", "0", "--redis-url", asUser(server.port)]);
    assert.deepEqual(ok.summary.preflight, { ok: true, missing: [] });
  });
});

Deno.test("a renamed-away COPY is reported as missing", async () => {
  await withRedis(async (server, client) => {
    await seedOld(client, makeJobs(50));
    const dry = await runJson(["--dry-run", "--redis-url", server.url]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.deepEqual(dry.summary.preflight, {
      ok: false,
      missing: ["COPY (no such command: renamed or disabled)"],
    });
    const run = await runCli(["--execute", "--redis-url", server.url]);
    assert.equal(run.code, 4, run.stderr);
    assert.equal(await countKeys(client, "ai:job:*"), 0);
  }, { args: ["--rename-command", "COPY", ""] });
});

Deno.test("COPY revoked mid-run: stops with exit 4 after one batch, checkpoint kept; a rerun finishes", async () => {
  await withRedis(async (server, client) => {
    const jobs = makeJobs(6000);
    await seedOld(client, jobs);
    await client.call(...USER as [string, ...string[]]);
    const run = spawnCli([
      "--execute",
      "--rps",
      "1500",
      "--batch",
      "200",
      "--redis-url",
      asUser(server.port),
    ]);
    await waitFor("a checkpoint", async () => (await client.exists("ai:backfill:cursor")) === 1);
    await client.call(...USER as [string, ...string[]], "-copy");
    const stopped = await run.done;
    assert.equal(stopped.code, 4, stopped.stderr);
    assert.match(stopped.stderr, /keys in a row failed with (NOPERM|ERR)/);
    const keyErrors = stopped.stderr.split("\n").filter((line) => line.includes("key_error"));
    // Two batches are in flight (a SCAN batch may hold a few more keys than COUNT).
    assert.ok(keyErrors.length > 0 && keyErrors.length <= 600, `key errors: ${keyErrors.length}`);
    assert.equal(await client.exists("ai:backfill:cursor"), 1, "checkpoint kept");
    assert.ok(await countKeys(client, "ai:job:*") < 6000);

    await client.call(...USER as [string, ...string[]], "+copy");
    const rerun = await runJson(["--execute", "--rps", "0", "--redis-url", asUser(server.port)]);
    assert.equal(rerun.code, 0, rerun.stderr);
    assert.equal(rerun.summary.errors, 0);
    for (const job of jobs) assert.equal(await client.exists(newKey(job)), 1, job.id);
  });
});
