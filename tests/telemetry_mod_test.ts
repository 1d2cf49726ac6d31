import assert from "node:assert/strict";
import {
  createTelemetry,
  fanOut,
  MetricsServerError,
  telemetryEnabled,
  type TelemetryOptions,
} from "../src/telemetry/mod.ts";
import {
  BatchFeed,
  FakeClock,
  freePort,
  portIsClosed,
  results,
  startFakePushgateway,
  sumOf,
  TrackingClock,
} from "./support/telemetry.ts";

const START = {
  mode: "execute",
  rps: 100,
  estimatedTotal: 40,
  progressKey: "ai:backfill",
} as const;

function options(overrides: Partial<TelemetryOptions> & Pick<TelemetryOptions, "write">) {
  return {
    enabled: true,
    metricsHost: "127.0.0.1",
    progressInterval: 10,
    logFormat: "json",
    quiet: false,
    workspaceLabel: true,
    isTty: false,
    version: "9.9.9",
    progressKey: "ai:backfill",
    pushIntervalSeconds: 0,
    ...overrides,
  } satisfies TelemetryOptions;
}

async function scrape(port: number): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(response.status, 200);
  return await response.text();
}

Deno.test("telemetry: a run scraped over HTTP while it goes, pushed at the end, then closed", async () => {
  const gateway = startFakePushgateway();
  const clock = new TrackingClock();
  const stderr: string[] = [];
  const telemetry = createTelemetry(options({
    metricsPort: 0,
    pushgatewayUrl: `http://ci:t0ken@127.0.0.1:${gateway.port}`,
    write: (t) => stderr.push(t),
    clock,
  }));
  try {
    const port = telemetry.metricsPort!;
    assert.ok(port > 0);
    const { observer } = telemetry;
    const feed = new BatchFeed(40);
    observer.onStart?.(START);
    // The start push goes out at once (the run shows up before its first batch).
    while (gateway.requests.length === 0) await new Promise((r) => setTimeout(r, 5));
    observer.onBatch?.(
      feed.next([...results(8, "migrated", "acme"), ...results(2, "skipped_invalid")]),
    );
    // The first scrape shows the new workspace at 0; the next one counts it.
    assert.equal(sumOf(await scrape(port), "relay_backfill_migrated_total"), 0);
    const during = await scrape(port);
    assert.equal(sumOf(during, "relay_backfill_scanned_total"), 10);
    assert.equal(sumOf(during, "relay_backfill_migrated_total", { workspace_id: "acme" }), 8);
    assert.equal(sumOf(during, "relay_backfill_build_info", { version: "9.9.9" }), 1);
    assert.equal(sumOf(during, "relay_backfill_rps_limit"), 100);

    observer.onLimiterWait?.(1.5);
    observer.onBatch?.(feed.next([
      ...results(5, "repaired", "globex"),
      ...results(3, "skipped_exists", "acme"),
      ...results(1, "skipped_gone", "acme"),
      ...results(1, "errors", "globex"),
    ]));
    const later = await scrape(port);
    // acme counts at once; globex is new, so this scrape shows it at 0 (the end applies it).
    assert.equal(sumOf(later, "relay_backfill_scanned_total"), 14);
    assert.equal(sumOf(later, "relay_backfill_scanned_total", { workspace_id: "globex" }), 0);
    assert.equal(sumOf(later, "relay_backfill_limiter_wait_seconds_total"), 1.5);
    const summary = feed.summary(true);
    await observer.onEnd?.(summary);

    // One push at the start (the interval is off here), one at the end; the last agrees with the
    // summary.
    assert.equal(gateway.requests.length, 2);
    assert.equal(sumOf(gateway.requests[0]!.body, "relay_backfill_running"), 1);
    const push = gateway.requests[1]!;
    assert.equal(push.method, "PUT");
    assert.equal(push.path, "/metrics/job/relay_backfill/instance/ai%3Abackfill/mode/execute");
    assert.equal(sumOf(push.body, "relay_backfill_running"), 0);
    const body = push.body;
    assert.equal(sumOf(body, "relay_backfill_scanned_total"), summary.scanned);
    assert.equal(sumOf(body, "relay_backfill_migrated_total"), summary.migrated);
    assert.equal(sumOf(body, "relay_backfill_repaired_total"), summary.repaired);
    assert.equal(
      sumOf(body, "relay_backfill_skipped_total", { reason: "exists" }),
      summary.skipped_exists,
    );
    assert.equal(
      sumOf(body, "relay_backfill_skipped_total", { reason: "invalid" }),
      summary.skipped_invalid,
    );
    assert.equal(
      sumOf(body, "relay_backfill_skipped_total", { reason: "gone" }),
      summary.skipped_gone,
    );
    assert.equal(sumOf(body, "relay_backfill_errors_total"), summary.errors);
    assert.equal(sumOf(body, "relay_backfill_filtered_total"), summary.filtered);
    assert.equal(sumOf(body, "relay_backfill_completed"), 1);

    // After the end a scrape still reads the final values; close() shuts the server and pushes
    // nothing more.
    assert.equal(sumOf(await scrape(port), "relay_backfill_scanned_total"), 20);
    await telemetry.close(summary);
    assert.ok(await portIsClosed(port));
    assert.equal(gateway.requests.length, 2);
    assert.equal(clock.pending, 0);

    // stderr: JSON lines only (progress included, with counters); the password never shows.
    assert.ok(!stderr.join("").includes("t0ken"));
    const logs = stderr.map((t) => JSON.parse(t));
    assert.deepEqual(logs.map((l) => l.event), [
      "metrics_listening",
      "progress",
      "progress",
      "invalid_keys",
      "push_done",
    ]);
    const [first, last] = logs.filter((l) => l.event === "progress");
    assert.match(first.message, /^\[execute\] {2}scanned 10\/~40 \(25%\)/);
    assert.equal(first.scanned, 10);
    assert.equal(first.migrated, 8);
    assert.equal(first.skipped_invalid, 2);
    assert.equal(first.estimated_total, 40);
    assert.equal(last.scanned, 20);
    assert.equal(last.errors, 1);
    assert.equal(last.done, true);
    assert.match(last.message, /scanned 20 .*errors 1 .*done in/);
  } finally {
    await telemetry.close();
    await gateway.close();
  }
});

