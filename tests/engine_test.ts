/**
 * The engine with fakes, no Redis: the resume decision, --max-keys trimming, checkpoint ordering,
 * an outage mid-batch and a stop signal between sub-batches. Real Redis runs of the same paths are
 * in backfill_test.ts, safety_*_test.ts and cluster_test.ts.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { decideStart, type ResumeInput } from "../src/checkpoint/resume.ts";
import type { NodeCheckpoint } from "../src/checkpoint/resume.ts";
import type { AdmitOptions } from "../src/control/rate_limit.ts";
import type { MigrateOptions, MigrationStrategy, StrategyResult } from "../src/migrate/strategy.ts";
import type { Redis } from "../src/redis/ioredis.ts";
import { type BackfillOptions, runBackfill } from "../src/run/engine.ts";
import type { BatchReport, LogLevel } from "../src/run_events.ts";
import { KeySchema } from "../src/schema.ts";

// ---------------------------------------------------------------------------------------------
// fakes

/** Everything the fakes saw, in order. */
type Event =
  | { kind: "migrate"; keys: string[] }
  | { kind: "save-start"; cursor: string }
  | { kind: "save-done"; cursor: string }
  | { kind: "batch"; scanned: number }
  | { kind: "finish" }
  | { kind: "clear" };

/**
 * A node whose SCAN returns `batches` in order: cursor "0" reads batch 0 and names "1" next, …;
 * the last batch names "0". `scanFails` makes the SCAN from a given cursor fail once.
 */
class FakeNode {
  runId = "runa";
  scans: string[] = [];
  readonly scanFails = new Set<string>();
  constructor(readonly batches: string[][]) {}
  dbsize(): Promise<number> {
    return Promise.resolve(this.batches.flat().length);
  }
  pipeline() {
    let draws = 0;
    const pipeline = {
      randomkey: () => (draws++, pipeline),
      exec: () => Promise.resolve(Array.from({ length: draws }, () => [null, "ai:jobs:x"])),
    };
    return pipeline;
  }
  info(section: string): Promise<string> {
    return Promise.resolve(
      section === "replication" ? "role:master\r\n" : `run_id:${this.runId}\r\n`,
    );
  }
  ping(): Promise<string> {
    return Promise.resolve("PONG");
  }
  scanBuffer(cursor: string): Promise<[Buffer, Buffer[]]> {
    this.scans.push(cursor);
    if (this.scanFails.delete(cursor)) return Promise.reject(new Error("Connection is closed."));
    const index = Number(cursor);
    const next = index + 1 < this.batches.length ? String(index + 1) : "0";
    const keys = (this.batches[index] ?? []).map((id) => Buffer.from(`ai:jobs:${id}`));
    return Promise.resolve([Buffer.from(next), keys]);
  }
  /** The call-clock probe (control/call_clock.ts): time passes inside this fake's scripts. */
  eval(): Promise<number> {
    return Promise.resolve(1);
  }
  /** The engine SCANs through a timed script (control/scanner.ts); it runs `scanBuffer`. */
  script(): Promise<string> {
    return Promise.resolve("scan-sha");
  }
  async callBuffer(command: string, _sha: string, _keys: number, cursor: string): Promise<unknown> {
    assert.equal(command, "EVALSHA");
    return [40, await this.scanBuffer(cursor)];
  }
  get redis(): Redis {
    return this as unknown as Redis;
  }
}

/**
 * Migrates every key as `migrated`; `failOnce` keys throw an outage on their first call,
 * `busyOnce` keys come back as a retryable error (CHANGED) once. A call "runs" when it is made (in call
 * order, like scripts on one connection) and its reply arrives `replyMs` later.
 */
