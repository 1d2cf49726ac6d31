/**
 * The migration's running totals, persisted with the checkpoint: a run stopped with SIGTERM and
 * resumed pushes the migration's totals (not the last run's part) to a real Pushgateway; dry-run
 * neither reads nor writes them; `--reset-progress` starts them over.
 */
import assert from "node:assert/strict";
import { parseTotals, totalsArgs, TotalsDelta } from "../src/checkpoint/store.ts";
import { runCli, runJson, spawnCli, waitFor } from "./support/cli.ts";
import { startPushgateway, toolsAvailable } from "./support/prometheus.ts";
import { startRedis } from "./support/redis_server.ts";
import { countKeys, makeJobs, seedOld } from "./support/seed.ts";
import { sumOf } from "./support/telemetry.ts";

Deno.test("totals: a delta round-trips through the stored hash, per outcome and reason", () => {
  const delta = new TotalsDelta();
  delta.add([
    { outcome: "migrated", workspace: "ws-a" },
    { outcome: "migrated", workspace: "ws-a" },
    { outcome: "errors", workspace: "ws-b" },
    { outcome: "skipped_invalid", invalidReason: "not_hash" },
  ]);
  const taken = delta.take();
  assert.deepEqual(delta.take().size, 0, "take empties the delta");
  delta.restore(taken);
  const args = totalsArgs(delta.take());
  const hash: Record<string, string> = {};
  for (let i = 0; i < args.length; i += 2) hash[args[i]!] = args[i + 1]!;
  assert.deepEqual(parseTotals(hash), {
    // Per outcome, every workspace together (one HINCRBY per outcome per save, not per tenant).
    byOutcome: { migrated: { "*": 2 }, errors: { "*": 1 }, skipped_invalid: { "*": 1 } },
    invalidByReason: { not_hash: 1 },
  });
  assert.equal(parseTotals({}), undefined);
  assert.equal(parseTotals({ "bogus:x": "3", "migrated:ws": "-1" }), undefined);
});

const ignore = !toolsAvailable("prometheus-pushgateway");

Deno.test({
  name: "totals: SIGTERM mid-run, resume: the pushed migrated total is the seeded count",
  ignore,
  async fn() {
    const server = await startRedis();
    const client = server.client();
    const pushgateway = await startPushgateway();
    const seeded = 3000;
    const common = ["--pushgateway", pushgateway.url, "--progress-key", "bf:tot", "--quiet"];
    const execute = (extra: string[] = []) =>
      runJson(["--execute", "--rps", "0", ...common, "--redis-url", server.url, ...extra]);
    const pushed = async (mode: string, outcome = "migrated") =>
      sumOf(await pushgateway.scrape(), `relay_backfill_${outcome}_total`, { mode });
    try {
      await seedOld(client, makeJobs(seeded));
      const first = spawnCli([
        "--execute",
        "--rps",
        "1500",
        "--batch",
        "100",
        ...common,
        "--redis-url",
        server.url,
      ]);
      await waitFor("part of the jobs copied", async () => {
        return await countKeys(client, "ai:job:*") >= 600;
      });
      first.child.kill("SIGTERM");
      const stopped = await first.done;
      assert.equal(stopped.code, 143, stopped.stderr);
      const afterStop = await pushed("execute");
      assert.ok(afterStop > 0 && afterStop < seeded, `first run pushed ${afterStop}`);
      const stored = await client.hgetall("bf:tot:totals");
      // Stored per outcome, every workspace together (not one field per tenant).
      assert.ok(Number(stored["migrated:*"]) > 0, JSON.stringify(stored));
      assert.ok(!Object.keys(stored).some((field) => field.startsWith("migrated:ws-")));

      // A dry-run neither reads nor writes the totals (and pushes to its own group).
      const dry = await runJson(["--dry-run", "--rps", "0", ...common, "--redis-url", server.url]);
      assert.equal(dry.code, 0, dry.stderr);
      assert.deepEqual(await client.hgetall("bf:tot:totals"), stored);
      assert.equal(await pushed("dry-run"), seeded - afterStop);

      const resumed = await execute();
      assert.equal(resumed.code, 0, resumed.stderr);
      assert.ok(
        (resumed.summary.migrated as number) < seeded,
        "the summary stays the run's own",
      );
      assert.equal(await pushed("execute"), seeded, "the migration's total");
      assert.equal(await countKeys(client, "ai:job:*"), seeded);

      // A rerun that copies nothing still shows the migration's totals.
      const rerun = await execute();
      assert.equal(rerun.summary.migrated, 0);
      assert.equal(await pushed("execute"), seeded);

      // --reset-progress starts the totals over.
      const reset = await execute(["--reset-progress"]);
      assert.equal(reset.code, 0, reset.stderr);
      assert.equal(await pushed("execute"), 0);
      assert.equal(await pushed("execute", "scanned"), seeded);
    } finally {
      client.disconnect();
      await pushgateway.stop();
      await server.stop();
    }
  },
});

Deno.test("totals: bad --health-timeout is refused with exit 2 before Redis is touched", async () => {
  const result = await runCli(["--execute", "--health-timeout", "0"]);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /^error: .*--health-timeout/);
  assert.equal(result.stderr.trim().split("\n").length, 1);
});
