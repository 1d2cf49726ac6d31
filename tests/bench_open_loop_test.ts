import assert from "node:assert/strict";
import { countReplies, openLoop, OpenLoopSchedule, percentiles } from "../bench/open_loop.ts";
import { withRedis } from "./support/redis_server.ts";

Deno.test("percentiles are nearest-rank", () => {
  const values = Array.from({ length: 1000 }, (_, i) => i + 1); // 1..1000
  const p = percentiles(values.toReversed());
  assert.deepEqual(p, { samples: 1000, p50Ms: 500, p99Ms: 990, p999Ms: 999, maxMs: 1000 });
  assert.equal(percentiles([7]).p99Ms, 7);
  assert.ok(Number.isNaN(percentiles([]).p50Ms));
});

Deno.test("requests fall due on the schedule, round-robin, with catch-up after a late wake-up", () => {
  const s = new OpenLoopSchedule(100, 1, 3);
  assert.deepEqual(s.take(99.9), []);
  assert.deepEqual(s.take(100), [[0, 0]]);
  // The client wakes 2.5 ms late: the two requests it missed go out at once.
  assert.deepEqual(s.take(102.5), [[1, 1], [2, 2]]);
  assert.equal(s.nextDue(), 103);
  assert.deepEqual(s.sendLags, [0, 1.5, 0.5]);
  s.reply(1, 102.7);
  assert.deepEqual(s.latencies.map((x) => +x.toFixed(3)), [1.7]); // from the scheduled 101
  assert.equal(s.outstanding(), 2);
  assert.equal(s.closeAt(110), 2);
  assert.deepEqual(s.latencies.map((x) => +x.toFixed(3)), [1.7, 10, 8]);
});

/**
 * A fake server answers 0.1 ms after a request is written, except that it stalls from t=500 to
 * t=550 ms: everything written meanwhile is answered at 550.1. The open-loop schedule counts the
 * stall in ~50 samples (p99 shows it); a closed loop, timing from its own send, records one slow
 * sample among fewer, and its p99 misses the stall entirely.
 */
Deno.test("a 50 ms stall shows in p99 (no coordinated omission)", () => {
  const serve = (sentAt: number) => (sentAt >= 500 && sentAt < 550 ? 550 : sentAt) + 0.1;
  const s = new OpenLoopSchedule(0, 1, 4);
  const replies: [number, number][] = [];
  for (let t = 0; t < 1000; t += 0.25) {
    for (const [, conn] of s.take(t)) replies.push([serve(t), conn]);
  }
  replies.sort((a, b) => a[0] - b[0]);
  for (const [at, conn] of replies) s.reply(conn, at);
  const open = percentiles(s.latencies);
  assert.equal(open.samples, 1000);
  assert.ok(open.p50Ms < 0.2, `p50 ${open.p50Ms}`);
  assert.ok(open.p99Ms > 35, `p99 ${open.p99Ms}`);
  assert.ok(Math.abs(open.maxMs - 50.1) < 1e-9, `max ${open.maxMs}`);

  const closed: number[] = [];
  for (let t = 0; t < 1000;) {
    const done = serve(t);
    closed.push(done - t);
    t = Math.max(done, t + 1);
  }
  const naive = percentiles(closed);
  assert.ok(naive.samples < 1000 && naive.p99Ms < 0.2, JSON.stringify(naive));
});

Deno.test("countReplies counts complete RESP replies and keeps a partial tail", () => {
  const text = "+OK\r\n$3\r\nabc\r\n$-1\r\n-ERR x\r\n:5\r\n$5\r\nab";
  const [replies, errors, used] = countReplies(new TextEncoder().encode(text));
  assert.deepEqual([replies, errors], [5, 1]);
  assert.equal(text.slice(used), "$5\r\nab");
});

Deno.test("against a real redis-server, DEBUG SLEEP pulses show in p99 and max", async () => {
  await withRedis(async (server, client) => {
    const stop = new AbortController();
    const run = openLoop({
      port: server.port,
      intervalMs: 1,
      connections: 4,
      durationMs: 1500,
      command: "get-set",
      signal: stop.signal,
    });
    for (let i = 0; i < 3; i++) {
      await new Promise((resolve) => setTimeout(resolve, 300));
      await client.call("DEBUG", "SLEEP", "0.05");
    }
    const stats = await run;
    assert.equal(stats.errors, 0);
    assert.ok(stats.samples >= 1000, `samples ${stats.samples}`);
    // ~150 of ~1500 requests wait up to 50 ms each.
    assert.ok(stats.p99Ms > 20, JSON.stringify(stats));
    assert.ok(stats.maxMs >= 45, JSON.stringify(stats));
  }, { args: ["--enable-debug-command", "yes"] });
});