class FakeStrategy implements MigrationStrategy {
  readonly failOnce = new Set<string>();
  readonly busyOnce = new Set<string>();
  readonly signals: (AbortSignal | undefined)[] = [];
  replyMs = 0;
  /** Called as each call runs (before its effects). */
  onCall?: () => void;
  /** Keys per call, as a time-sized strategy says (unset: the 100-key guard). */
  callKeys?: number;
  /** When set, a key copied once is `skipped_exists` when copied again (as Redis answers). */
  copied?: Set<string>;
  /** Calls sent and not yet answered, and the most there ever were. */
  inFlight = 0;
  maxInFlight = 0;
  constructor(
    readonly batchesInFlight: 1 | 2,
    readonly events: Event[],
    readonly checkpoints: FakeCheckpoints,
  ) {}
  init(): Promise<void> {
    return Promise.resolve();
  }
  get nextCallSize(): (() => number) | undefined {
    const keys = this.callKeys;
    return keys === undefined ? undefined : () => keys;
  }
  migrate(keys: readonly Buffer[], options: MigrateOptions): Promise<StrategyResult[]> {
    const ids = keys.map((key) => key.toString().slice("ai:jobs:".length));
    this.signals.push(options.signal);
    this.onCall?.();
    if (ids.some((id) => this.failOnce.delete(id))) {
      return Promise.reject(new Error("Connection is closed."));
    }
    this.events.push({ kind: "migrate", keys: ids });
    const results: StrategyResult[] = ids.map((id) => {
      if (this.busyOnce.delete(id)) {
        return { outcome: "errors", errorCode: "CHANGED", retryable: true };
      }
      if (this.copied?.has(id)) return { outcome: "skipped_exists", workspace: "ws" };
      this.copied?.add(id);
      return { outcome: "migrated", workspace: "ws" };
    });
    this.maxInFlight = Math.max(this.maxInFlight, ++this.inFlight);
    return new Promise((resolve) =>
      setTimeout(() => {
        this.inFlight--;
        resolve(results);
      }, this.replyMs)
    );
  }
}

/** Checkpoints in memory; each save takes `saveMs` to land. */
class FakeCheckpoints {
  readonly prefix = "ai:backfill";
  stored: NodeCheckpoint | undefined;
  constructor(readonly events: Event[], readonly saveMs = 0) {}
  keys() {
    return {
      cursor: "cursor",
      lastJob: "last_job",
      meta: "meta",
      within: "within",
      calls: "calls",
    };
  }
  load(): Promise<NodeCheckpoint | undefined> {
    return Promise.resolve(this.stored);
  }
  /** Cursors whose save fails once as a lost connection would. */
  readonly failSaveOnce = new Set<string>();
  async save(_node: string, checkpoint: NodeCheckpoint): Promise<void> {
    if (this.failSaveOnce.delete(checkpoint.cursor)) throw new Error("Connection is closed.");
    this.events.push({ kind: "save-start", cursor: checkpoint.cursor });
    await new Promise((resolve) => setTimeout(resolve, this.saveMs));
    this.stored = checkpoint;
    this.events.push({ kind: "save-done", cursor: checkpoint.cursor });
  }
  loadTotals(): Promise<undefined> {
    return Promise.resolve(undefined);
  }
  resetTotals(): Promise<void> {
    return Promise.resolve();
  }
  addTotals(): Promise<void> {
    return Promise.resolve();
  }
  finish(_node: string, run: { runId: string; params: string }): Promise<void> {
    this.stored = { cursor: "0", runId: run.runId, params: run.params, finished: true };
    this.events.push({ kind: "finish" });
    return Promise.resolve();
  }
  clear(): Promise<void> {
    this.stored = undefined;
    this.events.push({ kind: "clear" });
    return Promise.resolve();
  }
}

/** A gate that admits at once and counts; `onAdmit` runs before each admission. */
class FakeGate {
  readonly rps = 0;
  admitted = 0;
  onAdmit?: (count: number) => void;
  admit(_n: number, options: AdmitOptions = {}): Promise<number> {
    this.onAdmit?.(++this.admitted);
    options.signal?.throwIfAborted();
    return Promise.resolve(0);
  }
  settle(): Promise<void> {
    return Promise.resolve();
  }
}

const options = (extra: Partial<BackfillOptions> = {}): BackfillOptions => ({
  mode: "execute",
  batch: 10,
  keys: new KeySchema(),
  resetProgress: false,
  maxOutage: 5,
  ...extra,
});

function ids(prefix: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => `${prefix}${i}`);
}

function setup(batches: string[][], batchesInFlight: 1 | 2 = 2, saveMs = 0) {
  const events: Event[] = [];
  const node = new FakeNode(batches);
  const checkpoints = new FakeCheckpoints(events, saveMs);
  const strategy = new FakeStrategy(batchesInFlight, events, checkpoints);
  const gate = new FakeGate();
  const logs: { level: LogLevel; event: string }[] = [];
  const deps = {
    target: { masters: () => [node.redis], nodeName: () => "127.0.0.1:6379" },
    strategy,
    checkpoints,
    gate,
    logger: { log: (level: LogLevel, event: string) => logs.push({ level, event }) },
    observer: {
      onBatch: (batch: BatchReport) =>
        events.push({ kind: "batch", scanned: batch.totals.scanned }),
    },
  };
  return { events, node, strategy, checkpoints, gate, logs, deps };
}

