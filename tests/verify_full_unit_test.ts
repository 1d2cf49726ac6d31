/**
 * Pure parts of `verify --full`: slots, comparisons, the report line, the verdict.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { zeroCounts } from "../src/verify/full/report.ts";
import { SlidingWindowLimiter } from "../src/control/rate_limit.ts";
import { RecentKeys } from "../src/verify/full/chunks.ts";
import { applyRescan, freshProgress, planRescan } from "../src/verify/full/checkpoint.ts";
import { CallSizer, STOPPING_CALL_SHARE } from "../src/control/call_size.ts";
import { SubBatches } from "../src/verify/sub_batches.ts";
import {
  compareSides,
  decodePairNew,
  decodeSide,
  diffFields,
  orphanReason,
  sameExpiry,
  type SideState,
} from "../src/verify/verdicts.ts";
import { findingLine } from "../src/verify/full/report.ts";
import { keySlot } from "../src/redis/slot.ts";
import { NodeCalls, OUTSIDE_SCRIPT_US, ownTimeLimitUs } from "../src/verify/node_calls.ts";
import type { Redis } from "../src/redis/ioredis.ts";
import { fullReport, verdictLine } from "../src/verify/full/report.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

Deno.test("keySlot: Redis's slots, hash tags included", () => {
  assert.equal(keySlot(bytes("foo")), 12182);
  assert.equal(keySlot(bytes("123456789")), 0x31c3 % 16384);
  assert.equal(keySlot(bytes("{user1000}.following")), keySlot(bytes("user1000")));
  // An empty tag hashes the whole key.
  assert.equal(keySlot(bytes("{}x")), keySlot(bytes("{}x")));
  assert.notEqual(keySlot(bytes("{}x")), keySlot(bytes("")));
});

const side = (over: Partial<SideState>): SideState => ({
  code: 3,
  workspace: Buffer.from("ws"),
  others: [],
  expireAt: -1,
  digest: "d",
  ...over,
});

Deno.test("compareSides: missing, type, fields, ttl, matched in the sampled verify's order", () => {
  const old = side({ expireAt: 10_000 });
  assert.equal(compareSides(side({ code: 0 }), old, 0).kind, "missing");
  assert.equal(compareSides(side({ code: 1 }), old, 0).kind, "type");
  assert.equal(compareSides(side({ digest: "x", expireAt: 0 }), old, 0).kind, "fields");
  assert.equal(compareSides(side({ expireAt: 16_000 }), old, 5000).kind, "ttl");
  assert.equal(compareSides(side({ expireAt: 15_000 }), old, 5000).kind, "matched");
  assert.equal(compareSides(side({ expireAt: -1 }), old, 5000).kind, "ttl");
  assert.ok(sameExpiry(-1, -1, 0));
  assert.ok(!sameExpiry(-1, 5, 1e9));
});

Deno.test("diffFields: missing wins, then differing and extra fields, names sorted", () => {
  const old = new Map([["a", "1"], ["b", "2"], ["c", "3"]]);
  assert.deepEqual(diffFields(old, new Map([["a", "1"]])), {
    kind: "field_missing",
    fields: ["b", "c"],
  });
  assert.deepEqual(diffFields(old, new Map([["c", "3"], ["b", "9"], ["a", "1"], ["z", "0"]])), {
    kind: "field_differs",
    fields: ["b", "z"],
  });
  assert.equal(diffFields(old, new Map(old)), undefined);
});

Deno.test("orphanReason: old key missing, another workspace (bytes), or not a job", () => {
  const ws = [Buffer.from("ws1")];
  assert.equal(orphanReason(ws, [0, ""]), "old_missing");
  assert.equal(orphanReason(ws, [3, Buffer.from("ws2")]), "other_workspace");
  assert.equal(orphanReason(ws, [3, Buffer.from("\xEF\xBB\xBFws1", "latin1")]), "other_workspace");
  assert.equal(orphanReason(ws, [1, ""]), "other_workspace");
  assert.equal(orphanReason(ws, [3, Buffer.from("ws1")]), undefined);
});

Deno.test("orphanReason: a name built from two fields needs the old key to hold both values", () => {
  const values = [Buffer.from("t1"), Buffer.from("eu-1")];
  assert.equal(orphanReason(values, [3, Buffer.from("t1"), Buffer.from("eu-1")]), undefined);
  assert.equal(
    orphanReason(values, [3, Buffer.from("t1"), Buffer.from("us-1")]),
    "other_workspace",
  );
  assert.equal(
    orphanReason(values, [3, Buffer.from("t2"), Buffer.from("eu-1")]),
    "other_workspace",
  );
  assert.equal(orphanReason(values, [2, ""]), "other_workspace", "a field missing");
  assert.equal(orphanReason(values, [0, ""]), "old_missing");
});

Deno.test("findingLine: escaped ids and names, never more than the finding", () => {
  const line = JSON.parse(findingLine({
    kind: "field_differs",
    jobId: bytes("id\n1"),
    workspace: "ws",
    fields: ["st\xffatus"],
  }));
  assert.deepEqual(line, {
    job_id: "id\\x0a1",
    workspace: "ws",
    kind: "field_differs",
    fields: ["st\\xffatus"],
  });
});

Deno.test("verdictLine: ready, or not with the reasons and the next step", () => {
  const base = {
    min_parity: 100,
    orphans_checked: true,
    workspace: null,
    duration_seconds: 1,
    resumed: false,
    redis_calls: { calls: 1, mean_ms: 0.1, max_ms: 0.1 },
    report: null,
  };
  const ready = fullReport({ ...base, counts: { ...zeroCounts(), checked: 5, matched: 5 } });
  assert.ok(ready.passed);
  assert.match(verdictLine(ready), /^READY .*no orphans/);
  const missing = fullReport({
    ...base,
    counts: { ...zeroCounts(), checked: 5, matched: 4, missing: 1 },
  });
  assert.match(verdictLine(missing), /^NOT READY: 1 missing\. Next: run `backfill --execute`/);
  const orphan = fullReport({
    ...base,
    counts: { ...zeroCounts(), checked: 5, matched: 5, orphans: 1 },
  });
  assert.equal(orphan.passed, false);
  assert.match(verdictLine(orphan), /1 orphans.*inspect/);
  const lenient = fullReport({
    ...base,
    min_parity: 75,
    counts: { ...zeroCounts(), checked: 4, matched: 3, missing: 1 },
  });
  assert.ok(lenient.passed);
  assert.match(verdictLine(lenient), /within --min-parity/);
});

Deno.test("RecentKeys: a key repeated within the current or the previous chunk is dropped", () => {
  const recent = new RecentKeys();
  const key = (name: string) => Buffer.from(name, "latin1");
  assert.ok(recent.admit(key("ai:jobs:a")));
  assert.ok(!recent.admit(key("ai:jobs:a")), "same chunk");
  recent.rotate();
  assert.ok(!recent.admit(key("ai:jobs:a")), "previous chunk");
  assert.ok(recent.admit(key("ai:jobs:\xff")));
  recent.rotate();
  recent.rotate();
  assert.ok(recent.admit(key("ai:jobs:a")), "forgotten after two chunks");
});

Deno.test("decodePairNew: the script's verdict only for the exact new key it read", () => {
  const old = side({ workspace: Buffer.from("ws"), digest: "" });
  const entry = (code: number, same: number) => [3, "ws", -1, "", code, 5000, same];
  assert.equal(decodePairNew(entry(-1, 0), old, ["ws"]), undefined, "not read");
  assert.equal(decodePairNew(entry(-2, 0), old, ["ws"]), undefined, "on another node");
  assert.equal(compareSides(decodePairNew(entry(3, 1), old, ["ws"])!, old, 0).kind, "ttl");
  const same = decodePairNew([3, "ws", -1, "", 3, -1, 1], old, ["ws"])!;
  assert.equal(compareSides(same, old, 0).kind, "matched");
  const differs = decodePairNew([3, "ws", -1, "", 3, -1, 0], old, ["ws"])!;
  assert.equal(compareSides(differs, old, 0).kind, "fields");
  assert.equal(compareSides(decodePairNew(entry(0, 0), old, ["ws"])!, old, 0).kind, "missing");
  // The client would write other bytes than the script joined: compare on its own.
  const latin = side({ workspace: Buffer.from([0xe9]), digest: "" });
  assert.equal(decodePairNew(entry(3, 1), latin, ["\xe9"]), undefined);
  // With two fields, every value the script joined must be the client's.
  const two = decodeSide([3, "ws", -1, "", 3, -1, 1, "eu-1"], 7);
  assert.deepEqual(two.others, [Buffer.from("eu-1")]);
  assert.equal(
    compareSides(decodePairNew([3, "ws", -1, "", 3, -1, 1], two, ["ws", "eu-1"])!, two, 0).kind,
    "matched",
  );
  assert.equal(decodePairNew(entry(3, 1), two, ["ws", "eu-2"]), undefined);
  assert.equal(decodePairNew(entry(3, 1), old, ["ws", "eu-1"]), undefined, "a value not read");
});

Deno.test("SubBatches: every key once, results in order, several sub-batches in flight", async () => {
  const batches = new SubBatches({
    recheck: 0,
    recheckDelayMs: 0,
    limiter: new SlidingWindowLimiter(0),
    rps: 0,
    callBudgetUs: 250,
    inFlight: 3,
  });
  const keys = Array.from({ length: 1000 }, (_, i) => Buffer.from(`k${i}`));
  let inFlight = 0, most = 0;
  const seen: string[] = [];
  const results = await batches.run(keys, async (sub, timing) => {
    inFlight++;
    most = Math.max(most, inFlight);
    await new Promise((resolve) => setTimeout(resolve, 1));
    inFlight--;
    timing.maxUs = 20 * sub.length; // 20 µs a key: the budget allows ~10 keys a call
    timing.maxKeys = sub.length;
    seen.push(...sub.map(String));
    return sub.map((key) => `${key}!`);
  });
  assert.deepEqual(results, keys.map((key) => `${key}!`));
  assert.equal(new Set(seen).size, keys.length);
  assert.equal(seen.length, keys.length);
  assert.equal(most, 3);
  await assert.rejects(
    batches.run(keys, () => Promise.reject(new Error("boom"))),
    /boom/,
  );
});

/** Keys a call of `ownUsPerKey` may carry as the verify sizes it (the run's sizer, 90%). */
function keysForBudget(budgetUs: number, ownUsPerKey: number): number {
  const sizer = new CallSizer({
    maxCallMs: budgetUs / 1000,
    targetShare: STOPPING_CALL_SHARE,
    perCallMicros: OUTSIDE_SCRIPT_US.perCall,
  });
  sizer.record({ keys: 1, micros: ownUsPerKey + OUTSIDE_SCRIPT_US.perKey });
  return sizer.nextCount();
}

