import assert from "node:assert/strict";
import {
  AimdController,
  type AimdOptions,
  describeRateChange,
  type HealthSignals,
} from "../src/control/aimd.ts";

const healthy: HealthSignals = {
  latencyOver: false,
  replicaLagOver: false,
  memoryOver: false,
  operatorPaused: false,
};

function controller(options: Partial<AimdOptions> = {}) {
  const clock = { t: 0 };
  const aimd = new AimdController({ capRps: 0, adaptive: true, now: () => clock.t, ...options });
  /** Ticks every 100 ms for `ms` with `signals`; returns every change. */
  const run = (ms: number, signals: Partial<HealthSignals> = {}) => {
    const changes = [];
    for (let elapsed = 0; elapsed < ms; elapsed += 100) {
      clock.t += 100;
      changes.push(...aimd.tick({ ...healthy, ...signals }));
    }
    return changes;
  };
  return { aimd, clock, run };
}

Deno.test("no cap: starts at a sane rate and probes upward while healthy", () => {
  const { aimd, run } = controller();
  assert.equal(aimd.state.rps, 1000);
  assert.deepEqual(run(10_000), [], "raising is not a change of state: no log line");
  // 10 raises of x2 from 1000 (slow start: the ceiling is found in seconds).
  assert.equal(aimd.state.rps, 1000 * 2 ** 10);
});

Deno.test("latency over: cut sharply within a second, at most once per second, then recover", () => {
  const { aimd, run } = controller();
  run(10_000);
  const before = aimd.state.rps;
  // One noisy reading (under 300 ms) is no cut, and no raise either.
  assert.deepEqual(run(200, { latencyOver: true }), []);
  assert.deepEqual(run(100), []);
  assert.equal(aimd.state.rps, before);
  const first = run(400, { latencyOver: true });
  assert.deepEqual(first, [{
    reason: "latency",
    active: true,
    rps: Math.round(before / 2),
    paused: false,
  }]);
  // Still over for 2 more seconds: two more cuts, one per second, each one line.
  const more = run(2000, { latencyOver: true });
  assert.equal(more.length, 2);
  assert.equal(aimd.state.rps, Math.round(before / 8));
  assert.deepEqual(aimd.state.throttled, ["latency"]);
  const cleared = run(100);
  assert.deepEqual(cleared.map((c) => [c.reason, c.active]), [["latency", false]]);
  // The best rate proven healthy for a whole second is before / 2 (before itself was reached by
  // the last raise and never held a full second). Below half of that best rate the rate grows by
  // 1.25 per healthy second, then additively, +5% of that best rate per second: never a jump.
  const best = before / 2;
  const low = aimd.state.rps;
  run(3000);
  assert.ok(Math.abs(aimd.state.rps - low * 1.25 ** 3) <= 2, `${aimd.state.rps}`);
  run(2000);
  assert.ok(aimd.state.rps >= best / 2, `${aimd.state.rps} is back above half of ${best}`);
  for (let second = 0; second < 10; second++) {
    const from = aimd.state.rps;
    run(1000);
    const step = aimd.state.rps - from;
    assert.ok(step >= 0 && step <= Math.max(best, from) * 0.05 + 2, `additive step ${step}`);
  }
  assert.ok(aimd.state.rps > best * 0.9, `${aimd.state.rps} recovered toward ${best}`);
});

Deno.test("finds the store's ceiling: oscillates below the rate where latency appears", () => {
  // A store that turns slow above 20000 jobs/s: the throttle must settle near it, not run away.
  const { aimd, clock } = controller();
  const rates: number[] = [];
  for (let t = 0; t < 300_000; t += 100) {
    clock.t += 100;
    aimd.tick({ ...healthy, latencyOver: aimd.state.rps > 20_000 });
    if (t > 120_000) rates.push(aimd.state.rps);
  }
  const mean = rates.reduce((a, b) => a + b, 0) / rates.length;
  assert.ok(Math.max(...rates) <= 20_000 * 1.1, `max ${Math.max(...rates)}`);
  assert.ok(mean > 20_000 * 0.6, `mean ${mean} reaches most of the ceiling`);
});

Deno.test("the cap bounds the rate, a start above it starts at the cap, set-rps changes it", () => {
  const { aimd, run } = controller({ capRps: 300 });
  assert.equal(aimd.state.rps, 300);
  run(5000);
  assert.equal(aimd.state.rps, 300);
  assert.deepEqual(aimd.setCap(5000), { reason: "cap", active: true, rps: 300, paused: false });
  run(3000);
  // Doubling per healthy second (slow start), not a jump to the new cap.
  assert.ok(aimd.state.rps > 300 && aimd.state.rps <= 2400, `raised gradually: ${aimd.state.rps}`);
  const removed = aimd.setCap(0);
  assert.equal(removed.active, false);
  assert.throws(() => aimd.setCap(-1), RangeError);
});

Deno.test("not adaptive (--max-latency 0): the rate is the cap, 0 stays unlimited", () => {
  const capped = controller({ capRps: 5000, adaptive: false });
  capped.run(2000, { latencyOver: true });
  assert.equal(capped.aimd.state.rps, 5000);
  const unlimited = controller({ adaptive: false });
  assert.equal(unlimited.aimd.state.rps, 0);
});

Deno.test("pauses: replica lag, memory and the operator each pause, one line on and one off", () => {
  const { aimd, run } = controller({ capRps: 800 });
  const on = run(300, { replicaLagOver: true, memoryOver: true });
  assert.deepEqual(on.map((c) => [c.reason, c.active, c.paused]), [
    ["memory", true, true],
    ["replica_lag", true, true],
  ]);
  assert.deepEqual(aimd.state.throttled, ["memory", "replica_lag"]);
  // Latency while paused is not acted on (nothing is admitted, nothing learnt).
  assert.deepEqual(run(2000, { replicaLagOver: true, latencyOver: true }).map((c) => c.reason), [
    "memory",
  ]);
  const off = run(100);
  assert.deepEqual(off.map((c) => [c.reason, c.active, c.paused, c.rps]), [
    ["replica_lag", false, false, 800],
  ]);
  assert.equal(run(100, { operatorPaused: true })[0]?.reason, "paused");
  assert.equal(aimd.state.paused, true);
});

Deno.test("a run that does not keep up is not raised, and a cut starts from what it achieved", () => {
  const { aimd, run } = controller();
  run(5000, { achievedRps: 700 });
  assert.equal(aimd.state.rps, 1000, "not raised above what the run can use");
  run(400, { latencyOver: true, achievedRps: 700 });
  assert.equal(aimd.state.rps, 350);
});

Deno.test("a cut never goes below the floor", () => {
  const { aimd, run } = controller({ startRps: 50 });
  run(10_000, { latencyOver: true });
  assert.equal(aimd.state.rps, 20);
});

Deno.test("each change reads as one line with the reason and the new rate", () => {
  assert.equal(
    describeRateChange({ reason: "latency", active: true, rps: 2500, paused: false }, {
      maxLatencyMs: 0.5,
    }),
    "throttle on: added p99 latency above 0.5 ms; rate 2500/s",
  );
  assert.equal(
    describeRateChange({ reason: "replica_lag", active: true, rps: 2500, paused: true }),
    "throttle on: replica lag above --max-replica-lag; paused",
  );
  assert.equal(
    describeRateChange({ reason: "cap", active: false, rps: 0, paused: false }),
    "operator cap removed; rate unlimited",
  );
});