function migrated(events: Event[]): string[] {
  return events.flatMap((e) => e.kind === "migrate" ? e.keys : []);
}

// ---------------------------------------------------------------------------------------------
// the resume decision (pure)

const PARAMS = '{"workspace":null}';
const input = (extra: Partial<ResumeInput> = {}): ResumeInput => ({
  mode: "execute",
  resetProgress: false,
  params: PARAMS,
  runId: "runa",
  node: "127.0.0.1:6379",
  perNode: false,
  prefix: "ai:backfill",
  ...extra,
});
const stored: NodeCheckpoint = {
  cursor: "42",
  lastJob: Buffer.from("job-7"),
  runId: "runa",
  params: PARAMS,
};

Deno.test("resume: a stored checkpoint of the same server and parameters is resumed", () => {
  const decision = decideStart(input({ stored }));
  assert.equal(decision.kind, "start");
  assert.ok(decision.kind === "start");
  assert.equal(decision.cursor, "42");
  assert.equal(decision.clear, false);
  assert.equal(decision.log?.message, "Resuming from stored cursor=42, last_job=job-7");
});

Deno.test("resume: another run_id rescans from 0; other parameters are refused", () => {
  const stale = decideStart(input({ stored, runId: "runb" }));
  assert.ok(stale.kind === "start");
  assert.equal(stale.cursor, "0");
  assert.equal(stale.log?.event, "checkpoint_stale");
  const foreign = decideStart(input({ stored: { ...stored, params: '{"workspace":"a"}' } }));
  assert.ok(foreign.kind === "refuse");
  assert.match(foreign.reason, /made with other parameters/);
});

Deno.test("resume: --cursor overrides, --reset-progress clears, dry-run ignores the checkpoint", () => {
  const flag = decideStart(input({ stored, cursor: "7" }));
  assert.ok(flag.kind === "start");
  assert.deepEqual([flag.cursor, flag.clear, flag.log?.event], ["7", false, "cursor_flag"]);
  const reset = decideStart(input({ stored, resetProgress: true }));
  assert.ok(reset.kind === "start");
  assert.deepEqual([reset.cursor, reset.clear, reset.log?.event], ["0", true, "checkpoint_reset"]);
  const dry = decideStart(input({ stored, mode: "dry-run", runId: "runb" }));
  assert.ok(dry.kind === "start");
  assert.deepEqual([dry.cursor, dry.clear, dry.log?.event], ["0", false, "checkpoint_ignored"]);
  const fresh = decideStart(input());
  assert.ok(fresh.kind === "start");
  assert.deepEqual([fresh.cursor, fresh.log], ["0", undefined]);
});

Deno.test("engine: a refused checkpoint stops the run before any write", async () => {
  const { deps, events, checkpoints } = setup([ids("a", 5)]);
  checkpoints.stored = { ...stored, params: "other" };
  await assert.rejects(() => runBackfill(options(), deps), /made with other parameters/);
  assert.deepEqual(events, []);
});

// ---------------------------------------------------------------------------------------------
// the loop

Deno.test("engine: --max-keys trims the batch it ends in and keeps that batch's start cursor", async () => {
  const { deps, events, checkpoints } = setup([ids("a", 10), ids("b", 10), ids("c", 10)]);
  const summary = await runBackfill(options({ maxKeys: 15 }), deps);
  assert.deepEqual(migrated(events), [...ids("a", 10), ...ids("b", 5)]);
  assert.equal(summary.scanned, 15);
  assert.equal(summary.completed, false);
  // The trimmed batch started at cursor "1": the next run re-reads it whole.
  assert.equal(summary.cursor, "1");
  assert.equal(checkpoints.stored?.cursor, "1");
});

Deno.test("engine: one batch in flight: its checkpoint lands before the next batch's first write", async () => {
  const { deps, events } = setup([ids("a", 10), ids("b", 10), ids("c", 10)], 1, 30);
  const summary = await runBackfill(options(), deps);
  assert.equal(summary.completed, true);
  const order = events.filter((e) => e.kind !== "batch")
    .map((e) => e.kind === "migrate" ? `m:${e.keys[0]}` : `${e.kind}`);
  assert.deepEqual(order, [
    "m:a0",
    "save-start",
    "save-done",
    "m:b0",
    "save-start",
    "save-done",
    "m:c0",
    "finish",
    "clear",
  ]);
});