Deno.test("call budget: a call's own-time limit and size leave room for Redis's work around it", () => {
  // 250 µs in Redis = own time + 10 µs a call + 0.75 µs a key.
  assert.equal(ownTimeLimitUs(250, 20), 225);
  assert.equal(ownTimeLimitUs(250, 1000), 1, "never below 1 µs");
  // Sized to 90% of the budget: (225 − 10) / (11.5 + 0.75) keys of 11.5 µs.
  assert.equal(keysForBudget(250, 11.5), 17);
  assert.equal(keysForBudget(250, 1000), 1, "one slow key still goes alone");
  const keys = keysForBudget(250, 11.5);
  assert.ok(keys * (11.5 + OUTSIDE_SCRIPT_US.perKey) + OUTSIDE_SCRIPT_US.perCall <= 225);
  // One guard for every script call, the run's and the verify's: 100 keys.
  assert.equal(keysForBudget(250, 0.1), 100);
});

Deno.test("SubBatches: sized so the slowest call fits the budget with Redis's work around it", async () => {
  const options = {
    recheck: 0,
    recheckDelayMs: 0,
    limiter: new SlidingWindowLimiter(0),
    rps: 0,
    callBudgetUs: 250,
    inFlight: 1,
  };
  const batches = new SubBatches(options);
  const keys = Array.from({ length: 400 }, (_, i) => Buffer.from(`k${i}`));
  const sizes: number[] = [];
  await batches.run(keys, (sub, timing) => {
    sizes.push(sub.length);
    // The sub-batch went to two nodes; the slowest call carried half its keys, 20 µs each.
    timing.maxKeys = Math.ceil(sub.length / 2);
    timing.maxUs = 20 * timing.maxKeys;
    return Promise.resolve(sub.map(() => 0));
  });
  // A call may carry (225 − 10) / 20.75 = 10 keys: a sub-batch 20 (two calls of 10).
  assert.equal(keysForBudget(250, 20), 10);
  assert.deepEqual(sizes.slice(0, 2), [16, 20]);
  assert.ok(sizes.slice(1, -1).every((size) => size === 20), String(sizes));
  // One node, whose call the script stopped half-way (the rest took another call): no split over
  // nodes, so the sub-batch is one call's worth, not two.
  const stopped: number[] = [];
  await new SubBatches({ ...options, inFlight: 1 }).run(keys, (sub, timing) => {
    stopped.push(sub.length);
    timing.nodeKeys = sub.length;
    timing.maxKeys = Math.ceil(sub.length / 2);
    timing.maxUs = 20 * timing.maxKeys;
    return Promise.resolve(sub.map(() => 0));
  });
  assert.deepEqual(stopped.slice(0, 3), [16, 10, 10]);
});

