import assert from "node:assert/strict";
import type { PacingClock as Clock } from "../src/async/clock.ts";
import { SlidingWindowLimiter } from "../src/control/rate_limit.ts";

/** A manual clock: sleeping advances time instantly and records the sleep. */
function fakeClock(): Clock & { t: number; sleeps: number[] } {
  const clock = {
    t: 0,
    sleeps: [] as number[],
    now: () => clock.t,
    sleep(ms: number, signal?: AbortSignal) {
      signal?.throwIfAborted();
      clock.sleeps.push(ms);
      clock.t += ms;
      return Promise.resolve();
    },
  };
  return clock;
}

/** A clock that never moves: a sleep ends only when aborted, so a waiter stays put until woken. */
function stoppedClock(): Clock {
  return {
    now: () => 0,
    sleep: (_ms: number, signal?: AbortSignal) =>
      new Promise((_, reject) => {
        signal?.throwIfAborted();
        signal?.addEventListener("abort", () => reject(signal.reason), { once: true });
      }),
  };
}

Deno.test("no 1-second window ever holds more than rps permits", async () => {
  const clock = fakeClock();
  const limiter = new SlidingWindowLimiter(100, { clock });
  const grants: number[] = [];
  for (let i = 0; i < 1000; i++) {
    await limiter.acquire(7, undefined);
    for (let k = 0; k < 7; k++) grants.push(clock.t);
    clock.t += 1; // processing takes 1 ms
  }
  for (let i = 0; i < grants.length; i++) {
    const windowEnd = grants[i]! + 1000;
    let inWindow = 0;
    for (let j = i; j < grants.length && grants[j]! < windowEnd; j++) inWindow++;
    assert.ok(inWindow <= 100, `window at ${grants[i]} holds ${inWindow}`);
  }
  // A long run averages the configured rate: 7000 permits at 100/s take ~69-70 s.
  const rate = grants.length / ((grants.at(-1)! - grants[0]!) / 1000);
  assert.ok(Math.abs(rate - 100) / 100 < 0.05, `average ${rate}/s`);
});

Deno.test("grants are paced n/rps apart: no burst of a whole second's permits", async () => {
  const clock = fakeClock();
  const limiter = new SlidingWindowLimiter(10, { clock });
  assert.equal(await limiter.acquire(2), 0, "the first grant is immediate");
  const times = [clock.t];
  for (let i = 0; i < 5; i++) {
    await limiter.acquire(2);
    times.push(clock.t);
  }
  assert.deepEqual(times, [0, 200, 400, 600, 800, 1000]);
});

Deno.test("a caller slower than the rate is never held back", async () => {
  const clock = fakeClock();
  const limiter = new SlidingWindowLimiter(10, { clock });
  for (let i = 0; i < 5; i++) {
    assert.equal(await limiter.acquire(1), 0);
    clock.t += 150; // slower than one permit per 100 ms
  }
  assert.equal(clock.sleeps.length, 0);
});

Deno.test("a brief stall is caught up (no lost slots), a long one banks no burst", async () => {
  const clock = fakeClock();
  const limiter = new SlidingWindowLimiter(100, { clock });
  await limiter.acquire(10); // t=0, next slot at 100
  clock.t = 180; // stalled 80 ms past the slot
  await limiter.acquire(10);
  assert.equal(clock.t, 180, "immediate");
  await limiter.acquire(10);
  assert.equal(
    clock.t,
    200,
    "the next slot is where pacing planned it, not 100 ms after the stall",
  );
  clock.t = 5000; // a long stall
  await limiter.acquire(10);
  await limiter.acquire(10);
  await limiter.acquire(10);
  await limiter.acquire(10);
  assert.ok(clock.t >= 5050, `no more than a quarter window banked (t=${clock.t})`);
});

Deno.test("rps 0 is unlimited and never sleeps", async () => {
  const clock = fakeClock();
  const limiter = new SlidingWindowLimiter(0, { clock });
  for (let i = 0; i < 100; i++) assert.equal(await limiter.acquire(1_000_000), 0);
  assert.equal(clock.sleeps.length, 0);
  assert.equal(limiter.granted, 100_000_000);
});

Deno.test("bad arguments throw RangeError naming the value", () => {
  assert.throws(() => new SlidingWindowLimiter(-1), /rps must be a non-negative integer, got -1/);
  const limiter = new SlidingWindowLimiter(5, { clock: fakeClock() });
  assert.throws(() => limiter.setRps(1.5), /rps must be a non-negative integer, got 1.5/);
  assert.equal(limiter.rps, 5, "a refused rate leaves the old one");
});

Deno.test("more permits than the rate are granted in pieces, no window over the rate", async () => {
  const clock = fakeClock();
  const limiter = new SlidingWindowLimiter(5, { clock });
  await limiter.acquire(12);
  assert.equal(limiter.granted, 12);
  // pieces of 5, 5, 2: the third piece cannot start before the first leaves the window
  assert.ok(clock.t >= 2000, `t=${clock.t}`);
});

Deno.test("a new rate applies at once to a caller already waiting", async () => {
  const clock = stoppedClock();
  const limiter = new SlidingWindowLimiter(10, { clock });
  await limiter.acquire(10);
  const raised = limiter.acquire(10); // waits: the window is full under rps 10
  await Promise.resolve();
  limiter.setRps(20); // room for 10 more in the same window: the waiter goes at once
  assert.equal(await raised, 0);
  const unlimited = limiter.acquire(1000); // far more than the rate: waits
  await Promise.resolve();
  limiter.setRps(0);
  assert.equal(await unlimited, 0, "woken, not left asleep under the old rate");
  assert.equal(limiter.granted, 1020);
});

Deno.test("a waiter's own abort still rejects with its reason after a retune", async () => {
  const limiter = new SlidingWindowLimiter(1);
  await limiter.acquire(1);
  const controller = new AbortController();
  const pending = limiter.acquire(1, controller.signal);
  limiter.setRps(2);
  controller.abort(new Error("stop"));
  await assert.rejects(pending, /stop/);
});

Deno.test("acquire is abortable", async () => {
  const limiter = new SlidingWindowLimiter(1);
  await limiter.acquire(1);
  const controller = new AbortController();
  const pending = limiter.acquire(1, controller.signal);
  controller.abort(new Error("stop"));
  await assert.rejects(pending, /stop/);
});

Deno.test("real clock: 30 permits at rps 20 take about half a second more than a window", async () => {
  const limiter = new SlidingWindowLimiter(20);
  const started = performance.now();
  for (let i = 0; i < 30; i++) await limiter.acquire(1);
  const elapsed = performance.now() - started;
  assert.ok(elapsed >= 990, `took ${elapsed} ms`);
});
