import assert from "node:assert/strict";
import type { Logger, LogLevel } from "../src/run_events.ts";
import { BackfillMetrics } from "../src/telemetry/metrics.ts";
import { groupingSegment, pushMetrics, pushUrl } from "../src/telemetry/pushgateway.ts";
import { BatchFeed, freePort, results, startFakePushgateway, sumOf } from "./support/telemetry.ts";

interface Logged {
  level: LogLevel;
  event: string;
  text: string;
}

function recordingLogger(): Logger & { entries: Logged[] } {
  const entries: Logged[] = [];
  return {
    entries,
    log(level, event, message, fields) {
      entries.push({ level, event, text: `${message} ${JSON.stringify(fields ?? {})}` });
    },
  };
}

Deno.test("pushgateway: PUTs the registry to /metrics/job/relay_backfill/instance/<key>", async () => {
  const gateway = startFakePushgateway();
  try {
    const metrics = new BackfillMetrics({ version: "0" });
    const feed = new BatchFeed();
    metrics.onBatch(
      feed.next([...results(5, "migrated", "acme"), ...results(2, "errors", "acme")]),
    );
    const logger = recordingLogger();
    metrics.onEnd(feed.summary());
    const ok = await pushMetrics({
      url: gateway.url,
      registry: metrics.registry,
      instance: "ai:backfill",
      logger,
    });
    assert.equal(ok, true);
    assert.equal(gateway.requests.length, 1);
    const push = gateway.requests[0]!;
    assert.equal(push.method, "PUT");
    assert.equal(push.path, "/metrics/job/relay_backfill/instance/ai%3Abackfill");
    assert.equal(push.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    assert.equal(push.headers.get("authorization"), null);
    assert.equal(push.body, await metrics.registry.metrics());
    assert.equal(sumOf(push.body, "relay_backfill_migrated_total", { workspace_id: "acme" }), 5);
    assert.equal(sumOf(push.body, "relay_backfill_errors_total"), 2);
    assert.deepEqual(logger.entries.map((e) => e.event), ["push_done"]);
  } finally {
    await gateway.close();
  }
});

Deno.test("pushgateway: credentials go to Basic auth and never into logs", async () => {
  const gateway = startFakePushgateway(() => new Response("nope", { status: 503 }));
  try {
    const logger = recordingLogger();
    const url = `http://pusher:s3cr%40et@127.0.0.1:${gateway.port}/prefix/`;
    const ok = await pushMetrics({
      url,
      registry: new BackfillMetrics({ version: "0" }).registry,
      instance: "ai:backfill",
      logger,
    });
    assert.equal(ok, false);
    const push = gateway.requests[0]!;
    assert.equal(push.headers.get("authorization"), `Basic ${btoa("pusher:s3cr@et")}`);
    // A path prefix (reverse proxy) is kept.
    assert.equal(push.path, "/prefix/metrics/job/relay_backfill/instance/ai%3Abackfill");
    assert.equal(logger.entries.length, 1);
    assert.equal(logger.entries[0]!.level, "warn");
    assert.equal(logger.entries[0]!.event, "push_failed");
    assert.match(logger.entries[0]!.text, /"status":503/);
    assert.ok(!logger.entries[0]!.text.includes("s3cr"), logger.entries[0]!.text);
  } finally {
    await gateway.close();
  }
});

Deno.test("pushgateway: unreachable gateway and bad URLs are logged, never thrown", async () => {
  const logger = recordingLogger();
  const registry = new BackfillMetrics({ version: "0" }).registry;
  const port = freePort();
  assert.equal(
    await pushMetrics({
      url: `http://u:hunter2@127.0.0.1:${port}`,
      registry,
      instance: "x",
      logger,
    }),
    false,
  );
  assert.equal(await pushMetrics({ url: "not a url", registry, instance: "x", logger }), false);
  assert.equal(
    await pushMetrics({ url: "ftp://u:hunter2@host", registry, instance: "x", logger }),
    false,
  );
  assert.deepEqual(logger.entries.map((e) => [e.level, e.event]), [
    ["warn", "push_failed"],
    ["warn", "push_failed"],
    ["warn", "push_failed"],
  ]);
  for (const entry of logger.entries) assert.ok(!entry.text.includes("hunter2"), entry.text);
});

Deno.test("pushgateway: a gateway that does not answer times out", async () => {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const gateway = startFakePushgateway(async () => {
    await released;
    return new Response("late");
  });
  try {
    const logger = recordingLogger();
    const started = performance.now();
    const ok = await pushMetrics({
      url: gateway.url,
      registry: new BackfillMetrics({ version: "0" }).registry,
      instance: "ai:backfill",
      timeoutMs: 100,
      logger,
    });
    assert.equal(ok, false);
    assert.ok(performance.now() - started < 5000);
    assert.match(logger.entries[0]!.text, /timed out after 100 ms/);
  } finally {
    release();
    await gateway.close();
  }
});

Deno.test("pushgateway: grouping key encoding follows the Pushgateway rules", () => {
  assert.equal(groupingSegment("instance", "ai:backfill"), "instance/ai%3Abackfill");
  assert.equal(groupingSegment("instance", "a b"), "instance/a%20b");
  // "/" would split the path: base64url with the @base64 suffix.
  assert.equal(groupingSegment("instance", "team/ai:bf"), "instance@base64/dGVhbS9haTpiZg==");
  assert.equal(atob("dGVhbS9haTpiZg=="), "team/ai:bf");
  assert.equal(groupingSegment("instance", "??>/"), "instance@base64/Pz8-Lw==");
  // An empty value needs a single "=".
  assert.equal(groupingSegment("instance", ""), "instance@base64/=");
  assert.equal(
    pushUrl("https://u:p@gw.example:9091/?x=1#y", "a/b").href,
    "https://gw.example:9091/metrics/job/relay_backfill/instance@base64/YS9i",
  );
});
