/**
 * The telemetry as an SRE sees it: a real Prometheus scraping the backfill's /metrics and a real
 * Pushgateway (honor_labels), with the shipped alert rules loaded. Every docs/telemetry.md query, every
 * dashboard expression and every alert expression is evaluated through the HTTP API during and
 * after real runs of the CLI against a real redis-server.
 */
import assert from "node:assert/strict";
import { oldKeyFor } from "./support/keys.ts";
import { spawnCli, waitFor } from "./support/cli.ts";
import {
  type Prometheus,
  startPrometheus,
  startPushgateway,
  toolsAvailable,
} from "./support/prometheus.ts";
import { freePort, startRedis } from "./support/redis_server.ts";
import { makeJobs, newKey, seedOld } from "./support/seed.ts";

const ROOT = new URL("../", import.meta.url).pathname;

/** The PromQL lines of docs/telemetry.md's promql blocks. */
function docsQueries(): string[] {
  const telemetry = Deno.readTextFileSync(`${ROOT}docs/telemetry.md`);
  return [...telemetry.matchAll(/```promql\n([\s\S]*?)```/g)]
    .flatMap((block) => block[1]!.split("\n"))
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"));
}

/** Every target expression of the shipped Grafana dashboard. */
function dashboardQueries(): string[] {
  const dashboard = JSON.parse(Deno.readTextFileSync(`${ROOT}deploy/grafana/backfill.json`));
  return (dashboard.panels as { targets: { expr: string }[] }[])
    .flatMap((panel) => panel.targets.map((target) => target.expr));
}

/** Queries with no data until the engine reports probes and replica lag (the control work). */
const NO_DATA_YET = /redis_busy_ratio|redis_backfill_ratio|replica_lag|verify_/;
/** Documented queries that must be empty in a healthy run (they are alerts). */
const STALL = /last_progress_timestamp_seconds\) > 300/;

async function expectData(prometheus: Prometheus, queries: string[], phase: string) {
  for (const query of queries) {
    const result = await prometheus.query(query);
    if (NO_DATA_YET.test(query)) continue;
    if (STALL.test(query)) {
      assert.deepEqual(result, [], `${phase}: a healthy run is not stalled: ${query}`);
      continue;
    }
    assert.ok(result.length > 0, `${phase}: no data for ${query}`);
    for (const sample of result) {
      assert.ok(!Number.isNaN(sample.value), `${phase}: NaN from ${query}`);
    }
  }
}

async function firingExpressions(prometheus: Prometheus): Promise<string[]> {
  const firing: string[] = [];
  for (const rule of await prometheus.alertRules()) {
    if ((await prometheus.query(rule.query)).length > 0) firing.push(rule.name);
  }
  return firing.sort();
}

async function value(prometheus: Prometheus, query: string): Promise<number | undefined> {
  return (await prometheus.query(query))[0]?.value;
}

