import assert from "node:assert/strict";
import { BackfillMetrics } from "../src/telemetry/metrics.ts";
import { MetricsServerError, startMetricsServer } from "../src/telemetry/server.ts";
import {
  BatchFeed,
  FakeClock,
  labelValues,
  parseSamples,
  portIsClosed,
  results,
  sumOf,
  typeOf,
} from "./support/telemetry.ts";

const START = {
  mode: "execute",
  rps: 250,
  estimatedTotal: 1000,
  progressKey: "ai:backfill",
} as const;

async function scrape(port: number, path = "/metrics"): Promise<Response> {
  return await fetch(`http://127.0.0.1:${port}${path}`);
}

Deno.test("metrics: /metrics over real HTTP has the names, types and labels, and values move", async () => {
  const clock = new FakeClock();
  const metrics = new BackfillMetrics({ version: "1.2.3", clock });
  const server = startMetricsServer({ registry: metrics.registry, port: 0, hostname: "127.0.0.1" });
  try {
    metrics.onStart(START);
    const feed = new BatchFeed(1000);
    clock.advance(2000);
    metrics.onBatch(feed.next([
      ...results(3, "migrated", "acme"),
      ...results(1, "repaired", "acme"),
      ...results(2, "skipped_exists", "globex"),
      ...results(1, "skipped_invalid"),
      ...results(1, "skipped_gone", "acme"),
      ...results(1, "errors", "globex"),
    ], 0.2));
    metrics.onLimiterWait(0.75);

    // The first read exposes the workspaces seen for the first time at 0, so rate() and
    // increase() see their first batch; keys of already exposed label sets count at once.
    const exposing = await (await scrape(server.port)).text();
    assert.equal(sumOf(exposing, "relay_backfill_migrated_total", { workspace_id: "acme" }), 0);
    assert.equal(sumOf(exposing, "relay_backfill_errors_total", { workspace_id: "globex" }), 0);
    assert.equal(
      sumOf(exposing, "relay_backfill_skipped_total", {
        workspace_id: "_invalid",
        reason: "invalid",
      }),
      1,
    );
    // The next read counts them.
    const response = await scrape(server.port);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    const first = await response.text();

    const expectedTypes: Record<string, string> = {
      relay_backfill_scanned_total: "counter",
      relay_backfill_migrated_total: "counter",
      relay_backfill_repaired_total: "counter",
      relay_backfill_skipped_total: "counter",
      relay_backfill_errors_total: "counter",
      relay_backfill_filtered_total: "counter",
      relay_backfill_duration_seconds: "histogram",
      relay_backfill_last_success_timestamp_seconds: "gauge",
      relay_backfill_start_timestamp_seconds: "gauge",
      relay_backfill_rps_limit: "gauge",
      relay_backfill_limiter_wait_seconds_total: "counter",
      relay_backfill_estimated_keys: "gauge",
      relay_backfill_completed: "gauge",
      relay_backfill_run_info: "gauge",
      relay_backfill_build_info: "gauge",
      relay_backfill_last_progress_timestamp_seconds: "gauge",
      relay_backfill_end_timestamp_seconds: "gauge",
      relay_backfill_running: "gauge",
      relay_backfill_invalid_total: "counter",
      relay_backfill_rate_limit: "gauge",
      relay_backfill_throttled: "gauge",
      relay_backfill_redis_busy_ratio: "gauge",
      relay_backfill_redis_backfill_ratio: "gauge",
      relay_backfill_redis_shared: "gauge",
      relay_backfill_replica_lag_bytes: "gauge",
      relay_backfill_redis_up: "gauge",
    };
    for (const [name, type] of Object.entries(expectedTypes)) {
      assert.equal(typeOf(first, name), type, `# TYPE of ${name}`);
    }
    // Exactly these families, nothing else (no default process metrics).
    const families = [...first.matchAll(/^# TYPE (\S+)/gm)].map((m) => m[1]).sort();
    assert.deepEqual(families, Object.keys(expectedTypes).sort());

    assert.equal(sumOf(first, "relay_backfill_scanned_total"), 9);
    assert.equal(sumOf(first, "relay_backfill_scanned_total", { workspace_id: "acme" }), 5);
    assert.equal(sumOf(first, "relay_backfill_scanned_total", { workspace_id: "_invalid" }), 1);
    assert.equal(sumOf(first, "relay_backfill_migrated_total", { workspace_id: "acme" }), 3);
    assert.equal(sumOf(first, "relay_backfill_repaired_total", { workspace_id: "acme" }), 1);
    assert.equal(
      sumOf(first, "relay_backfill_skipped_total", { workspace_id: "globex", reason: "exists" }),
      2,
    );
    assert.equal(
      sumOf(first, "relay_backfill_skipped_total", { workspace_id: "_invalid", reason: "invalid" }),
      1,
    );
    assert.equal(
      sumOf(first, "relay_backfill_skipped_total", { workspace_id: "acme", reason: "gone" }),
      1,
    );
    assert.equal(sumOf(first, "relay_backfill_errors_total", { workspace_id: "globex" }), 1);
    assert.deepEqual(labelValues(first, "relay_backfill_scanned_total", "workspace_id"), [
      "_invalid",
      "acme",
      "globex",
    ]);
    assert.deepEqual(labelValues(first, "relay_backfill_skipped_total", "reason"), [
      "exists",
      "gone",
      "invalid",
    ]);
    assert.equal(sumOf(first, "relay_backfill_duration_seconds_count"), 1);
    assert.equal(sumOf(first, "relay_backfill_duration_seconds_sum"), 0.2);
    assert.equal(sumOf(first, "relay_backfill_duration_seconds_bucket", { le: "0.25" }), 1);
    assert.equal(sumOf(first, "relay_backfill_duration_seconds_bucket", { le: "0.1" }), 0);
    assert.equal(sumOf(first, "relay_backfill_rps_limit"), 250);
    assert.equal(sumOf(first, "relay_backfill_limiter_wait_seconds_total"), 0.75);
    assert.equal(sumOf(first, "relay_backfill_estimated_keys"), 1000);
    assert.equal(
      sumOf(first, "relay_backfill_start_timestamp_seconds"),
      (clock.now() - 2000) / 1000,
    );
    assert.equal(sumOf(first, "relay_backfill_last_success_timestamp_seconds"), clock.now() / 1000);
    assert.equal(sumOf(first, "relay_backfill_run_info", { mode: "execute" }), 1);
    assert.equal(sumOf(first, "relay_backfill_build_info", { version: "1.2.3" }), 1);
    assert.equal(sumOf(first, "relay_backfill_completed"), 0);

    // Second batch: values move.
    clock.advance(1000);
    feed.estimatedTotal = 1200;
    metrics.onBatch(feed.next(results(4, "migrated", "acme"), 3));
    metrics.onBatch(feed.next([], 0.001)); // an empty SCAN page: not a processed batch
    metrics.onLimiterWait(0.25);
    metrics.onLimiterWait(-1); // ignored, never throws
    metrics.onEnd(feed.summary(true));
    const second = await (await scrape(server.port)).text();
    assert.equal(sumOf(second, "relay_backfill_scanned_total"), 13);
    assert.equal(sumOf(second, "relay_backfill_migrated_total", { workspace_id: "acme" }), 7);
    assert.equal(sumOf(second, "relay_backfill_duration_seconds_count"), 2);
    assert.equal(sumOf(second, "relay_backfill_duration_seconds_sum"), 3.2);
    assert.equal(sumOf(second, "relay_backfill_limiter_wait_seconds_total"), 1);
    assert.equal(sumOf(second, "relay_backfill_estimated_keys"), 1200);
    assert.equal(
      sumOf(second, "relay_backfill_last_success_timestamp_seconds"),
      clock.now() / 1000,
    );
    assert.equal(sumOf(second, "relay_backfill_completed"), 1);
  } finally {
    await server.shutdown();
  }
});

Deno.test("metrics: filtered keys count as scanned and in relay_backfill_filtered_total", async () => {
  const metrics = new BackfillMetrics({ version: "0" });
  metrics.onStart(START);
  const feed = new BatchFeed();
  metrics.onBatch(
    feed.next([...results(2, "filtered", "other"), ...results(1, "migrated", "mine")]),
  );
  await metrics.registry.metrics(); // exposes "other" and "mine" at 0
  const text = await metrics.registry.metrics();
  assert.equal(sumOf(text, "relay_backfill_scanned_total"), 3);
  assert.equal(sumOf(text, "relay_backfill_filtered_total", { workspace_id: "other" }), 2);
  // The outcome counters add up to scanned.
  const outcomes = [
    "relay_backfill_migrated_total",
    "relay_backfill_repaired_total",
    "relay_backfill_skipped_total",
    "relay_backfill_errors_total",
    "relay_backfill_filtered_total",
  ].reduce((sum, name) => sum + sumOf(text, name), 0);
  assert.equal(outcomes, 3);
});

Deno.test("metrics: workspaceLabel=false collapses every workspace_id to _all, exported from 0", async () => {
  const metrics = new BackfillMetrics({ version: "0", workspaceLabel: false });
  const before = await metrics.registry.metrics();
  assert.equal(sumOf(before, "relay_backfill_migrated_total", { workspace_id: "_all" }), 0);
  assert.match(before, /^relay_backfill_migrated_total\{workspace_id="_all"\} 0$/m);
  assert.match(before, /^relay_backfill_skipped_total\{workspace_id="_all",reason="gone"\} 0$/m);

  const feed = new BatchFeed();
  metrics.onBatch(feed.next([
    ...results(2, "migrated", "acme"),
    ...results(1, "migrated", "globex"),
    ...results(1, "skipped_invalid"),
  ]));
  const text = await metrics.registry.metrics();
  for (const name of ["relay_backfill_scanned_total", "relay_backfill_skipped_total"]) {
    assert.deepEqual(labelValues(text, name, "workspace_id"), ["_all"]);
  }
  assert.equal(sumOf(text, "relay_backfill_migrated_total", { workspace_id: "_all" }), 3);
  assert.equal(sumOf(text, "relay_backfill_scanned_total", { workspace_id: "_all" }), 4);
  assert.equal(
    sumOf(text, "relay_backfill_skipped_total", { workspace_id: "_all", reason: "invalid" }),
    1,
  );
  assert.ok(!text.includes("acme"));
});

Deno.test("metrics: label values are escaped by prom-client", async () => {
  // A permissive --workspace-pattern could let quotes through; the exposition must stay parsable.
  const metrics = new BackfillMetrics({ version: "0" });
  metrics.onBatch(new BatchFeed().next(results(1, "migrated", 'we"ird\\ws')));
  metrics.onEnd(new BatchFeed().summary());
  const text = await metrics.registry.metrics();
  const samples = parseSamples(text).filter((s) => s.name === "relay_backfill_migrated_total");
  assert.deepEqual(samples.map((s) => s.labels.workspace_id), ["_invalid", 'we"ird\\ws']);
});

Deno.test("server: /healthz, 404, 405, HEAD; closed after shutdown()", async () => {
  const metrics = new BackfillMetrics({ version: "0" });
  const server = startMetricsServer({ registry: metrics.registry, port: 0, hostname: "127.0.0.1" });
  const health = await scrape(server.port, "/healthz");
  assert.equal(health.status, 200);
  assert.equal(await health.text(), "ok\n");
  const missing = await scrape(server.port, "/nope");
  assert.equal(missing.status, 404);
  await missing.body?.cancel();
  const post = await fetch(`http://127.0.0.1:${server.port}/metrics`, { method: "POST" });
  assert.equal(post.status, 405);
  await post.body?.cancel();
  const head = await fetch(`http://127.0.0.1:${server.port}/metrics`, { method: "HEAD" });
  assert.equal(head.status, 200);
  assert.equal(await head.text(), "");
  await server.shutdown();
  await server.shutdown(); // idempotent
  assert.ok(await portIsClosed(server.port));
});

Deno.test("server: a taken port fails with MetricsServerError", () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const metrics = new BackfillMetrics({ version: "0" });
    assert.throws(
      () =>
        startMetricsServer({
          registry: metrics.registry,
          port: listener.addr.port,
          hostname: "127.0.0.1",
        }),
      (error: unknown) => error instanceof MetricsServerError && error.cause !== undefined,
    );
  } finally {
    listener.close();
  }
  assert.throws(
    () =>
      startMetricsServer({ registry: new BackfillMetrics({ version: "0" }).registry, port: -1 }),
    RangeError,
  );
});

Deno.test("server: prints nothing on stdout (checked in a child process)", async () => {
  const script = `
    import { BackfillMetrics } from ${
    JSON.stringify(new URL("../src/telemetry/metrics.ts", import.meta.url).href)
  };
    import { startMetricsServer } from ${
    JSON.stringify(new URL("../src/telemetry/server.ts", import.meta.url).href)
  };
    const metrics = new BackfillMetrics({ version: "0" });
    const server = startMetricsServer({ registry: metrics.registry, port: 0, hostname: "127.0.0.1" });
    const res = await fetch("http://127.0.0.1:" + server.port + "/metrics");
    await res.text();
    await server.shutdown();
  `;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--config", new URL("../deno.json", import.meta.url).pathname, script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, stderr);
  assert.equal(new TextDecoder().decode(output.stdout), "");
  assert.equal(stderr, "");
});
