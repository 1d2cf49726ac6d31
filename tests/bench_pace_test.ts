import assert from "node:assert/strict";
import { paceLogLines, settleTime } from "../bench/pace.ts";

/** DBSIZE samples every 250 ms from t=0 to `until`, growing at `rate(t)` keys/s. */
function samples(until: number, rate: (t: number) => number): [number, number][] {
  const out: [number, number][] = [];
  let count = 0;
  for (let t = 0; t <= until; t += 250) {
    out.push([t, Math.round(count)]);
    count += rate(t) / 4;
  }
  return out;
}

Deno.test("settle time: from the command to the start of the last in-band stretch", () => {
  // 10,000/s until the command at t=2000, then 5,000/s from t=2500 on.
  const s = samples(8000, (t) => (t < 2500 ? 10_000 : 5_000));
  const { settleMs, endRate } = settleTime(s, 2000, 8000, 5000);
  // The rolling 1 s rate is within ±10% only once the window holds no 10,000/s quarter.
  assert.equal(settleMs, 1500);
  assert.equal(endRate, 5000);
});

Deno.test("settle time: a rate that never reaches the band has none", () => {
  const s = samples(6000, () => 800);
  const { settleMs, endRate } = settleTime(s, 1000, 6000, 5000);
  assert.equal(settleMs, undefined);
  assert.equal(endRate, 800);
});

Deno.test("settle time: a band reached for less than 1 s at the end does not count", () => {
  const s = samples(6000, (t) => (t < 5250 ? 100 : 5000));
  assert.equal(settleTime(s, 1000, 6000, 5000).settleMs, undefined);
});

Deno.test("settle time to 0: from the command until no key is added any more", () => {
  const s = samples(4000, (t) => (t < 1750 ? 800 : 0));
  // The last keys (the quarter from t=1500) show in the sample of t=1750: 750 ms after t=1000.
  assert.equal(settleTime(s, 1000, 4000, 0).settleMs, 750);
  // Still growing at the end of the phase: not stopped.
  assert.equal(settleTime(samples(4000, () => 800), 1000, 4000, 0).settleMs, undefined);
});

Deno.test("pace log lines: the run's own lines beyond progress and start-up, timed from spawn", () => {
  const start = Date.parse("2026-01-01T00:00:00.000Z");
  const stderr = [
    '{"time":"2026-01-01T00:00:00.300Z","level":"info","event":"connected","message":"x"}',
    '{"time":"2026-01-01T00:00:01.250Z","level":"warn","event":"throttle","message":"on: why"}',
    '{"time":"2026-01-01T00:00:02.000Z","level":"info","event":"progress","message":"p"}',
    "received SIGTERM: finishing",
  ].join("\n");
  assert.deepEqual(paceLogLines(stderr, start), ["+1.25s throttle: on: why"]);
});