/** The events as short strings: `m:<first key>`, `save:<cursor>`, `batch:<n>`. */
function trace(events: Event[]): string[] {
  return events.flatMap((e) => {
    if (e.kind === "migrate") return [`m:${e.keys[0]}`];
    if (e.kind === "save-start") return [`save:${e.cursor}`];
    if (e.kind === "batch") return [`batch:${e.scanned}`];
    return e.kind === "clear" || e.kind === "finish" ? [e.kind] : [];
  });
}

Deno.test("engine: two batches in flight: the next goes out before this one's replies; its save lands before the one after", async () => {
  const { deps, events, strategy } = setup([ids("a", 10), ids("b", 10), ids("c", 10)]);
  strategy.replyMs = 30;
  const summary = await runBackfill(options(), deps);
  assert.equal(summary.completed, true);
  assert.deepEqual(trace(events), [
    // b is sent before a's replies are in; each batch is saved as its replies come in.
    "m:a0",
    "m:b0",
    "save:1",
    "batch:10",
    // c goes out once a's save has landed, while b's is on its way: a crash re-reads at most b, c.
    "save:2",
    "m:c0",
    "batch:20",
    // The last batch completes the scan: the node is finished, not saved.
    "batch:30",
    "finish",
    "clear",
  ]);
});

Deno.test("engine: a node never has more calls in flight than its call window (2 on loopback)", async () => {
  // Pipelined calls run back to back in Redis (it runs every command it read from a socket before
  // serving the next client), so the application would wait behind all of them.
  const { deps, strategy } = setup([ids("a", 40), ids("b", 40), ids("c", 40)]);
  strategy.replyMs = 5;
  strategy.callKeys = 4;
  const summary = await runBackfill(options({ batch: 40 }), deps);
  assert.equal(summary.completed, true);
  assert.equal(summary.migrated, 120);
  assert.equal(strategy.maxInFlight, 2);
});

Deno.test("engine: a deep window (--max-latency 0: raw speed) keeps a batch's calls in flight together", async () => {
  const { deps, strategy } = setup([ids("a", 40), ids("b", 40), ids("c", 40)]);
  strategy.replyMs = 5;
  strategy.callKeys = 4;
  const summary = await runBackfill(options({ batch: 40, callWindow: "deep" }), deps);
  assert.equal(summary.migrated, 120);
  assert.ok(strategy.maxInFlight >= 10, `calls in flight: ${strategy.maxInFlight}`);
  assert.ok(strategy.maxInFlight <= 16, `calls in flight: ${strategy.maxInFlight}`);
});

Deno.test("engine: a retryable failure in an earlier sub-batch keeps the checkpoint from passing it", async () => {
  const { deps, events, strategy, checkpoints } = setup([
    ids("a", 150),
    ids("b", 150),
    ids("c", 150),
    ids("d", 150),
  ]);
  // A batch's keys go in byte order: "a1" is in a's first sub-batch of 100; a's last call follows.
  strategy.busyOnce.add("a1");
  const stored: (string | undefined)[] = [];
  strategy.onCall = () => stored.push(checkpoints.stored?.cursor);
  await runBackfill(options({ batch: 150 }), deps);
  const order = trace(events);
  // Until a1's retry ran, nothing was stored past a's start.
  const retry = events.findIndex((e) => e.kind === "migrate" && e.keys[0] === "a1");
  assert.ok(retry > 0);
  const callsBeforeRetry = events.slice(0, retry).filter((e) => e.kind === "migrate").length;
  assert.deepEqual(new Set(stored.slice(0, callsBeforeRetry + 1)), new Set([undefined]));
  // a's checkpoint is stored after the retry, and before the batch after next (c) goes out.
  assert.ok(order.indexOf("save:1") > order.indexOf("m:a1"), order.join(" "));
  assert.ok(order.indexOf("save:1") < order.indexOf("m:c0"), order.join(" "));
  assert.ok(order.indexOf("save:2") < order.indexOf("m:d0"), order.join(" "));
  assert.equal(migrated(events).filter((id) => id === "a1").length, 2);
});

Deno.test("engine: an outage mid-batch waits for the node and re-reads that batch from the checkpoint", async () => {
  const { deps, events, strategy, logs, node } = setup([ids("a", 10), ids("b", 10), ids("c", 10)]);
  strategy.failOnce.add("b3");
  const summary = await runBackfill(options(), deps);
  assert.equal(summary.completed, true);
  // Batch b was read again from its start cursor "1"; its first sub-batch had no partial effect.
  assert.deepEqual(node.scans.filter((c) => c === "1").length, 2);
  assert.deepEqual(new Set(migrated(events)).size, 30);
  assert.equal(summary.scanned, 30);
  assert.deepEqual(
    logs.filter((l) => l.event.startsWith("redis_")).map((l) => l.event),
    ["redis_lost", "redis_back"],
  );
});

