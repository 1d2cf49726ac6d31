/**
 * `backfill verify` through the real CLI: exit codes, JSON fields, read-only.
 */
import assert from "node:assert/strict";
import { runCli, runJson } from "./support/cli.ts";
import { freePort, startRedis } from "./support/redis_server.ts";
import { makeJobs, seedOld, writeCounter } from "./support/seed.ts";

Deno.test("verify: half migrated exits 1, --min-parity 30 exits 0, fully migrated exits 0; writes nothing", async () => {
  const server = await startRedis();
  const client = server.client();
  try {
    await seedOld(client, makeJobs(2000));
    await runJson(["--execute", "--rps", "0", "--max-keys", "1000", "--redis-url", server.url]);
    const before = await writeCounter(client);
    const half = await runJson(["verify", "--sample", "5000", "--redis-url", server.url]);
    assert.equal(half.code, 1);
    for (
      const field of ["sampled", "matched", "missing", "mismatched", "invalid", "orphans", "parity"]
    ) {
      assert.ok(field in half.summary, field);
    }
    assert.equal(half.summary.sampled, 2000);
    assert.equal(half.summary.parity, 0.5);
    const lenient = await runJson([
      "verify",
      "--sample",
      "5000",
      "--min-parity",
      "30",
      "--redis-url",
      server.url,
    ]);
    assert.equal(lenient.code, 0);
    assert.equal(await writeCounter(client), before, "verify wrote nothing");
    await runJson(["--execute", "--rps", "0", "--redis-url", server.url]);
    const full = await runCli(["verify", "--redis-url", server.url]);
    assert.equal(full.code, 0);
    assert.match(full.stdout, /Parity:\s+100(\.00)?%/);
  } finally {
    client.disconnect();
    await server.stop();
  }
});

Deno.test("verify: bad flags exit 2, an unreachable Redis exits 3", async () => {
  const bad = await runCli(["verify", "--sample", "zero"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^error: --sample must be an integer >= 1/);
  const down = await runCli(["verify", "--redis-url", `redis://127.0.0.1:${freePort()}`]);
  assert.equal(down.code, 3);
});