Deno.test("SubBatches: a slower pace shrinks the next sub-batch at once, a faster one regrows it gently", async () => {
  const batches = new SubBatches({
    recheck: 0,
    recheckDelayMs: 0,
    limiter: new SlidingWindowLimiter(0),
    rps: 0,
    callBudgetUs: 250,
    inFlight: 1,
  });
  const keys = Array.from({ length: 400 }, (_, i) => Buffer.from(`k${i}`));
  const sizes: number[] = [];
  await batches.run(keys, (sub, timing) => {
    sizes.push(sub.length);
    // 10 µs a key, except the sixth call: 40 µs a key (wide jobs).
    timing.maxKeys = sub.length;
    timing.maxUs = (sizes.length === 6 ? 40 : 10) * sub.length;
    return Promise.resolve(sub.map(() => 0));
  });
  // 10 µs a key: (225 − 10) / 10.75 = 20 keys. After the slow call the average is 25 µs: 8 keys.
  assert.deepEqual(sizes.slice(0, 7), [16, 20, 20, 20, 20, 20, 8]);
  const after = sizes.slice(6, 12);
  assert.ok(after.every((size, i) => i === 0 || (size >= after[i - 1]! && size < 20)), `${after}`);
});

Deno.test("planRescan: a restarted node and every node whose findings follow it start over", () => {
  const at = (runId: string, reportFrom?: number) => ({ ...freshProgress(runId, 0), reportFrom });
  const nodes = new Map([["a", at("r1", 0)], ["b", at("r2", 40)], ["c", at("r3", 90)]]);
  const now = new Map([["a", "r1"], ["b", "new"], ["c", "r3"]]);
  assert.deepEqual(planRescan(nodes, now, true), {
    restarted: ["b"],
    dropped: ["b", "c"],
    cut: 40,
  });
  assert.deepEqual(planRescan(nodes, now, false), { restarted: ["b"], dropped: ["b"] });
  assert.deepEqual(planRescan(nodes, new Map([["a", "r1"]]), true), { restarted: [], dropped: [] });
  const state = { params: "", nodes, reportBytes: 120, elapsedMs: 0, startedAt: "" };
  assert.deepEqual(applyRescan(state, planRescan(nodes, now, true), now), ["b", "c"]);
  assert.equal(state.reportBytes, 40);
  assert.equal(state.nodes.get("b")!.runId, "new");
  assert.equal(state.nodes.get("a")!.runId, "r1");
});

