import assert from "node:assert/strict";
import {
  LatencyProbe,
  percentile,
  type ProbeReading,
  ProbeStartError,
} from "../src/control/probe.ts";
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
      // onRedisReply comes with each snapshot that saw replies (about 20 a second, none mid-stall).
      assert.ok(replies > 20, `${replies} reply callbacks`);
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

Deno.test("probe: a busy event loop in the backfill does not read as Redis latency", async () => {
  await withRedis(async (_server, client) => {
    const probe = await LatencyProbe.start(client, { node: "n1", baselineSamples: 10 });
    try {
      // The backfill's own loop blocked for 300 ms at a time (what a busy client does to timers):
      // a probe timed on this loop would read +300 ms. The worker keeps its own schedule and clock.
      let worst = 0;
      for (let round = 0; round < 5; round++) {
        const until = performance.now() + 300;
        while (performance.now() < until) { /* busy, like a client parsing replies */ }
        await sleep(60);
        worst = Math.max(worst, probe.snapshot().addedMs);
      }
      assert.ok(worst < 100, `added ${worst.toFixed(1)} ms while only this loop was busy`);
      assert.ok(probe.snapshot().samples >= 5, "the worker kept probing");
    } finally {
      await probe.close();
    }
  });
});

Deno.test("probe: authenticates like the run; a refused password fails the start without the password", async () => {
  const password = "pr0be-s3cret";
  await withRedis(async (_server, client) => {
    const down: string[] = [];
    const probe = await LatencyProbe.start(client, {
      node: "n1",
      baselineSamples: 10,
      onRedisDown: ({ reason }) => down.push(reason),
    });
    try {
      await sleep(200);
      assert.deepEqual(down, [], "no NOAUTH: the probe sent AUTH first");
      assert.ok(probe.snapshot().samples >= 5, `samples ${probe.snapshot().samples}`);
    } finally {
      await probe.close();
    }
    const wrong = client.duplicate({ lazyConnect: true, password: "not-it" });
    await assert.rejects(LatencyProbe.start(wrong, { node: "n1", baselineSamples: 5 }), (error) => {
      assert.ok(error instanceof ProbeStartError, String(error));
      assert.equal(error.code, "WRONGPASS");
      assert.ok(!error.message.includes("not-it"));
      return true;
    });
    wrong.disconnect();
  }, { password });
});

/**
 * Runs the probe in its own process on core 1 for 6 s, with a busy process on that core from the
 * 1st to the 4th second, and returns the median rise of its p99 and of its added-latency reading
 * over the middle two busy seconds.
 */
async function probeBesideBusyCore(port: number): Promise<{ rise: number; added: number }> {
  const reader = new Deno.Command("taskset", {
    args: ["-c", "1", Deno.execPath(), "run", "-A", "tests/support/probe_reader.ts"]
      .concat(["--port", String(port), "--seconds", "6"]),
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = reader.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const snapshots: { p99Ms: number; baselineMs: number; addedMs: number }[] = [];
  let buffered = "";
  let hog: Deno.ChildProcess | undefined;
  try {
    for (;;) {
      const { value, done } = await lines.read();
      if (done) break;
      buffered += value;
      const parts = buffered.split("\n");
      buffered = parts.pop()!;
      for (const line of parts) {
        const row = JSON.parse(line);
        if (!row.ready) snapshots.push(row);
        else {
          await sleep(1000);
          hog = new Deno.Command("taskset", {
            args: ["-c", "1", "timeout", "3", "sh", "-c", "while :; do :; done"],
          }).spawn();
        }
      }
    }
  } finally {
    try {
      hog?.kill("SIGKILL");
    } catch { /* already gone */ }
    await hog?.status;
    await reader.status;
  }
  // One reading per 100 ms from the probe's start: 15–35 are the middle of the busy seconds. The
  // rise is the p99 above the probe's own baseline: what it would read without the discount.
  const busy = snapshots.slice(15, 35);
  const median = (values: number[]) => values.sort((a, b) => a - b)[values.length >> 1]!;
  return {
    rise: median(busy.map((s) => s.p99Ms - s.baselineMs)),
    added: median(busy.map((s) => s.addedMs)),
  };
}

Deno.test("probe: a busy client core (another process on it) is not read as Redis latency", async () => {
  await withRedis(async (server, client) => {
    // Redis on core 0; the probe and a busy process share core 1, so the probe's thread waits for
    // the CPU before it reads each reply, as on a busy client host.
    const redisPid = (await client.info("server")).match(/process_id:(\d+)/)![1]!;
    await new Deno.Command("taskset", { args: ["-p", "-c", "0", redisPid], stdout: "null" })
      .output();
    // Beside other tests the busy process sometimes does not delay the probe at all (the
    // scheduler put the wait elsewhere), and beside heavy load the discount takes off only part
    // of the wait: up to three attempts, one of which must show it. Without the discount all of
    // the rise reads as Redis latency in every attempt.
    const attempts: { rise: number; added: number }[] = [];
    for (let attempt = 0; attempt < 3; attempt++) {
      const { rise, added } = await probeBesideBusyCore(server.port);
      attempts.push({ rise, added });
      if (rise >= 0.5 && added <= rise * 0.8) return;
    }
    assert.fail(`read as Redis latency (added of rise, ms): ${JSON.stringify(attempts)}`);
  });
});