Deno.test("telemetry: close() without onEnd (a run that threw) still pushes and shuts down", async () => {
  const gateway = startFakePushgateway();
  const clock = new TrackingClock();
  const telemetry = createTelemetry(options({
    metricsPort: 0,
    pushgatewayUrl: gateway.url,
    write: () => {},
    clock,
  }));
  try {
    const feed = new BatchFeed();
    telemetry.observer.onStart?.(START);
    telemetry.observer.onBatch?.(feed.next(results(3, "migrated", "acme")));
    telemetry.observer.onBatch?.(feed.next(results(3, "migrated", "acme")));
    await telemetry.close();
    await telemetry.close();
    assert.equal(gateway.requests.length, 2, "the start push and the last one");
    const last = gateway.requests[1]!.body;
    assert.equal(sumOf(last, "relay_backfill_migrated_total"), 6);
    assert.equal(sumOf(last, "relay_backfill_completed"), 0);
    assert.ok(await portIsClosed(telemetry.metricsPort!));
    assert.equal(clock.pending, 0, "the pending progress line was cancelled");
  } finally {
    await gateway.close();
  }
});

Deno.test("telemetry: a failing Pushgateway is logged and the run's end still completes", async () => {
  const gateway = startFakePushgateway(() => new Response("bad metrics", { status: 400 }));
  const stderr: string[] = [];
  const telemetry = createTelemetry(options({
    pushgatewayUrl: gateway.url,
    logFormat: "text",
    write: (t) => stderr.push(t),
  }));
  try {
    telemetry.observer.onStart?.(START);
    await telemetry.observer.onEnd?.(new BatchFeed().summary());
    assert.equal(gateway.requests.length, 2);
    const warn = stderr.find((t) => t.includes(" WARN push_failed: "));
    assert.ok(warn, stderr.join(""));
    assert.match(warn, /status=400 answer="bad metrics"/);
  } finally {
    await telemetry.close();
    await gateway.close();
  }
});

Deno.test("telemetry: enabled=false starts no server, pushes nothing, progress and logs still work", async () => {
  const port = freePort();
  const gateway = startFakePushgateway();
  const clock = new FakeClock();
  const stderr: string[] = [];
  const telemetry = createTelemetry(options({
    enabled: false,
    metricsPort: port,
    pushgatewayUrl: gateway.url,
    write: (t) => stderr.push(t),
    clock,
  }));
  try {
    assert.equal(telemetry.metricsPort, undefined);
    assert.ok(await portIsClosed(port), "nothing listens on the metrics port");
    // The port is really free: we can bind it ourselves.
    Deno.listen({ hostname: "127.0.0.1", port }).close();

    const feed = new BatchFeed();
    telemetry.observer.onStart?.(START);
    telemetry.observer.onBatch?.(feed.next(results(4, "migrated", "acme")));
    telemetry.logger.log("info", "custom", "still logging");
    await telemetry.observer.onEnd?.(feed.summary());
    await telemetry.close();

    assert.equal(gateway.requests.length, 0);
    assert.equal(
      (await telemetry.registry.metrics()).trim(),
      "",
      "the metrics observer is a no-op",
    );
    const logs = stderr.map((t) => JSON.parse(t));
    assert.deepEqual(logs.map((l) => l.event), ["telemetry_disabled", "progress", "custom"]);
    assert.match(logs[1].message, /^\[execute\] {2}scanned 4/);
  } finally {
    await gateway.close();
  }
});

