/**
 * The latency throttle is on by default (`--max-latency 0.5`): a run given no throttle flag
 * measures its probe's baseline before its first write and adapts its rate; `--max-latency 0`
 * turns it off. (Other tests pass `--max-latency 0` unless they set it: tests/support/cli.ts.)
 */
import assert from "node:assert/strict";
import { spawnCli } from "./support/cli.ts";
import { withRedis } from "./support/redis_server.ts";
import { countKeys, makeJobs, seedOld } from "./support/seed.ts";

const BASELINE =
  /probe_baseline: latency baseline of 127\.0\.0\.1:\d+: p99 [\d.]+ ms; the rate adapts to keep the added p99 under 0\.5 ms/;

Deno.test("defaults: the latency throttle is on (0.5 ms) and --max-latency 0 turns it off", async () => {
  await withRedis(async (server, client) => {
    await seedOld(client, makeJobs(3000));
    const common = ["--execute", "--rps", "0", "--json", "--redis-url", server.url];
    const on = await spawnCli(common, {}, 120_000, { defaults: true }).done;
    assert.equal(on.code, 0, on.stderr);
    assert.match(on.stderr, BASELINE);
    assert.equal(JSON.parse(on.stdout).migrated, 3000);
    assert.equal(await countKeys(client, "ai:job:*"), 3000);

    await client.flushall();
    await seedOld(client, makeJobs(3000));
    const off = await spawnCli([...common, "--max-latency", "0"], {}, 120_000, { defaults: true })
      .done;
    assert.equal(off.code, 0, off.stderr);
    assert.doesNotMatch(off.stderr, /probe_baseline/);
    assert.equal(JSON.parse(off.stdout).migrated, 3000);
  });
});