Deno.test({
  name: "prometheus: documented queries, dashboard and alerts hold against a real run",
  ignore: !toolsAvailable("prometheus", "prometheus-pushgateway"),
  async fn() {
    const gateway = await startPushgateway();
    const metricsPort = freePort();
    let prometheus: Prometheus | undefined;
    const redis = await startRedis();
    const client = redis.client();
    try {
      prometheus = await startPrometheus({
        jobs: [
          { job: "backfill", target: `127.0.0.1:${metricsPort}` },
          { job: "pushgateway", target: `127.0.0.1:${gateway.port}`, honorLabels: true },
        ],
        ruleFiles: [`${ROOT}deploy/prometheus/alerts.yml`],
      });
      const jobs = makeJobs(2400, ["ws-a", "ws-b", "ws-c", "ws-d"]);
      await seedOld(client, jobs);
      // 200 jobs already dual-written (skipped, exists), and three invalid old keys.
      for (const job of jobs.slice(0, 200)) {
        await client.hset(newKey(job), { workspace_id: job.workspace, ...job.fields });
      }
      await client.set(oldKeyFor("not-a-hash"), "x");
      await client.hset(oldKeyFor("no-workspace"), { status: "queued" });
      await client.hset(oldKeyFor("bad-workspace"), { workspace_id: "bad id!" });
      // Prometheus scrapes its targets only some seconds after it starts: wait for that first.
      await waitFor(
        "Prometheus to scrape the Pushgateway",
        async () => (await value(prometheus!, 'up{job="pushgateway"}')) === 1,
      );
      const common = [
        "--pushgateway",
        gateway.url,
        "--push-interval",
        "1",
        "--progress-key",
        "bf:prom",
        "--redis-url",
        redis.url,
        "--json",
      ];

      const run = spawnCli([
        "--execute",
        "--rps",
        "300",
        "--batch",
        "100",
        "--metrics-port",
        String(metricsPort),
        "--metrics-host",
        "127.0.0.1",
        "--metrics-linger",
        "5",
        ...common,
      ]);
      const queries = [...docsQueries(), ...dashboardQueries()];
      assert.ok(queries.length >= 20, `queries found: ${queries.length}`);

      // During the run: both sources scraped, rates defined.
      await waitFor(
        "Prometheus to see the run from both sources",
        async () =>
          (await value(prometheus!, 'relay_backfill_running{job="backfill"}')) === 1 &&
          (await value(prometheus!, 'relay_backfill_running{job="relay_backfill"}')) === 1 &&
          ((await value(
              prometheus!,
              'sum(rate(relay_backfill_migrated_total{job="backfill"}[5m]))',
            )) ?? 0) > 0,
      );
      await expectData(prometheus, queries, "during the run");
      assert.deepEqual(await firingExpressions(prometheus), [], "no alert while it progresses");

      // The end, read from the lingering server: the final values, not the last batch but one.
      await waitFor("the linger", () => run.stderrSoFar().includes("metrics_linger"));
      await waitFor(
        "a scrape of the final values",
        async () => (await value(prometheus!, 'relay_backfill_running{job="backfill"}')) === 0,
      );
      assert.equal(
        await value(prometheus, 'sum(relay_backfill_migrated_total{job="backfill"})'),
        2200,
      );
      const result = await run.done;
      assert.equal(result.code, 0, result.stderr);
      const summary = JSON.parse(result.stdout);
      assert.equal(summary.migrated, 2200);
      // A dual-written copy without the old key's TTL is repaired (TTL set), not skipped.
      assert.equal(summary.skipped_exists + summary.repaired, 200);
      assert.equal(summary.skipped_invalid, 3);
      // The count line (each key is named too once the strategies report key and reason).
      assert.match(result.stderr, /invalid_keys: 3 invalid old keys skipped/);

      await waitFor(
        "the final push",
        async () =>
          (await value(prometheus!, 'relay_backfill_completed{job="relay_backfill"}')) === 1,
      );
      await expectData(prometheus, queries, "after the run");
      const total = (metric: string) =>
        value(prometheus!, `sum(max by (workspace_id) (${metric}))`);
      assert.equal(await total("relay_backfill_migrated_total"), 2200);
      assert.equal(
        await total('relay_backfill_skipped_total{reason="exists"}'),
        summary.skipped_exists,
      );
      assert.equal(await total("relay_backfill_repaired_total"), summary.repaired);
      assert.equal(await total('relay_backfill_skipped_total{reason="invalid"}'), 3);
      assert.equal(await total("relay_backfill_scanned_total"), 2403);
      assert.equal(await total("relay_backfill_errors_total"), 0);
      assert.equal(
        await value(
          prometheus,
          docsQueries().find((q) =>
            q.startsWith("sum(max by (workspace_id) (relay_backfill_migrated_total)) / (")
          )!,
        ),
        2200 / (2200 + summary.skipped_exists),
      );
      assert.deepEqual(await firingExpressions(prometheus), [], "a completed run trips nothing");

      // A dry-run has its own group: it does not replace the execute run's.
      const dry = await spawnCli(["--dry-run", "--rps", "0", ...common]).done;
      assert.equal(dry.code, 0, dry.stderr);
      await waitFor(
        "both groups",
        async () =>
          (await prometheus!.query('relay_backfill_completed{job="relay_backfill"}')).length === 2,
      );

      // An execute run stopped early (--max-keys) shows not-completed, and that alert fires.
      const stopped = await spawnCli(["--execute", "--max-keys", "50", ...common]).done;
      assert.equal(stopped.code, 0, stopped.stderr);
      assert.equal(JSON.parse(stopped.stdout).completed, false);
      await waitFor("the stopped run's push", async () =>
        (await value(
          prometheus!,
          'relay_backfill_completed{job="relay_backfill", mode="execute"}',
        )) === 0);
      assert.deepEqual(await firingExpressions(prometheus), ["RelayBackfillEndedIncomplete"]);
      await waitFor(
        "the alert",
        async () =>
          (await prometheus!.alerts()).some((a) =>
            a.name === "RelayBackfillEndedIncomplete" && a.state === "firing" &&
            a.labels.instance === "bf:prom" && a.labels.mode === "execute"
          ),
      );
    } finally {
      client.disconnect();
      await prometheus?.stop();
      await gateway.stop();
      await redis.stop();
    }
  },
});
