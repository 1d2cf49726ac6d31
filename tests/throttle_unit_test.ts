import assert from "node:assert/strict";
import type { LoadDelta } from "../src/control/server_load.ts";
import { type HealthSource, Throttle } from "../src/control/throttle.ts";
import type { LogLevel } from "../src/run_events.ts";

/** A master whose load readings are scripted: busy and own as shares of 200 ms. */
class FakeHealth implements HealthSource {
  readonly node: string;
  next: { busy: number; own: number } = { busy: 0.1, own: 0 };
  memoryOver = false;
  constructor(node: string) {
    this.node = node;
  }
  read() {
    return { replicaLagOver: false, memoryOver: this.memoryOver };
  }
  refreshMemory(): Promise<void> {
    return Promise.resolve();
  }
  readLoad(): Promise<LoadDelta | undefined> {
    return Promise.resolve({
      elapsedMicros: 200_000,
      busyMicros: this.next.busy * 200_000,
      ownMicros: this.next.own * 200_000,
    });
  }
}

function throttle(nodes: FakeHealth[], capRps = 0) {
  const lines: [LogLevel, string][] = [];
  const rates: { node: string; rps: number }[] = [];
  const reasons: [string, boolean][] = [];
  let now = 0;
  const t = new Throttle({
    nodes,
    capRps,
    adaptive: true,
    logger: { log: (level, _event, message) => lines.push([level, message]) },
    observer: {
      onRateLimit: (event) => rates.push(event),
      onThrottle: (event) => reasons.push([event.reason, event.active]),
    },
    now: () => (now += 200),
  });
  return { t, lines, rates, reasons };
}

/** Whether `wait` for `node` resolves within a few ms (it is not held). */
async function admits(t: Throttle, node: string): Promise<boolean> {
  const stop = new AbortController();
  const timer = setTimeout(() => stop.abort(new Error("held")), 30);
  try {
    await t.wait({ node, signal: stop.signal });
    return true;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("throttle: a quiet window holds only that master's admissions, then lets them go", async () => {
  const a = new FakeHealth("a:1");
  const b = new FakeHealth("b:1");
  const { t } = throttle([a, b]);
  await t.sample("a:1", false); // the first reading only starts the interval
  a.next = { busy: 0.97, own: 0.5 };
  await t.sample("a:1", false);
  assert.equal(await admits(t, "a:1"), false, "a's application is read alone");
  assert.equal(await admits(t, "b:1"), true, "b goes on");
  a.next = { busy: 0.2, own: 0 };
  await t.sample("a:1", true);
  assert.equal(await admits(t, "a:1"), true, "the window ended: a goes on at full speed");
  assert.equal(t.limiterFor("a:1")!.rps, 0);
});

Deno.test("throttle: a saturated master yields on its own limiter, says why once, and reports it", async () => {
  const a = new FakeHealth("a:1");
  const b = new FakeHealth("b:1");
  const { t, lines, rates, reasons } = throttle([a, b], 50_000);
  await t.sample("a:1", false);
  a.next = { busy: 1, own: 0.4 };
  await t.sample("a:1", false);
  a.next = { busy: 0.95, own: 0 };
  await t.sample("a:1", true);
  const yielded = t.limiterFor("a:1")!.rps;
  assert.ok(yielded > 0 && yielded < 50_000, `a's rate ${yielded}`);
  assert.equal(t.limiterFor("b:1")!.rps, 0, "b is not held back");
  assert.deepEqual(reasons, [["redis_busy", true]]);
  assert.equal(lines.length, 1);
  assert.equal(lines[0]![0], "warn");
  assert.match(lines[0]![1], /^a:1: throttle on: Redis is 95% busy without the backfill/);
  assert.deepEqual(rates.at(-1), { node: "a:1", rps: yielded });
  assert.deepEqual(t.view().throttled, ["redis_busy"]);
  assert.equal(t.view().rps, 50_000, "b runs at the cap: the run's rate is the cap");
});

Deno.test("throttle: set-rps is the run's cap, one line; pause and resume are one line each", () => {
  const a = new FakeHealth("a:1");
  const { t, lines } = throttle([a]);
  assert.deepEqual(t.view(), { rps: 0, capRps: 0, paused: false, throttled: [] });
  t.setCap(800);
  assert.deepEqual(t.view(), { rps: 800, capRps: 800, paused: false, throttled: [] });
  t.setPaused(true);
  assert.equal(t.view().paused, true);
  t.setPaused(false);
  assert.deepEqual(lines.map(([, line]) => line), [
    "operator cap set; rate 800/s",
    "throttle on: paused by the operator; paused",
    "throttle off: resumed by the operator; rate 800/s",
  ]);
  assert.throws(() => t.setCap(-1), RangeError);
});

Deno.test("throttle: a quiet window whose reading fails lets the master go on", async () => {
  const a = new FakeHealth("a:1");
  const { t } = throttle([a]);
  await t.sample("a:1", false);
  a.next = { busy: 0.97, own: 0.5 };
  await t.sample("a:1", false);
  assert.equal(await admits(t, "a:1"), false);
  a.readLoad = () => Promise.resolve(undefined);
  await t.sample("a:1", true);
  assert.equal(await admits(t, "a:1"), true);
});

Deno.test("throttle: its loop ends with the run even while a reading never returns", async () => {
  const a = new FakeHealth("a:1");
  const { t } = throttle([a]);
  a.readLoad = () => new Promise<never>(() => {});
  const stop = new AbortController();
  const running = t.run(stop.signal);
  await new Promise((resolve) => setTimeout(resolve, 20));
  stop.abort();
  await running;
});