Deno.test("telemetry: text logs on a non-TTY get plain progress lines", async () => {
  const clock = new FakeClock();
  const stderr: string[] = [];
  const telemetry = createTelemetry(options({
    logFormat: "text",
    write: (t) => stderr.push(t),
    clock,
  }));
  const feed = new BatchFeed(8);
  telemetry.observer.onStart?.(START);
  clock.advance(1000);
  telemetry.observer.onBatch?.(feed.next(results(4, "migrated", "acme")));
  telemetry.logger.log("info", "custom", "a log line");
  await telemetry.close(feed.summary());
  assert.equal(stderr.length, 2);
  assert.equal(
    stderr[0],
    "[execute]  scanned 4/~8 (50%)  migrated 4  repaired 0  skipped 0  errors 0  4.0 keys/s  " +
      "ETA ~1s (est.)\n",
  );
  assert.match(stderr[1]!, /^\S+Z INFO custom: a log line\n$/);
});

Deno.test("telemetry: quiet writes no progress and no info logs, but warnings", async () => {
  const stderr: string[] = [];
  const telemetry = createTelemetry(options({ quiet: true, write: (t) => stderr.push(t) }));
  const feed = new BatchFeed();
  telemetry.observer.onStart?.(START);
  telemetry.observer.onBatch?.(feed.next(results(4, "migrated", "acme")));
  telemetry.logger.log("info", "hidden", "not shown");
  telemetry.logger.log("warn", "shown", "shown");
  await telemetry.close(feed.summary());
  assert.deepEqual(stderr.map((t) => JSON.parse(t).event), ["shown"]);
});

Deno.test("telemetry: on a TTY, log lines go above the redrawn progress line", async () => {
  const clock = new FakeClock();
  const stderr: string[] = [];
  const telemetry = createTelemetry(options({
    isTty: true,
    logFormat: "text",
    write: (t) => stderr.push(t),
    clock,
  }));
  const feed = new BatchFeed();
  telemetry.observer.onBatch?.(feed.next(results(1, "migrated", "acme")));
  telemetry.logger.log("warn", "slow", "redis is slow");
  const last = stderr.at(-1)!;
  assert.ok(last.startsWith("\r\x1b[2K"), JSON.stringify(last));
  assert.match(last, / WARN slow: redis is slow\nscanned 1 /);
  await telemetry.close(feed.summary());
  assert.ok(stderr.at(-1)!.endsWith("\n"));
  assert.equal(clock.pending, 0);
});

Deno.test("telemetry: a taken metrics port throws MetricsServerError before anything runs", () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    assert.throws(
      () => createTelemetry(options({ metricsPort: listener.addr.port, write: () => {} })),
      MetricsServerError,
    );
  } finally {
    listener.close();
  }
});

Deno.test("telemetry: malformed reports never throw out of the observer", async () => {
  const stderr: string[] = [];
  const telemetry = createTelemetry(options({ write: (t) => stderr.push(t) }));
  const feed = new BatchFeed();
  // A malformed report (negative seconds, NaN estimate) must not throw out of onBatch.
  const batch = { ...feed.next(results(1, "migrated", "acme")), seconds: -1, estimatedTotal: NaN };
  telemetry.observer.onBatch?.(batch);
  telemetry.observer.onLimiterWait?.(Number.NaN);
  await telemetry.close(feed.summary());
  const text = await telemetry.registry.metrics();
  assert.equal(sumOf(text, "relay_backfill_migrated_total"), 1);
  assert.equal(sumOf(text, "relay_backfill_duration_seconds_count"), 0);
});

Deno.test("fanOut: an observer that throws is logged and the others still get the event", async () => {
  const seen: string[] = [];
  const logged: string[] = [];
  const observer = fanOut([
    {
      onBatch() {
        throw new Error("broken observer");
      },
      onEnd() {
        return Promise.reject(new Error("broken end"));
      },
    },
    { onBatch: () => void seen.push("batch"), onEnd: () => void seen.push("end") },
  ], { log: (_level, event, _message, fields) => logged.push(`${event} ${fields?.error}`) });
  const feed = new BatchFeed();
  observer.onBatch(feed.next(results(1, "migrated", "a")));
  await observer.onEnd(feed.summary());
  assert.deepEqual(seen, ["batch", "end"]);
  assert.deepEqual(logged, [
    "telemetry_failed Error: broken observer",
    "telemetry_failed Error: broken end",
  ]);
});

Deno.test("telemetryEnabled: only 'false' turns metrics off", () => {
  assert.equal(telemetryEnabled(undefined), true);
  assert.equal(telemetryEnabled(""), true);
  assert.equal(telemetryEnabled("true"), true);
  assert.equal(telemetryEnabled("0"), true);
  assert.equal(telemetryEnabled("false"), false);
  assert.equal(telemetryEnabled(" FALSE "), false);
});
