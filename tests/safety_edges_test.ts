/**
 * Edges of data safety on a standalone Redis: a copy under the wrong workspace is an
 * orphan for the sampled verify; a byte-order mark in `workspace_id` is never dropped.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { runJson } from "./support/cli.ts";
import { withRedis } from "./support/redis_server.ts";
import { makeJobs, newKey, seedOld } from "./support/seed.ts";
import { newKeyFor, oldKeyFor } from "./support/keys.ts";

/** "\xEF\xBB\xBFwsA": a UTF-8 byte-order mark, then `wsA`. */
const BOM_WS = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from("wsA")]);

Deno.test("sampled verify: a new key whose old key names another workspace is an orphan", async () => {
  await withRedis(async (server, client) => {
    const jobs = makeJobs(20, ["ws1"]);
    await seedOld(client, jobs);
    const run = await runJson(["--execute", "--rps", "0", "--redis-url", server.url]);
    assert.equal(run.code, 0, run.stderr);
    const clean = await runJson(["verify", "--redis-url", server.url]);
    assert.equal(clean.code, 0, clean.stderr);
    assert.equal(clean.summary.orphans, 0);
    // job-5 belongs to ws1; a copy of it under wsZ is a copy in another tenant.
    await client.hset(newKeyFor("wsZ", "job-5"), { workspace_id: "wsZ", status: "done" });
    const found = await runJson(["verify", "--recheck", "0", "--redis-url", server.url]);
    assert.equal(found.code, 1, found.stderr);
    assert.equal(found.summary.orphans, 1);
    assert.equal(found.summary.parity, 1);
  });
});

Deno.test("a BOM in workspace_id is kept: invalid by default, its exact bytes under a custom pattern", async () => {
  await withRedis(async (server, client) => {
    await seedOld(client, makeJobs(10, ["wsA"]));
    await client.hset(oldKeyFor("bom-1"), Buffer.from("workspace_id"), BOM_WS);
    await client.hset(oldKeyFor("bom-1"), "status", "done");
    const run = await runJson(["--execute", "--rps", "0", "--redis-url", server.url]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.summary.skipped_invalid, 1);
    assert.equal(run.summary.migrated, 10);
    assert.equal(await client.exists(newKey({ id: "bom-1", workspace: "wsA" })), 0, "not in wsA");
    const verify = await runJson(["verify", "--recheck", "0", "--redis-url", server.url]);
    assert.equal(verify.code, 0, verify.stderr);
    assert.equal(verify.summary.invalid, 1);
    assert.equal(verify.summary.missing, 0);

    // A pattern that accepts the BOM copies the job to a key with exactly those bytes.
    const pattern = ["--workspace-pattern", "^[^:]+$"];
    const custom = await runJson([
      "--execute",
      "--rps",
      "0",
      "--reset-progress",
      ...pattern,
      "--redis-url",
      server.url,
    ]);
    assert.equal(custom.code, 0, custom.stderr);
    assert.equal(custom.summary.errors, 0);
    assert.equal(custom.summary.migrated, 1);
    const exact = Buffer.concat([Buffer.from("ai:job:"), BOM_WS, Buffer.from(":bom-1")]);
    assert.equal(await client.exists(exact), 1, "copied under the exact bytes");
    assert.equal(await client.exists(newKey({ id: "bom-1", workspace: "wsA" })), 0);
    const again = await runJson([
      "verify",
      "--recheck",
      "0",
      ...pattern,
      "--redis-url",
      server.url,
    ]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.summary.matched, 11);
    assert.equal(again.summary.orphans, 0);
  });
});
