import assert from "node:assert/strict";
import {
  busyShare,
  describeRateChange,
  type LoadReading,
  PaceController,
  type PaceOptions,
  type PauseSignals,
  type RateChange,
} from "../src/control/pace.ts";

const calm: PauseSignals = { replicaLagOver: false, memoryOver: false, operatorPaused: false };

/**
 * A controller fed one reading per 200 ms of server time. `busy` and `own` are shares of the
 * interval; `keys` what the backfill admitted in it.
 */
function controller(options: Partial<PaceOptions> = {}) {
  const pace = new PaceController({ adaptive: true, ...options });
  let at = 0;
  const reading = (
    busy: number,
    own: number,
    keys: number,
    quiet = false,
  ): LoadReading => {
    at += 200;
    return {
      at,
      elapsedMicros: 200_000,
      busyMicros: busy * 200_000,
      ownMicros: own * 200_000,
      keys,
      quiet,
    };
  };
  /** One tick; when the controller asks for a quiet window, the next reading is the app's alone. */
  const tick = (busy: number, own: number, keys: number, appAlone = busy - own) => {
    const changes = pace.tick(calm, reading(busy, own, keys));
    if (pace.state.quiet) changes.push(...pace.tick(calm, reading(appAlone, 0, 0, true)));
    return changes;
  };
  return { pace, tick, reading };
}

Deno.test("pace: a healthy store is not held back, and nothing is read apart (no quiet window)", () => {
  const { pace, tick } = controller();
  assert.deepEqual(pace.state, {
    rps: 0,
    paused: false,
    quiet: false,
    shared: true,
    throttled: [],
  });
  // The backfill alone keeps Redis 70% busy: full speed, the cap (if any) is the rate.
  for (let i = 0; i < 50; i++) {
    assert.deepEqual(tick(0.7, 0.6, 10_000), []);
    assert.equal(pace.state.quiet, false);
  }
  assert.equal(pace.state.rps, 0);
});

Deno.test("pace: Redis busy because of the backfill: a quiet window clears it, and they back off", () => {
  const { pace, reading } = controller();
  let quietWindows = 0;
  // 60 s of a backfill that keeps Redis 95% busy on its own (the application takes 5%).
  for (let i = 0; i < 300; i++) {
    pace.tick(calm, reading(0.95, 0.75, 10_000));
    if (pace.state.quiet) {
      quietWindows++;
      assert.deepEqual(pace.tick(calm, reading(0.05, 0, 0, true)), []);
    }
  }
  assert.equal(pace.state.rps, 0, "never yields to its own load");
  // Gaps of 1, 2, 4, 8, 16, 16, 16 s: 7 windows of 150 ms in 60 s, under 2% of the time.
  assert.ok(quietWindows >= 4 && quietWindows <= 8, `quiet windows: ${quietWindows}`);
});

Deno.test("pace: the application alone saturates Redis: yield to a tenth of Redis's time, one line", () => {
  const { pace, tick } = controller();
  // The backfill's commands cost 8 µs of Redis per key: 0.4 of 200 ms for 10 000 keys.
  const changes = tick(1, 0.4, 10_000, 0.95);
  assert.equal(changes.length, 1);
  const [change] = changes;
  assert.equal(change!.reason, "redis_busy");
  assert.equal(change!.active, true);
  // 8 µs × 1.25 (reads, replies) = 10 µs per key: a tenth of a second of Redis is 10 000 keys/s.
  assert.equal(pace.state.rps, 10_000);
  assert.deepEqual(pace.state.throttled, ["redis_busy"]);
  assert.match(
    describeRateChange(change!),
    /^throttle on: Redis is 95% busy without the backfill \(critical load 90%\): the backfill yields to 10% of Redis's time; rate 10000\/s$/,
  );
});

Deno.test("pace: while yielding a saturated Redis stays yielded; the application easing off recovers it", () => {
  const { pace, tick } = controller();
  tick(1, 0.4, 10_000, 0.95);
  assert.deepEqual(pace.state.throttled, ["redis_busy"]);
  // Still saturated (the backfill's tenth on top of the application's 95%): no change.
  for (let i = 0; i < 25; i++) assert.deepEqual(tick(1, 0.08, 2000), []);
  // The application drops to 48% (58% less the backfill's 8% × 1.25): recovered after a second.
  const changes: RateChange[] = [];
  for (let i = 0; i < 4; i++) changes.push(...tick(0.58, 0.08, 2000));
  assert.equal(changes.length, 0, "not before a whole second");
  changes.push(...tick(0.58, 0.08, 2000), ...tick(0.58, 0.08, 2000));
  assert.equal(changes.length, 1);
  assert.equal(changes[0]!.active, false);
  assert.equal(pace.state.rps, 0);
  assert.match(
    describeRateChange(changes[0]!),
    /^throttle off: the application keeps Redis 48% busy, under 80%; rate unlimited$/,
  );
});

Deno.test("pace: hysteresis: an application between recovery and critical load keeps the yield", () => {
  const { pace, tick } = controller();
  tick(1, 0.4, 10_000, 0.92);
  for (let i = 0; i < 50; i++) assert.deepEqual(tick(0.93, 0.08, 2000), []);
  assert.deepEqual(pace.state.throttled, ["redis_busy"]);
});

