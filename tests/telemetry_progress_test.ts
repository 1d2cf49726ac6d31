import assert from "node:assert/strict";
import { emptyCounters } from "../src/outcome.ts";
import {
  formatCount,
  formatDuration,
  progressFields,
  ProgressReporter,
  type ProgressState,
  renderProgress,
} from "../src/telemetry/progress.ts";
import { BatchFeed, FakeClock, results, stripAnsi, TrackingClock } from "./support/telemetry.ts";

const T0 = 1_700_000_000_000;

function state(overrides: Partial<ProgressState> = {}): ProgressState {
  return {
    totals: {
      ...emptyCounters(),
      scanned: 12_000,
      migrated: 10_000,
      repaired: 5,
      skipped_exists: 1_500,
      skipped_invalid: 400,
      skipped_gone: 95,
      errors: 0,
    },
    estimatedTotal: 100_000,
    startedAt: T0,
    ...overrides,
  };
}

Deno.test("renderProgress: counters, rate, percentage and an ETA marked as an estimate", () => {
  // 12,000 keys in 60 s = 200 keys/s; 88,000 left = 440 s, about 7 minutes.
  const line = stripAnsi(
    renderProgress(state({ mode: "dry-run" }), { width: 200, now: T0 + 60_000 }),
  );
  assert.equal(
    line,
    "[dry-run]  scanned 12,000/~100,000 (12%)  migrated 10,000  repaired 5  skipped 1,995  " +
      "errors 0  200 keys/s  ETA ~7m (est.)",
  );
});

Deno.test("renderProgress: ETA unknown without a rate or when the estimate is already passed", () => {
  const fresh = renderProgress(state({ totals: emptyCounters() }), { width: 200, now: T0 });
  assert.match(fresh, /0\.0 keys\/s {2}ETA unknown$/);
  const passed = renderProgress(state({ estimatedTotal: 5_000 }), { width: 200, now: T0 + 60_000 });
  assert.match(passed, /^scanned 12,000 {2}/);
  assert.match(passed, /ETA unknown$/);
});

Deno.test("renderProgress: done shows the elapsed time instead of an ETA", () => {
  const line = renderProgress(state({ done: true }), { width: 200, now: T0 + 3_725_000 });
  assert.match(line, /^scanned 12,000 {2}migrated/);
  assert.match(line, /done in 1h02m$/);
  assert.ok(!line.includes("ETA"));
  const stopped = renderProgress(state({ done: true, completed: false }), {
    width: 200,
    now: T0 + 30_000,
  });
  assert.match(stopped, /stopped after 30s$/);
});

Deno.test("renderProgress: filtered shows only when there are filtered keys", () => {
  const totals = { ...state().totals, filtered: 7, scanned: 12_007 };
  assert.match(renderProgress(state({ totals }), { width: 200, now: T0 + 1 }), /filtered 7/);
  assert.ok(!renderProgress(state(), { width: 200, now: T0 + 1 }).includes("filtered"));
});

Deno.test("renderProgress: never wider than width; keeps scanned, errors and the ETA longest", () => {
  const s = state({ mode: "execute", totals: { ...state().totals, errors: 3, scanned: 12_003 } });
  const now = T0 + 60_000;
  for (let width = 1; width <= 160; width++) {
    const line = renderProgress(s, { width, now, color: true });
    assert.ok(stripAnsi(line).length <= width, `width ${width}: ${line}`);
  }
  const narrow = stripAnsi(renderProgress(s, { width: 60, now }));
  assert.match(narrow, /^scanned 12,003\/~100,000 \(12%\)/);
  assert.match(narrow, /errors 3/);
  assert.match(narrow, /ETA ~/);
  assert.ok(!narrow.includes("[execute]"));
  assert.ok(!narrow.includes("repaired"));
  assert.equal(renderProgress(s, { width: 10, now }), "scanned 12");
});

Deno.test("renderProgress: colour only marks a non-zero error count", () => {
  const plain = state();
  assert.ok(!renderProgress(plain, { width: 200, now: T0 + 1, color: true }).includes("\x1b"));
  const failing = state({ totals: { ...plain.totals, errors: 2, scanned: 12_002 } });
  const coloured = renderProgress(failing, { width: 200, now: T0 + 1, color: true });
  assert.ok(coloured.includes("\x1b[31merrors 2\x1b[0m"));
  assert.equal(stripAnsi(coloured), renderProgress(failing, { width: 200, now: T0 + 1 }));
});

