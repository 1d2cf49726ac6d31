import assert from "node:assert/strict";
import { LatencyProbe, percentile, type ProbeReading } from "../src/control/probe.ts";
import { withRedis } from "./support/redis_server.ts";

const DEBUG = { args: ["--enable-debug-command", "yes"] };
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("percentile is nearest-rank", () => {
  assert.equal(percentile([], 0.99), 0);
  assert.equal(percentile([3, 1, 2], 0.5), 2);
  assert.equal(percentile(Array.from({ length: 200 }, (_, i) => i + 1), 0.99), 198);
});

Deno.test("probe: a DEBUG SLEEP shows as added latency while it lasts, open-loop, and clears after", async () => {
  await withRedis(async (_server, client) => {
    const readings: ProbeReading[] = [];
    let replies = 0;
    const probe = await LatencyProbe.start(client, {
      node: "n1",
      baselineSamples: 20,
      onProbe: (reading) => readings.push(reading),
      onRedisReply: () => replies++,
    });
    try {
      assert.ok(probe.baselineMs > 0 && probe.baselineMs < 200, `baseline ${probe.baselineMs}`);
      const idle = probe.snapshot();
      assert.ok(idle.samples >= 5, `samples in the window: ${idle.samples}`);
      const sleeper = client.duplicate();
      const stall = sleeper.call("DEBUG", "SLEEP", "1").finally(() => sleeper.disconnect());
      await sleep(600);
      // Mid-stall: nothing has answered, yet the stall is visible (in-flight PINGs count by age),
      // and PINGs kept going out on schedule (open-loop).
      const during = probe.snapshot();
      assert.ok(during.addedMs >= 300, `added ${during.addedMs} ms during the stall`);
      assert.ok(during.inFlight >= 5, `${during.inFlight} PINGs in flight during the stall`);
      await stall;
      await sleep(200);
      const after = probe.snapshot();
      assert.ok(after.addedMs >= 500, `the stall's samples are in the window: ${after.addedMs}`);
      assert.equal(after.inFlight < 3, true);
      // A window (1 s) later the stall has left the p99.
      await sleep(1500);
      const recovered = probe.snapshot();
      assert.ok(recovered.addedMs < 150, `recovered: ${recovered.addedMs} ms`);
      assert.ok(readings.length > 0 && readings.every((r) => r.node === "n1"));
      assert.ok(readings.some((r) => r.p99Seconds >= 0.5), "the metric saw the stall");
      assert.ok(replies > 40);
    } finally {
      await probe.close();
    }
  }, DEBUG);
});

Deno.test("probe: CLIENT PAUSE shows as latency on the probe's own connection", async () => {
  await withRedis(async (_server, client) => {
    const probe = await LatencyProbe.start(client, { node: "n1", baselineSamples: 10 });
    try {
      await client.call("CLIENT", "PAUSE", "700", "ALL");
      await sleep(400);
      assert.ok(probe.snapshot().addedMs >= 200, `added ${probe.snapshot().addedMs}`);
      await sleep(2000);
      assert.ok(probe.snapshot().addedMs < 150, `recovered: ${probe.snapshot().addedMs}`);
    } finally {
      await probe.close();
    }
  });
});

Deno.test("probe: a server that goes away is reported once as down; abort closes the probe", async () => {
  await withRedis(async (server, client) => {
    const controller = new AbortController();
    const down: string[] = [];
    const probe = await LatencyProbe.start(client, {
      node: "n1",
      baselineSamples: 5,
      signal: controller.signal,
      onRedisDown: ({ node }) => down.push(node),
    });
    const before = (await client.client("LIST") as string).split("\n").filter(Boolean).length;
    assert.equal(before, 2, "the probe has its own connection");
    await server.kill();
    await sleep(500);
    assert.deepEqual(down, ["n1"]);
    controller.abort();
    await server.start();
    await sleep(500);
    assert.equal(probe.snapshot().inFlight, 0);
    const after = (await client.client("LIST") as string).split("\n").filter(Boolean).length;
    assert.equal(after, 1, "the aborted probe closed its connection and did not reconnect");
  }, DEBUG);
});