Deno.test("NodeCalls: --max-latency bounds each master's calls in flight while another client is active", async () => {
  const target = { kind: "standalone" as const, client: {} as Redis, masters: () => [] };
  const node = () => ({ ping: () => Promise.resolve("PONG") }) as unknown as Redis;
  const [a, b] = [node(), node()];
  let shared = true;
  const calls = new NodeCalls(target, { callsInFlight: 1, shared: () => shared });
  let inFlight = 0;
  let most = 0;
  const gates: (() => void)[] = [];
  const call = () =>
    new Promise<void>((resolve) => {
      most = Math.max(most, ++inFlight);
      gates.push(() => (inFlight--, resolve()));
    });
  const settle = () => new Promise((resolve) => setTimeout(resolve, 5));
  const all = Promise.all([...Array(5)].map(() => calls.inWindow(a, call)));
  const other = calls.inWindow(b, call);
  await settle();
  assert.equal(inFlight, 2, "one on each master while shared");
  // Nobody else on Redis: a round trip's worth (2 on a fast link) as the next calls start.
  shared = false;
  gates.shift()!();
  await settle();
  assert.equal(inFlight, 3, "two on the master that is alone now, one on the other");
  while (gates.length > 0) {
    gates.shift()!();
    await settle();
  }
  await Promise.all([all, other]);
  assert.equal(most, 3);
});