Deno.test("progressFields: counters, estimate, rate and ETA for JSON progress events", () => {
  assert.deepEqual(progressFields(state(), T0 + 60_000), {
    scanned: 12_000,
    migrated: 10_000,
    repaired: 5,
    skipped_exists: 1_500,
    skipped_invalid: 400,
    skipped_gone: 95,
    filtered: 0,
    errors: 0,
    estimated_total: 100_000,
    elapsed_seconds: 60,
    keys_per_second: 200,
    eta_seconds_estimate: 440,
  });
  const done = progressFields(state({ done: true }), T0 + 61_000);
  assert.equal(done.done, true);
  assert.equal("eta_seconds_estimate" in done, false);
  assert.equal("eta_seconds_estimate" in progressFields(state(), T0), false, "no rate yet");
});

Deno.test("formatDuration and formatCount", () => {
  assert.equal(formatDuration(0), "0s");
  assert.equal(formatDuration(59.4), "59s");
  assert.equal(formatDuration(90), "2m");
  assert.equal(formatDuration(3599), "60m");
  assert.equal(formatDuration(3600), "1h00m");
  assert.equal(formatDuration(5 * 3600 + 7 * 60), "5h07m");
  assert.equal(formatDuration(2 * 86400 + 4 * 3600), "2d04h");
  assert.equal(formatDuration(-5), "0s");
  assert.equal(formatCount(0), "0");
  assert.equal(formatCount(999), "999");
  assert.equal(formatCount(1_234_567), "1,234,567");
});

Deno.test("reporter, not a TTY: one line per interval, only when something changed", () => {
  const clock = new FakeClock(T0);
  const out: { at: number; text: string }[] = [];
  const reporter = new ProgressReporter({
    write: (text) => out.push({ at: clock.now() - T0, text }),
    isTty: false,
    interval: 10,
    clock,
  });
  const feed = new BatchFeed(10_000);
  reporter.onStart({ mode: "execute", rps: 100, estimatedTotal: 10_000, progressKey: "p" });
  // A batch of 50 keys every 500 ms for 35 s.
  for (let i = 1; i <= 70; i++) {
    clock.advance(500);
    reporter.onBatch(feed.next(results(50, "migrated", "acme")));
  }
  assert.deepEqual(out.map((o) => o.at), [500, 10_500, 20_500, 30_500]);
  for (const { text } of out) {
    assert.ok(text.endsWith("\n") && !text.includes("\r") && !text.includes("\x1b"), text);
    assert.equal(text.split("\n").length, 2);
  }
  assert.match(out[1]!.text, /^\[execute\] {2}scanned 1,000\/~10,000 \(10%\) {2}migrated 1,000/);
  // The timer fires at 10.5 s, before that instant's batch: 1,000 keys in 10.5 s = 95 keys/s,
  // 9,000 left = 95 s.
  assert.match(out[1]!.text, /95 keys\/s {2}ETA ~2m \(est\.\)\n$/);

  // Nothing changes for a minute (empty SCAN pages): no lines.
  const lines = out.length;
  for (let i = 0; i < 120; i++) {
    clock.advance(500);
    reporter.onBatch(feed.next([]));
  }
  assert.equal(out.length, lines + 1, "the change at 35 s is shown once, then silence");
  assert.equal(out.at(-1)!.at, 40_500);
  clock.advance(60_000);
  assert.equal(out.length, lines + 1);

  // End: a final line only when something changed since the last one; no timer left behind.
  reporter.onEnd(feed.summary());
  assert.equal(out.length, lines + 1);
  assert.equal(clock.pending, 0);
});

Deno.test("reporter, not a TTY: the last change is written at the end and timers are cleared", () => {
  const clock = new FakeClock(T0);
  const out: string[] = [];
  const reporter = new ProgressReporter({ write: (t) => out.push(t), isTty: false, clock });
  const feed = new BatchFeed(100);
  reporter.onBatch(feed.next(results(10, "migrated", "a")));
  clock.advance(1000);
  reporter.onBatch(feed.next(results(10, "skipped_exists", "a")));
  assert.equal(out.length, 1);
  assert.equal(clock.pending, 1, "a trailing line is scheduled for the end of the interval");
  clock.advance(1000);
  reporter.onEnd(feed.summary());
  assert.equal(clock.pending, 0);
  assert.equal(out.length, 2);
  assert.match(out[1]!, /^scanned 20 {2}migrated 10 {2}repaired 0 {2}skipped 10 .*done in 2s\n$/);
});

