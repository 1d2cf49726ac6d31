import assert from "node:assert/strict";
import {
  CallWindow,
  callWindowSize,
  latencyBudget,
  MAX_CALL_WINDOW,
  runWindow,
} from "../src/control/call_window.ts";

Deno.test("call window: covers one round trip, at least 2, at most the guard", () => {
  assert.equal(callWindowSize(0.05, 0.25), 2);
  assert.equal(callWindowSize(0, 0.25), 2);
  assert.equal(callWindowSize(0.5, 0.25), 3);
  assert.equal(callWindowSize(0.6, 0.25), 4);
  assert.equal(callWindowSize(1000, 0.25), MAX_CALL_WINDOW);
  assert.equal(callWindowSize(Number.NaN, 0.25), 2);
});

Deno.test("call window: a third call waits for one of two to be released", async () => {
  const window = new CallWindow(2);
  const first = await window.acquire();
  await window.acquire();
  let third = false;
  const waiting = window.acquire().then((release) => (third = true, release));
  await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(third, false);
  assert.equal(window.inFlight, 2);
  first();
  first(); // a second release of the same call changes nothing
  await waiting;
  assert.equal(third, true);
  assert.equal(window.inFlight, 2);
});

Deno.test("call window: an abort ends a wait without taking a slot", async () => {
  const window = new CallWindow(1);
  const release = await window.acquire();
  const stop = new AbortController();
  const waiting = window.acquire({ signal: stop.signal });
  stop.abort(new Error("stop"));
  await assert.rejects(waiting, /stop/);
  assert.equal(window.inFlight, 1);
  release();
  assert.equal(window.inFlight, 0);
  await window.acquire();
  assert.equal(window.inFlight, 1);
  assert.throws(() => new CallWindow(0), RangeError);
});

Deno.test("latency budget: (calls in flight + 1) × call bound stay within --max-latency", () => {
  // The default: 0.5 ms leaves one call in flight and the one that may run in the application
  // command's own event-loop turn: two calls of 0.25 ms.
  assert.deepEqual(latencyBudget(0.5, 0.25), { maxCallMs: 0.25, maxCallsInFlight: 1 });
  assert.deepEqual(latencyBudget(0.3, 0.25), { maxCallMs: 0.15, maxCallsInFlight: 1 });
  // More room: the call keeps its bound, more calls may be in flight.
  assert.deepEqual(latencyBudget(0.75, 0.25), { maxCallMs: 0.25, maxCallsInFlight: 2 });
  assert.deepEqual(latencyBudget(1, 0.25), { maxCallMs: 0.25, maxCallsInFlight: 3 });
  assert.deepEqual(latencyBudget(100, 0.25), { maxCallMs: 0.25, maxCallsInFlight: 16 });
  for (const [ms, call] of [[0.5, 0.25], [0.3, 0.25], [0.75, 0.25], [1, 0.1], [5, 2], [0.1, 1]]) {
    const budget = latencyBudget(ms!, call!)!;
    assert.ok(
      (budget.maxCallsInFlight + 1) * budget.maxCallMs <= ms! + 1e-9,
      `${ms} ms with ${call} ms calls: ${JSON.stringify(budget)}`,
    );
  }
  assert.equal(latencyBudget(0, 0.25), undefined, "--max-latency 0: raw speed, no bound");
});

Deno.test("call window: a size that changes applies as calls end (shrink) and at once (grow)", async () => {
  let size = 2;
  const window = new CallWindow(() => size);
  const first = await window.acquire();
  const second = await window.acquire();
  size = 1;
  first();
  // One call still in flight and room for one: the next waits until it ends.
  let third: (() => void) | undefined;
  const waiting = window.acquire().then((release) => (third = release));
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(third, undefined, "shrunk to one call: the next waits for the one in flight");
  second();
  await waiting;
  assert.equal(window.inFlight, 1);
  size = 3;
  const fourth = await window.acquire();
  const fifth = await window.acquire();
  assert.equal(window.inFlight, 3, "grown to three: two more at once");
  for (const release of [third!, fourth, fifth]) release();
  assert.equal(window.inFlight, 0);
  size = 0;
  assert.equal(window.size, 1, "a function's size is kept at one call at least");
});

Deno.test("run window: the budget's while shared, the round trip's while alone", () => {
  let shared = true;
  const calls = runWindow({ roundTrip: 2, budget: 1, shared: () => shared });
  assert.equal(calls.size, 1, "another client active: --max-latency's one call");
  shared = false;
  assert.equal(calls.size, 2, "alone: a round trip's worth");
  assert.equal(runWindow({ roundTrip: 3, budget: 1 }).size, 1, "unknown: shared");
  assert.equal(runWindow({ roundTrip: 3 }).size, 3, "no budget: the round trip's");
});
