import assert from "node:assert/strict";
import type { Logger, LogLevel } from "../src/run_events.ts";
import { RunHealth } from "../src/telemetry/health.ts";
import { InvalidKeyLog } from "../src/telemetry/invalid_keys.ts";
import { BackfillMetrics } from "../src/telemetry/metrics.ts";
import { BatchFeed, FakeClock, results, sumOf } from "./support/telemetry.ts";

const START = { mode: "execute", rps: 100, estimatedTotal: 10, progressKey: "k" } as const;
const NODE = "127.0.0.1:6379";

function health(clock: FakeClock, expectedBatchSeconds = 0) {
  const h = new RunHealth({ clock, expectedBatchSeconds });
  h.onStart(START);
  return h;
}

Deno.test("health: ok while batches finish, 503 with a reason once they stop", () => {
  const clock = new FakeClock();
  const h = new RunHealth({ clock });
  assert.deepEqual(h.status(), { healthy: true, reason: "starting" });
  h.onStart(START);
  const feed = new BatchFeed();
  clock.advance(50_000);
  h.onBatch(feed.next(results(5, "migrated", "a")));
  assert.deepEqual(h.status(), { healthy: true, reason: "progressing" });
  clock.advance(60_000);
  assert.equal(h.status().healthy, true, "60 s is the floor");
  clock.advance(1_000);
  assert.deepEqual(h.status(), {
    healthy: false,
    reason: "no batch finished for 61 s (expected within 60 s)",
  });
  h.onBatch(feed.next(results(1, "migrated", "a")));
  assert.equal(h.status().healthy, true);
});

Deno.test("health: the stall limit follows the expected and the slowest batch time", () => {
  const clock = new FakeClock();
  const h = health(clock, 50); // --batch 500 at --rps 10
  clock.advance(149_000);
  assert.equal(h.status().healthy, true);
  clock.advance(2_000);
  assert.match(h.status().reason, /expected within 150 s/);
  const h2 = health(clock);
  h2.onBatch(new BatchFeed().next(results(1, "migrated", "a"), 40));
  clock.advance(119_000);
  assert.equal(h2.status().healthy, true, "3 × the slowest batch (40 s)");
});

Deno.test("health: throttled or paused on purpose is healthy; Redis silence is not", () => {
  const clock = new FakeClock();
  const h = health(clock);
  h.onThrottle({ reason: "memory", active: true });
  h.onThrottle({ reason: "redis_busy", active: true });
  clock.advance(600_000);
  assert.deepEqual(h.status(), { healthy: true, reason: "throttled (memory, redis_busy)" });
  h.onThrottle({ reason: "memory", active: false });
  h.onThrottle({ reason: "redis_busy", active: false });
  assert.equal(h.status().healthy, false);

  // A node the engine reports replies for is judged by its last reply, throttled or not.
  const probed = health(clock);
  probed.onThrottle({ reason: "paused", active: true });
  probed.onRedisReply({ node: NODE });
  clock.advance(30_000);
  assert.equal(probed.status().healthy, true);
  clock.advance(1_000);
  assert.deepEqual(probed.status(), {
    healthy: false,
    reason: `Redis at ${NODE} has not answered for 31 s`,
  });
  probed.onRedisReply({ node: NODE });
  assert.equal(probed.status().healthy, true);
});

Deno.test("health: a node reported down is unhealthy once silent for N s, healthy when back", () => {
  const clock = new FakeClock();
  const h = health(clock);
  h.onBatch(new BatchFeed().next(results(1, "migrated", "a")));
  clock.advance(5_000);
  h.onRedisDown({ node: NODE, reason: "ECONNREFUSED" });
  assert.equal(h.status().healthy, true, "not yet N s");
  clock.advance(26_000);
  assert.deepEqual(h.status(), {
    healthy: false,
    reason: `Redis at ${NODE} has not answered for 31 s (ECONNREFUSED)`,
  });
  h.onRedisReply({ node: NODE });
  assert.equal(h.status().healthy, true);
  h.onEnd(new BatchFeed().summary(false));
  clock.advance(3_600_000);
  assert.deepEqual(h.status(), { healthy: true, reason: "run stopped" });
});

