/**
 * `/healthz` and `relay_backfill_redis_up` tell the truth about a frozen Redis, end to end: a real
 * run with `--metrics-port`, redis-server stopped with SIGSTOP for longer than `--health-timeout`,
 * then continued.
 */
import assert from "node:assert/strict";
import { spawnCli, waitFor } from "./support/cli.ts";
import { startRedis } from "./support/redis_server.ts";
import { makeJobs, seedOld } from "./support/seed.ts";
import { freePort, parseSamples, portIsClosed, sumOf } from "./support/telemetry.ts";

async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: response.status, body: await response.text() };
}

/** `relay_backfill_redis_up` of the one node, or undefined before it has a sample. */
async function redisUp(port: number): Promise<number | undefined> {
  const samples = parseSamples((await get(port, "/metrics")).body)
    .filter((s) => s.name === "relay_backfill_redis_up");
  return samples.length === 1 ? samples[0]!.value : undefined;
}

Deno.test("a SIGSTOPped Redis makes /healthz 503 with one line and redis_up 0; SIGCONT brings 200 and 1", async () => {
  const server = await startRedis();
  const client = server.client();
  let stopped = false;
  try {
    await seedOld(client, makeJobs(40_000));
    const port = freePort();
    const run = spawnCli([
      "--execute",
      "--rps",
      "4000",
      "--batch",
      "200",
      "--health-timeout",
      "2",
      "--metrics-port",
      String(port),
      "--metrics-host",
      "127.0.0.1",
      "--metrics-linger",
      "0",
      "--quiet",
      "--redis-url",
      server.url,
    ]);
    try {
      await waitFor("the metrics server", async () => !(await portIsClosed(port)));
      await waitFor("some migrated keys", async () => {
        const text = (await get(port, "/metrics")).body;
        return sumOf(text, "relay_backfill_migrated_total") > 0;
      });
      assert.equal(await redisUp(port), 1);
      assert.equal((await get(port, "/healthz")).status, 200);

      server.signal("SIGSTOP");
      stopped = true;
      const frozenAt = Date.now();
      let unhealthy = { status: 0, body: "" };
      await waitFor("/healthz to answer 503", async () => {
        unhealthy = await get(port, "/healthz");
        return unhealthy.status === 503;
      }, 30_000);
      assert.ok(Date.now() - frozenAt >= 1_500, "not before the silence threshold");
      assert.equal(unhealthy.body.trim().split("\n").length, 1, unhealthy.body);
      assert.match(unhealthy.body, /Redis at 127\.0\.0\.1:\d+ has not answered for \d+ s/);
      assert.equal(await redisUp(port), 0);

      server.signal("SIGCONT");
      stopped = false;
      await waitFor("/healthz to answer 200 again", async () => {
        return (await get(port, "/healthz")).status === 200;
      }, 30_000);
      await waitFor("redis_up back to 1", async () => (await redisUp(port)) === 1, 30_000);
    } finally {
      if (stopped) server.signal("SIGCONT");
      const result = await run.done;
      assert.equal(result.code, 0, result.stderr);
    }
  } finally {
    client.disconnect();
    await server.stop();
  }
});
