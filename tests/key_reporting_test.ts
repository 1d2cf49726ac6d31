/**
 * What the engine reports per key, end to end through the real CLI, a real redis-server (and the
 * 3-master cluster) and a real Pushgateway: an error keeps its job's workspace label and logs
 * Redis's own words; every invalid key is logged (escaped) with its reason and counted by reason.
 */
import assert from "node:assert/strict";
import { escapeForLog } from "../src/telemetry/redact.ts";
import { runCli, spawnCli, waitFor } from "./support/cli.ts";
import { startCluster } from "./support/cluster.ts";
import { startPushgateway, toolsAvailable } from "./support/prometheus.ts";
import { startRedis } from "./support/redis_server.ts";
import { makeJobs, seedOld } from "./support/seed.ts";
import { sumOf } from "./support/telemetry.ts";
import type { Cluster, Redis } from "../src/redis/ioredis.ts";

const ignore = !toolsAvailable("prometheus-pushgateway");

/** A key with a newline and a control byte in its name: the log must show it escaped. */
const EVIL_KEY = "ai:jobs:evil\nline\x07";

/** One old key of each invalid kind; returns the expected reason per key name. */
async function seedInvalid(client: Redis | Cluster): Promise<Map<string, string>> {
  await client.set(EVIL_KEY, "a string, not a hash");
  await client.hset("ai:jobs:no-ws", { status: "queued" });
  await client.hset("ai:jobs:bad-ws", { workspace_id: "bad ws!", status: "queued" });
  await client.hset("ai:jobs:", { workspace_id: "ws-a", status: "queued" });
  return new Map([
    [EVIL_KEY, "not_hash"],
    ["ai:jobs:no-ws", "no_workspace_id"],
    ["ai:jobs:bad-ws", "invalid_workspace_id"],
    ["ai:jobs:", "empty_job_id"],
  ]);
}

/** The JSON log lines of `event`. */
function logLines(stderr: string, event: string): Record<string, unknown>[] {
  return stderr.split("\n").filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((line) => line.event === event);
}

/** Runs the CLI against `url`, pushing to `pushgateway`; returns the CLI result. */
function run(url: string, pushgateway: string, extra: string[] = []) {
  return runCli([
    "--execute",
    "--rps",
    "0",
    "--log-format",
    "json",
    "--pushgateway",
    pushgateway,
    "--progress-key",
    "bf:report",
    "--redis-url",
    url,
    ...extra,
  ]);
}

/** Each invalid key logged once with its escaped name and reason; the metric by reason. */
function assertInvalidReported(stderr: string, pushed: string, expected: Map<string, string>) {
  const lines = logLines(stderr, "invalid_key");
  const logged = new Map(lines.map((line) => [line.key, line.reason]));
  for (const [key, reason] of expected) {
    assert.equal(logged.get(escapeForLog(key, 200)), reason, `${JSON.stringify(key)} logged`);
  }
  assert.ok(!stderr.includes("evil\nline"), "the raw key name never reaches the log");
  for (const reason of new Set(expected.values())) {
    assert.equal(
      sumOf(pushed, "relay_backfill_invalid_total", { reason }),
      [...expected.values()].filter((r) => r === reason).length,
      `invalid_total{reason="${reason}"}`,
    );
  }
  assert.equal(sumOf(pushed, "relay_backfill_invalid_total", { reason: "unknown" }), 0);
  assert.equal(
    sumOf(pushed, "relay_backfill_skipped_total", { reason: "invalid" }),
    expected.size,
    "the seed's series still counts them",
  );
}

for (const pattern of [undefined, "^[a-z][a-z-]*$"]) {
  const how = pattern === undefined ? "default rule, in the script" : "custom pattern, probed";
  Deno.test({
    name: `invalid keys are logged escaped with their reason and counted by reason (${how})`,
    ignore,
    async fn() {
      const server = await startRedis();
      const client = server.client();
      const pushgateway = await startPushgateway();
      try {
        await seedOld(client, makeJobs(30));
        const expected = await seedInvalid(client);
        const extra = pattern === undefined ? [] : ["--workspace-pattern", pattern];
        const result = await run(server.url, pushgateway.url, extra);
        assert.equal(result.code, 0, result.stderr);
        assertInvalidReported(result.stderr, await pushgateway.scrape(), expected);
      } finally {
        client.disconnect();
        await pushgateway.stop();
        await server.stop();
      }
    },
  });
}

Deno.test({
  name: "invalid keys on a cluster are logged and counted by reason",
  ignore,
  async fn() {
    const cluster = await startCluster();
    const client = cluster.client();
    const pushgateway = await startPushgateway();
    try {
      const expected = await seedInvalid(client);
      for (const job of makeJobs(30)) {
        await client.hset(`ai:jobs:${job.id}`, { workspace_id: job.workspace, ...job.fields });
      }
      const result = await run(cluster.url, pushgateway.url);
      assert.equal(result.code, 0, result.stderr);
      assertInvalidReported(result.stderr, await pushgateway.scrape(), expected);
    } finally {
      client.disconnect();
      await pushgateway.stop();
      await cluster.stop();
    }
  },
});

Deno.test({
  name: "COPY revoked mid-run: errors keep the job's workspace and the log has Redis's words",
  ignore,
  async fn() {
    const server = await startRedis();
    const client = server.client();
    const pushgateway = await startPushgateway();
    try {
      const jobs = makeJobs(600, ["ws-a", "ws-b"]);
      await seedOld(client, jobs);
      await client.call("ACL", "SETUSER", "nocopy", "on", ">s3cret", "~*", "&*", "+@all");
      const url = `redis://nocopy:s3cret@127.0.0.1:${server.port}`;
      // The preflight refuses a user without COPY before anything is written, so the permission
      // goes away only once the run holds its lock: the copies then fail with Redis's own words.
      const running = spawnCli([
        "--execute",
        "--rps",
        "300",
        "--batch",
        "100",
        "--log-format",
        "json",
        "--pushgateway",
        pushgateway.url,
        "--progress-key",
        "bf:report",
        "--redis-url",
        url,
      ]);
      await waitFor("the run's lock", async () => (await client.exists("bf:report:lock")) === 1);
      await client.call("ACL", "SETUSER", "nocopy", "-copy");
      const result = await running.done;
      // The same lasting error across a whole batch stops the run (exit 4, checkpoint kept).
      assert.equal(result.code, 4, result.stderr);
      const errors = logLines(result.stderr, "key_error");
      assert.ok(errors.length > 0, result.stderr);
      for (const line of errors) {
        assert.match(String(line.message), /can't run this command/, String(line.message));
        assert.ok(["ws-a", "ws-b"].includes(String(line.workspace)), String(line.workspace));
      }
      const pushed = await pushgateway.scrape();
      const labelled = sumOf(pushed, "relay_backfill_errors_total", { workspace_id: "ws-a" }) +
        sumOf(pushed, "relay_backfill_errors_total", { workspace_id: "ws-b" });
      assert.equal(labelled, errors.length, "every error under its job's workspace");
      assert.equal(sumOf(pushed, "relay_backfill_errors_total", { workspace_id: "_invalid" }), 0);
      assert.ok(!result.stderr.includes("s3cret"), "the password never reaches the log");
      assert.ok(!result.stderr.includes("queued"), "no field value reaches the log");
    } finally {
      client.disconnect();
      await pushgateway.stop();
      await server.stop();
    }
  },
});