Deno.test("reporter, not a TTY: interval 0 writes no progress lines", () => {
  const clock = new FakeClock(T0);
  const out: string[] = [];
  const reporter = new ProgressReporter({
    write: (t) => out.push(t),
    isTty: false,
    interval: 0,
    clock,
  });
  const feed = new BatchFeed();
  reporter.onBatch(feed.next(results(3, "migrated", "a")));
  clock.advance(60_000);
  reporter.onEnd(feed.summary());
  assert.deepEqual(out, []);
  assert.equal(clock.pending, 0);
});

Deno.test("reporter, TTY: one redrawn line, at most 10 redraws a second, newline at the end", () => {
  const clock = new FakeClock(T0);
  const out: string[] = [];
  const reporter = new ProgressReporter({
    write: (t) => out.push(t),
    isTty: true,
    columns: () => 60,
    clock,
  });
  const feed = new BatchFeed(100_000);
  // A batch every 10 ms for 2 s: 200 changes.
  for (let i = 0; i < 200; i++) {
    reporter.onBatch(feed.next(results(5, "migrated", "a")));
    clock.advance(10);
  }
  assert.ok(out.length >= 19 && out.length <= 21, `${out.length} redraws in 2 s`);
  for (const text of out) {
    assert.ok(text.startsWith("\r\x1b[2K"), JSON.stringify(text));
    assert.ok(!text.includes("\n"));
    assert.ok(stripAnsi(text).replace("\r", "").length <= 59);
  }
  reporter.onEnd(feed.summary());
  assert.equal(clock.pending, 0);
  const last = out.at(-1)!;
  assert.ok(last.startsWith("\r\x1b[2K") && last.endsWith("\n"));
  assert.match(stripAnsi(last), /scanned 1,000/);
  assert.match(stripAnsi(last), /done in 2s/);
});

Deno.test("reporter, TTY: writeAbove puts log lines above the progress line", () => {
  const clock = new FakeClock(T0);
  const out: string[] = [];
  const reporter = new ProgressReporter({ write: (t) => out.push(t), isTty: true, clock });
  reporter.writeAbove("before any progress\n");
  assert.deepEqual(out, ["before any progress\n"]);
  reporter.onBatch(new BatchFeed().next(results(1, "migrated", "a")));
  const drawn = out.at(-1)!.slice("\r\x1b[2K".length);
  reporter.writeAbove("a log line\n");
  assert.equal(out.at(-1), `\r\x1b[2Ka log line\n${drawn}`);
  reporter.stop();
  assert.equal(out.at(-1), `\r\x1b[2K${drawn}\n`);
});

Deno.test("reporter with real timers: a pending redraw timer is cleared by onEnd", () => {
  const clock = new TrackingClock();
  const out: string[] = [];
  const reporter = new ProgressReporter({
    write: (t) => out.push(t),
    isTty: false,
    interval: 60,
    clock,
  });
  const feed = new BatchFeed();
  reporter.onBatch(feed.next(results(1, "migrated", "a")));
  reporter.onBatch(feed.next(results(1, "migrated", "a"))); // schedules a trailing line in 60 s
  assert.equal(clock.pending, 1);
  reporter.onEnd(feed.summary());
  assert.equal(clock.pending, 0);
  assert.equal(out.length, 2);
});

Deno.test("reporter with real timers: the trailing redraw fires on its own", async () => {
  const clock = new TrackingClock();
  const out: string[] = [];
  const reporter = new ProgressReporter({ write: (t) => out.push(t), isTty: true, clock });
  const feed = new BatchFeed();
  reporter.onBatch(feed.next(results(1, "migrated", "a")));
  reporter.onBatch(feed.next(results(1, "migrated", "a")));
  assert.equal(out.length, 1);
  await new Promise((resolve) => setTimeout(resolve, 250));
  assert.equal(out.length, 2);
  assert.match(out[1]!, /scanned 2 /);
  assert.equal(clock.pending, 0);
  reporter.onEnd(feed.summary());
});
