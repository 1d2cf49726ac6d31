/**
 * `backfill verify` (sampled and --full) exports `relay_backfill_verify_*`: pushed to a real
 * Pushgateway under `mode=verify`, read back through a real Prometheus, and served on
 * `--metrics-port` until the linger ends.
 */
import assert from "node:assert/strict";
import { runCli, spawnCli, waitFor } from "./support/cli.ts";
import { startPrometheus, startPushgateway, toolsAvailable } from "./support/prometheus.ts";
import { startRedis } from "./support/redis_server.ts";
import { makeJobs, newKey, seedOld } from "./support/seed.ts";
import { freePort, portIsClosed, sumOf } from "./support/telemetry.ts";

const ignore = !toolsAvailable("prometheus", "prometheus-pushgateway");

/** The shipped dashboard's expressions over the verify's metrics. */
function verifyPanelQueries(): string[] {
  const url = new URL("../deploy/grafana/backfill.json", import.meta.url);
  const dashboard = JSON.parse(Deno.readTextFileSync(url));
  const exprs = (dashboard.panels as { targets: { expr: string }[] }[])
    .flatMap((panel) => panel.targets.map((target) => target.expr))
    .filter((expr) => expr.includes("relay_backfill_verify_"));
  assert.ok(exprs.length >= 3, `verify expressions in the dashboard: ${exprs.length}`);
  return exprs;
}

Deno.test({
  name: "verify metrics: --full and sampled push relay_backfill_verify_* under mode=verify",
  ignore,
  async fn() {
    const server = await startRedis();
    const client = server.client();
    const pushgateway = await startPushgateway();
    const prometheus = await startPrometheus({
      jobs: [{ job: "pushgateway", target: `127.0.0.1:${pushgateway.port}`, honorLabels: true }],
    });
    try {
      const jobs = makeJobs(200);
      await seedOld(client, jobs);
      const push = ["--pushgateway", pushgateway.url, "--progress-key", "bf:vm", "--quiet"];
      const migrated = await runCli([
        "--execute",
        "--rps",
        "0",
        ...push,
        "--redis-url",
        server.url,
      ]);
      assert.equal(migrated.code, 0, migrated.stderr);
      for (const job of jobs.slice(0, 3)) await client.del(newKey(job));
      await client.hset(newKey(jobs[3]!), "payload", "tampered");

      const full = await runCli([
        "verify",
        "--full",
        "--rps",
        "0",
        "--recheck-delay",
        "0",
        ...push,
        "--redis-url",
        server.url,
      ]);
      assert.equal(full.code, 1, full.stderr);
      const pushed = await pushgateway.scrape();
      const verify = { mode: "verify", instance: "bf:vm" };
      assert.equal(sumOf(pushed, "relay_backfill_verify_checked_total", verify), 200);
      const kind = (k: string) =>
        sumOf(pushed, "relay_backfill_verify_mismatched_total", { ...verify, kind: k });
      assert.deepEqual(
        [kind("missing"), kind("field_differs"), kind("field_missing"), kind("ttl")],
        [3, 1, 0, 0],
      );
      assert.equal(sumOf(pushed, "relay_backfill_verify_parity", verify), 196 / 200);
      assert.equal(sumOf(pushed, "relay_backfill_verify_completed", verify), 1);
      assert.equal(sumOf(pushed, "relay_backfill_verify_passed", verify), 0);
      assert.equal(sumOf(pushed, "relay_backfill_verify_info", { ...verify, method: "full" }), 1);
      assert.ok(sumOf(pushed, "relay_backfill_verify_duration_seconds", verify) > 0);
      // The run's group is untouched by the verify.
      assert.equal(
        sumOf(pushed, "relay_backfill_migrated_total", { mode: "execute", instance: "bf:vm" }),
        200,
      );

      // Prometheus reads the verify's series through the Pushgateway.
      await waitFor("Prometheus to scrape the verify's group", async () => {
        const rows = await prometheus.query(
          'max(relay_backfill_verify_mismatched_total{mode="verify",kind="missing"})',
        );
        return rows.length === 1 && rows[0]!.value === 3;
      }, 30_000);
      for (const expr of verifyPanelQueries()) {
        const rows = await prometheus.query(expr);
        assert.ok(rows.length > 0, `the dashboard's verify panel has data: ${expr}`);
      }

      const sampled = await runCli([
        "verify",
        "--sample",
        "1000",
        "--recheck-delay",
        "0",
        ...push,
        "--redis-url",
        server.url,
      ]);
      assert.equal(sampled.code, 1, sampled.stderr);
      const again = await pushgateway.scrape();
      assert.equal(sumOf(again, "relay_backfill_verify_info", { ...verify, method: "sample" }), 1);
      assert.equal(sumOf(again, "relay_backfill_verify_checked_total", verify), 200);
      assert.equal(
        sumOf(again, "relay_backfill_verify_mismatched_total", { ...verify, kind: "missing" }),
        3,
      );
      assert.equal(
        sumOf(again, "relay_backfill_verify_mismatched_total", { ...verify, kind: "fields" }),
        1,
      );
    } finally {
      client.disconnect();
      await prometheus.stop();
      await pushgateway.stop();
      await server.stop();
    }
  },
});

Deno.test("verify metrics: --metrics-port serves the final values during the linger", async () => {
  const server = await startRedis();
  const client = server.client();
  try {
    await seedOld(client, makeJobs(50));
    const port = freePort();
    const verify = spawnCli([
      "verify",
      "--sample",
      "100",
      "--metrics-port",
      String(port),
      "--metrics-host",
      "127.0.0.1",
      "--metrics-linger",
      "60",
      "--quiet",
      "--redis-url",
      server.url,
    ]);
    let text = "";
    try {
      await waitFor("the verify's final values", async () => {
        if (await portIsClosed(port)) return false;
        text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        return sumOf(text, "relay_backfill_verify_completed") === 1;
      }, 60_000);
    } finally {
      verify.child.kill("SIGTERM");
      await verify.done;
    }
    assert.equal(sumOf(text, "relay_backfill_verify_checked_total"), 50);
    assert.equal(sumOf(text, "relay_backfill_verify_mismatched_total", { kind: "missing" }), 50);
    assert.equal(sumOf(text, "relay_backfill_verify_parity"), 0);
    assert.equal(sumOf(text, "relay_backfill_verify_running"), 0);
  } finally {
    client.disconnect();
    await server.stop();
  }
});