Deno.test("pace: before any key's cost is known the yield is a cold, low rate", () => {
  const { pace, reading } = controller();
  pace.tick(calm, reading(0.97, 0, 0));
  assert.equal(pace.state.quiet, true, "the first reading at critical load asks for a window");
  pace.tick(calm, reading(0.97, 0, 0, true));
  assert.equal(pace.state.rps, 200);
});

Deno.test("pace: the application's load rising past the last window's reading brings the next one forward", () => {
  const { pace, reading } = controller();
  // Backed off: Redis is busy with the backfill's work, the application is light.
  for (let i = 0; i < 200; i++) {
    pace.tick(calm, reading(0.95, 0.75, 10_000));
    if (pace.state.quiet) pace.tick(calm, reading(0.05, 0, 0, true));
  }
  // The application triples its share: the next window comes within about a second.
  let ticks = 0;
  while (!pace.state.quiet && ticks < 100) {
    pace.tick(calm, reading(1, 0.5, 6000));
    ticks++;
  }
  assert.ok(ticks <= 6, `ticks until the next quiet window: ${ticks}`);
});

Deno.test("pace: raw (--max-latency 0): no quiet window, no yield, only the pauses", () => {
  const { pace, tick } = controller({ adaptive: false });
  for (let i = 0; i < 20; i++) assert.deepEqual(tick(1, 0.05, 100, 0.99), []);
  assert.deepEqual(pace.state, {
    rps: 0,
    paused: false,
    quiet: false,
    shared: true,
    throttled: [],
  });
  const changes = pace.tick({ ...calm, memoryOver: true });
  assert.deepEqual(changes.map((c) => [c.reason, c.active]), [["memory", true]]);
  assert.equal(pace.state.paused, true);
});

Deno.test("pause reasons: each pauses, one line on and one off; a reading while paused is the app's", () => {
  const { pace, reading } = controller();
  const on = pace.tick({ replicaLagOver: true, memoryOver: true, operatorPaused: true });
  assert.deepEqual(on.map((c) => c.reason), ["paused", "memory", "replica_lag"]);
  assert.deepEqual(pace.state.throttled, ["paused", "memory", "replica_lag"]);
  assert.equal(pace.state.paused, true);
  // Nothing admitted: what Redis does now is the application's alone, and it is saturated.
  assert.deepEqual(pace.tick(calm, reading(0.2, 0, 0)), [
    { reason: "paused", active: false, rps: 0, paused: true },
    { reason: "memory", active: false, rps: 0, paused: true },
    { reason: "replica_lag", active: false, rps: 0, paused: false },
  ]);
  assert.equal(pace.state.paused, false);
});

Deno.test("pace: each change reads as one line with the reason and the rate", () => {
  assert.equal(
    describeRateChange({ reason: "memory", active: true, rps: 0, paused: true }),
    "throttle on: memory above --max-memory-pct; paused",
  );
  assert.equal(
    describeRateChange({ reason: "cap", active: true, rps: 800, paused: false }),
    "operator cap set; rate 800/s",
  );
  assert.equal(
    describeRateChange({ reason: "paused", active: false, rps: 0, paused: false }),
    "throttle off: resumed by the operator; rate unlimited",
  );
});

Deno.test("pace: shared while another client shows or nobody can tell; alone only after 2 s without", () => {
  const pace = new PaceController({ adaptive: true });
  let at = 0;
  const read = (othersActive: boolean | undefined) => {
    at += 200;
    return pace.tick(calm, {
      at,
      elapsedMicros: 200_000,
      busyMicros: 100_000,
      ownMicros: 80_000,
      keys: 1000,
      quiet: false,
      ...(othersActive === undefined ? {} : { othersActive }),
    });
  };
  assert.equal(pace.state.shared, true, "before any reading: shared (the budget's window)");
  // A run that starts on a store nobody else uses goes alone at the first reading.
  const alone = read(false);
  assert.deepEqual(alone.map((c) => [c.reason, c.active]), [["shared", false]]);
  assert.equal(pace.state.shared, false);
  assert.match(describeRateChange(alone[0]!), /no other client active on Redis/);
  // A client appears: shared at once, one line.
  const shared = read(true);
  assert.deepEqual(shared.map((c) => [c.reason, c.active]), [["shared", true]]);
  assert.match(describeRateChange(shared[0]!), /another client is active on Redis/);
  // It goes quiet: 2 s of readings without it before the window deepens again, no line before.
  for (let t = 200; t < 2000; t += 200) assert.deepEqual(read(false), []);
  assert.equal(pace.state.shared, true);
  assert.deepEqual(read(false).map((c) => c.reason), ["shared"]);
  assert.equal(pace.state.shared, false);
  // A reading that cannot tell (CLIENT LIST refused or not read) counts as shared.
  read(undefined);
  assert.equal(pace.state.shared, true);
  // Raw speed (--max-latency 0): the window is deep anyway, the readings change nothing.
  const raw = new PaceController({ adaptive: false });
  raw.tick(calm, { at: 200, elapsedMicros: 1, busyMicros: 0, ownMicros: 0, keys: 0, quiet: false });
  assert.equal(raw.state.shared, true);
});

Deno.test("busy share: the main thread's CPU over the server's clock, 0 to 1", () => {
  assert.equal(busyShare({ elapsedMicros: 200_000, busyMicros: 50_000 }), 0.25);
  assert.equal(busyShare({ elapsedMicros: 200_000, busyMicros: 250_000 }), 1);
  assert.equal(busyShare({ elapsedMicros: 0, busyMicros: 10 }), 0);
});