Deno.test("engine: a save lost with the connection: the batch is read again and its copies count once", async () => {
  const { deps, strategy, checkpoints, node } = setup([ids("a", 10), ids("b", 10), ids("c", 10)]);
  strategy.copied = new Set();
  checkpoints.failSaveOnce.add("1");
  const summary = await runBackfill(options(), deps);
  assert.equal(summary.completed, true);
  // Batch a was read again from cursor "0": its keys exist, and they are this run's copies.
  assert.deepEqual(node.scans.filter((c) => c === "0").length, 2);
  assert.equal(summary.migrated, 30);
  assert.equal(summary.skipped_exists, 0);
});

Deno.test("engine: a node that comes back as another server is rescanned from cursor 0", async () => {
  const { deps, node, logs } = setup([ids("a", 10), ids("b", 10)]);
  node.scanFails.add("1");
  const scanBuffer = node.scanBuffer.bind(node);
  node.scanBuffer = (cursor: string) => {
    if (cursor === "1" && node.scanFails.has("1")) node.runId = "runb";
    return scanBuffer(cursor);
  };
  const summary = await runBackfill(options(), deps);
  assert.equal(summary.completed, true);
  assert.deepEqual(node.scans, ["0", "1", "0", "1"]);
  assert.ok(logs.some((l) => l.event === "redis_restarted"));
});

Deno.test("engine: one node's failure stops the others; what they had in flight settles and is counted before the run ends", async () => {
  const { deps, events, strategy } = setup([ids("a", 10)], 1);
  strategy.replyMs = 30;
  // Node "lost" fails at once and never answers again (past --max-outage); node "busy" copies.
  const lost = new FakeNode([ids("x", 10)]);
  lost.scanFails.add("0");
  lost.ping = () => Promise.reject(new Error("Connection is closed."));
  const busy = new FakeNode(Array.from({ length: 50 }, (_, i) => ids(`b${i}-`, 10)));
  const names = new Map([[lost.redis, "10.0.0.1:6379"], [busy.redis, "10.0.0.2:6379"]]);
  const sentAfterStop: string[][] = [];
  const migrate = strategy.migrate.bind(strategy);
  strategy.migrate = (keys, migrateOptions) => {
    if (migrateOptions.signal?.aborted) sentAfterStop.push(keys.map(String));
    return migrate(keys, migrateOptions);
  };
  const failed = await runBackfill(options({ maxOutage: 0.2 }), {
    ...deps,
    target: { masters: () => [lost.redis, busy.redis], nodeName: (node) => names.get(node)! },
  }).then(() => undefined, (error: Error & { summary?: { migrated: number } }) => error);
  assert.match(String(failed), /lost Redis at 10\.0\.0\.1:6379 for longer than --max-outage/);
  // Nothing was still in flight when the run ended, nothing was sent after the stop, and the
  // summary counts every key that was copied (also the ones in flight at the failure).
  assert.equal(strategy.inFlight, 0);
  assert.deepEqual(sentAfterStop, []);
  assert.ok(migrated(events).length > 0 && migrated(events).length < 500);
  assert.equal(failed?.summary?.migrated, migrated(events).length);
});

Deno.test("engine: a stop signal between sub-batches sends no more and keeps the batch's start cursor", async () => {
  const { deps, events, gate, checkpoints, strategy } = setup([ids("a", 10), ids("b", 250)]);
  const stop = new AbortController();
  // Sub-batches of 100 keys: a is one, b three; the stop comes at the fourth admission.
  gate.onAdmit = (count) => count === 4 && stop.abort(new Error("SIGINT"));
  const summary = await runBackfill(
    options({ batch: 250 }),
    { ...deps, signal: stop.signal },
  );
  assert.equal(summary.completed, false);
  assert.equal(summary.cursor, "1");
  assert.equal(checkpoints.stored?.cursor, "1");
  assert.equal(migrated(events).length, 10 + 200);
  // Passed on (within the run's own stop, which a failure of another node also aborts).
  assert.ok(
    strategy.signals.every((signal) => signal?.aborted && signal.reason === stop.signal.reason),
    "signal passed on",
  );
});