Deno.test("control metrics: hooks set the gauges; throttles start at 0 and end at 0", async () => {
  const metrics = new BackfillMetrics({ version: "0" });
  const before = await metrics.registry.metrics();
  for (const reason of ["redis_busy", "replica_lag", "memory", "paused"]) {
    assert.match(before, new RegExp(`^relay_backfill_throttled\\{reason="${reason}"\\} 0$`, "m"));
  }
  for (const reason of ["not_hash", "no_workspace_id", "invalid_workspace_id", "empty_job_id"]) {
    assert.match(
      before,
      new RegExp(`^relay_backfill_invalid_total\\{reason="${reason}"\\} 0$`, "m"),
    );
  }
  for (const family of ["scanned", "migrated", "repaired", "errors", "filtered"]) {
    assert.match(
      before,
      new RegExp(`^relay_backfill_${family}_total\\{workspace_id="_invalid"\\} 0$`, "m"),
    );
  }
  metrics.onStart(START);
  metrics.onRateLimit({ node: NODE, rps: 40 });
  metrics.onThrottle({ reason: "redis_busy", active: true });
  metrics.onReplicaLag({ node: "127.0.0.1:6380", bytes: 2048 });
  metrics.onRedisDown({ node: NODE, reason: "ETIMEDOUT" });
  let text = await metrics.registry.metrics();
  assert.equal(sumOf(text, "relay_backfill_rate_limit", { node: "_all" }), 100);
  assert.equal(sumOf(text, "relay_backfill_rate_limit", { node: NODE }), 40);
  assert.equal(sumOf(text, "relay_backfill_throttled", { reason: "redis_busy" }), 1);
  assert.doesNotMatch(text, /relay_backfill_probe_/, "no latency probe any more");
  assert.equal(sumOf(text, "relay_backfill_replica_lag_bytes"), 2048);
  assert.equal(sumOf(text, "relay_backfill_redis_up", { node: NODE }), 0);
  assert.equal(sumOf(text, "relay_backfill_running"), 1);
  metrics.onRedisReply({ node: NODE });
  metrics.onEnd(new BatchFeed().summary(true));
  text = await metrics.registry.metrics();
  assert.equal(sumOf(text, "relay_backfill_redis_up", { node: NODE }), 1);
  assert.equal(sumOf(text, "relay_backfill_throttled"), 0);
  assert.equal(sumOf(text, "relay_backfill_running"), 0);
  assert.ok(sumOf(text, "relay_backfill_end_timestamp_seconds") > 0);
});

Deno.test("metrics: a resumed run starts from the carried totals and keeps counting", async () => {
  const metrics = new BackfillMetrics({ version: "0" });
  metrics.onStart({
    ...START,
    carried: {
      byOutcome: { migrated: { acme: 4835 }, skipped_invalid: { "": 3 } },
      invalidByReason: { not_hash: 2, no_workspace_id: 1 },
    },
  });
  const first = await metrics.registry.metrics();
  assert.equal(sumOf(first, "relay_backfill_migrated_total", { workspace_id: "acme" }), 4835);
  assert.equal(sumOf(first, "relay_backfill_scanned_total"), 4838);
  assert.equal(sumOf(first, "relay_backfill_invalid_total", { reason: "not_hash" }), 2);
  // acme is already exposed: its next keys count at the next read.
  metrics.onBatch(new BatchFeed().next([
    ...results(10, "migrated", "acme"),
    { outcome: "skipped_invalid", invalidReason: "empty_job_id" },
  ]));
  const next = await metrics.registry.metrics();
  assert.equal(sumOf(next, "relay_backfill_migrated_total"), 4845);
  assert.equal(sumOf(next, "relay_backfill_skipped_total", { reason: "invalid" }), 4);
  assert.equal(sumOf(next, "relay_backfill_invalid_total", { reason: "empty_job_id" }), 1);
});

interface Logged {
  level: LogLevel;
  event: string;
  message: string;
  fields?: Record<string, unknown>;
}

Deno.test("invalid keys: the first 100 are logged escaped with their reason, then a count", () => {
  const entries: Logged[] = [];
  const logger: Logger = {
    log: (level, event, message, fields) => entries.push({ level, event, message, fields }),
  };
  const log = new InvalidKeyLog({ logger });
  const feed = new BatchFeed();
  log.onBatch(feed.next([
    { outcome: "skipped_invalid", invalidReason: "not_hash", key: "ai:jobs:evil\nline" },
    {
      outcome: "skipped_invalid",
      invalidReason: "no_workspace_id",
      key: new Uint8Array([0x61, 0xff]),
    },
    { outcome: "migrated", workspace: "acme" },
  ]));
  const many = Array.from({ length: 150 }, (_, i) => ({
    outcome: "skipped_invalid" as const,
    invalidReason: "invalid_workspace_id" as const,
    key: `ai:jobs:${i}`,
  }));
  log.onBatch(feed.next([...many, { outcome: "skipped_invalid" }]));
  log.onEnd();
  const perKey = entries.filter((e) => e.event === "invalid_key" && e.fields !== undefined);
  assert.equal(perKey.length, 100);
  assert.ok(entries.every((e) => e.level === "warn"));
  assert.equal(perKey[0]!.fields!.key, "ai:jobs:evil\\x0aline");
  assert.equal(perKey[0]!.fields!.reason, "not_hash");
  assert.equal(perKey[1]!.fields!.key, "a\\xff");
  const last = entries.at(-1)!;
  assert.equal(last.event, "invalid_keys");
  assert.deepEqual(last.fields, {
    total: 153,
    invalid_workspace_id: 150,
    no_workspace_id: 1,
    not_hash: 1,
    unknown: 1,
  });
});

Deno.test("metrics: the throttle's run-wide rate reported before the start is not overwritten by --rps", async () => {
  const metrics = new BackfillMetrics({ version: "0" });
  // One master, --rps 0 --max-latency 0.5: the throttle starts at 1000/s before the engine starts.
  metrics.onRateLimit({ node: "_all", rps: 1000 });
  metrics.onStart({ ...START, rps: 0 });
  let text = await metrics.registry.metrics();
  assert.equal(sumOf(text, "relay_backfill_rate_limit", { node: "_all" }), 1000);
  metrics.onRateLimit({ node: "_all", rps: 500 });
  text = await metrics.registry.metrics();
  assert.equal(sumOf(text, "relay_backfill_rate_limit", { node: "_all" }), 500);
});
