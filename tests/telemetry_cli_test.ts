/**
 * Telemetry of a real run: /metrics scraped over HTTP while the CLI runs, the final push checked
 * against the summary, progress lines at the interval, TELEMETRY_ENABLED=false.
 */
import assert from "node:assert/strict";
import { runCli, spawnCli, waitFor } from "./support/cli.ts";
import { startRedis } from "./support/redis_server.ts";
import { makeJobs, seedOld, withSeeded, writeCounter } from "./support/seed.ts";
import {
  freePort,
  portIsClosed,
  startFakePushgateway,
  sumOf,
  typeOf,
} from "./support/telemetry.ts";

async function scrape(port: number): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(response.status, 200);
  return await response.text();
}

Deno.test("a run serves /metrics that move, pushes the final values, and prints progress at the interval", async () => {
  const server = await startRedis();
  const client = server.client();
  const pushgateway = startFakePushgateway();
  try {
    await seedOld(client, makeJobs(3000));
    await client.set("ai:jobs:broken", "x");
    const port = freePort();
    const run = spawnCli([
      "--execute",
      "--rps",
      "1000",
      "--batch",
      "100",
      "--json",
      "--metrics-port",
      String(port),
      "--pushgateway",
      pushgateway.url,
      "--progress-interval",
      "0.5",
      "--progress-key",
      "bf:test",
      "--metrics-linger",
      "0",
      "--redis-url",
      server.url,
    ]);
    await waitFor("the metrics server", async () => !(await portIsClosed(port)));
    await waitFor(
      "some migrated keys",
      async () => sumOf(await scrape(port), "relay_backfill_migrated_total") > 0,
    );
    const early = await scrape(port);
    await new Promise((resolve) => setTimeout(resolve, 800));
    const later = await scrape(port);
    assert.ok(
      sumOf(later, "relay_backfill_scanned_total") > sumOf(early, "relay_backfill_scanned_total"),
      `values move: ${sumOf(early, "relay_backfill_scanned_total")} -> ${
        sumOf(later, "relay_backfill_scanned_total")
      }`,
    );
    assert.equal(typeOf(later, "relay_backfill_migrated_total"), "counter");
    assert.equal(typeOf(later, "relay_backfill_duration_seconds"), "histogram");
    assert.match(later, /relay_backfill_migrated_total\{workspace_id="ws-a"\} \d+/);
    const health = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(health.status, 200);
    await health.body?.cancel();

    const result = await run.done;
    assert.equal(result.code, 0, result.stderr);
    const summary = JSON.parse(result.stdout);
    assert.equal(result.stdout.trim().split("\n").length, 1, "stdout is only the JSON summary");
    assert.ok(await portIsClosed(port), "server closed at the end");
    const progress = result.stderr.split("\n").filter((line) => line.startsWith("[execute]"));
    assert.ok(progress.length >= 4, `progress lines: ${progress.length}`);

    // A push at the start and one at the end (the 30 s interval is longer than this run).
    assert.equal(pushgateway.requests.length, 2);
    const push = pushgateway.requests[1]!;
    assert.equal(push.path, "/metrics/job/relay_backfill/instance/bf%3Atest/mode/execute");
    assert.equal(sumOf(push.body, "relay_backfill_scanned_total"), summary.scanned);
    assert.equal(sumOf(push.body, "relay_backfill_migrated_total"), summary.migrated);
    assert.equal(sumOf(push.body, "relay_backfill_skipped_total", { reason: "invalid" }), 1);
    assert.equal(sumOf(push.body, "relay_backfill_skipped_total", { workspace_id: "_invalid" }), 1);
  } finally {
    client.disconnect();
    await pushgateway.close();
    await server.stop();
  }
});

Deno.test("TELEMETRY_ENABLED=false starts no server and pushes nothing; the run is unchanged", async () => {
  const server = await startRedis();
  const client = server.client();
  const pushgateway = startFakePushgateway();
  try {
    await seedOld(client, makeJobs(1500));
    const port = freePort();
    const run = spawnCli(
      [
        "--execute",
        "--rps",
        "1000",
        "--json",
        "--metrics-port",
        String(port),
        "--pushgateway",
        pushgateway.url,
        "--redis-url",
        server.url,
      ],
      { TELEMETRY_ENABLED: "false" },
    );
    await waitFor("a checkpoint", async () => (await client.exists("ai:backfill:cursor")) === 1);
    assert.ok(await portIsClosed(port), "no metrics server");
    const result = await run.done;
    assert.equal(result.code, 0);
    assert.equal(JSON.parse(result.stdout).migrated, 1500);
    assert.equal(pushgateway.requests.length, 0);
  } finally {
    client.disconnect();
    await pushgateway.close();
    await server.stop();
  }
});

Deno.test("a --metrics-port already in use exits 2 before anything is written", async () => {
  await withSeeded(100, async (server, client) => {
    const taken = Deno.listen({ hostname: "0.0.0.0", port: 0 });
    try {
      const before = await writeCounter(client);
      const result = await runCli([
        "--execute",
        "--metrics-port",
        String(taken.addr.port),
        "--redis-url",
        server.url,
      ]);
      assert.equal(result.code, 2, result.stderr);
      assert.match(
        result.stderr,
        new RegExp(`error: --metrics-port ${taken.addr.port} cannot be used`),
      );
      assert.equal(await writeCounter(client), before);
    } finally {
      taken.close();
    }
  });
});
