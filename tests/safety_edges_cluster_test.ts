/**
 * A byte-order mark in `workspace_id` on a real 3-master cluster: the cluster READ path
 * decodes ids in the client, so a dropped BOM would copy the job into another tenant.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { runJson } from "./support/cli.ts";
import { startCluster } from "./support/cluster.ts";
import { newKeyFor, oldKeyFor } from "./support/keys.ts";

const BOM_WS = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from("wsA")]);

Deno.test("cluster: a BOM in workspace_id is never migrated into wsA; a custom pattern keeps its bytes", async () => {
  const cluster = await startCluster();
  const client = cluster.client();
  try {
    for (let i = 0; i < 30; i++) {
      await client.hset(oldKeyFor(`job-${i}`), { workspace_id: "wsA", n: String(i) });
    }
    await client.hset(oldKeyFor("bom-1"), Buffer.from("workspace_id"), BOM_WS);
    await client.hset(oldKeyFor("bom-1"), "status", "done");
    const run = await runJson(["--execute", "--rps", "0", "--redis-url", cluster.url]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.summary.skipped_invalid, 1);
    assert.equal(run.summary.migrated, 30);
    assert.equal(await client.exists(newKeyFor("wsA", "bom-1")), 0, "not copied into wsA");
    const verify = await runJson(["verify", "--recheck", "0", "--redis-url", cluster.url]);
    assert.equal(verify.code, 0, verify.stderr);
    assert.equal(verify.summary.invalid, 1);
    assert.equal(verify.summary.matched, 30);

    const pattern = ["--workspace-pattern", "^[^:]+$"];
    const custom = await runJson([
      "--execute",
      "--rps",
      "0",
      "--reset-progress",
      ...pattern,
      "--redis-url",
      cluster.url,
    ]);
    assert.equal(custom.code, 0, custom.stderr);
    assert.equal(custom.summary.errors, 0);
    assert.equal(custom.summary.migrated, 1);
    const exact = Buffer.concat([Buffer.from("ai:job:"), BOM_WS, Buffer.from(":bom-1")]);
    assert.equal(await client.exists(exact), 1, "copied under the exact bytes");
    assert.equal(await client.exists(newKeyFor("wsA", "bom-1")), 0);
    const again = await runJson([
      "verify",
      "--recheck",
      "0",
      ...pattern,
      "--redis-url",
      cluster.url,
    ]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.summary.matched, 31);
    assert.equal(again.summary.orphans, 0);
  } finally {
    client.disconnect();
    await cluster.stop();
  }
});
