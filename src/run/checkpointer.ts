/**
 * The checkpointer: when a node's checkpoint is saved, and how. The checkpoint rule, in one place:
 *
 * **A batch's checkpoint is saved by the engine, in one fenced script call with the running
 * totals, once every key of the batch is final (its retries done); a node sends no batch while
 * more than `batchesInFlight` − 1 batches sent before it are unsaved.** A node keeps two batches in
 * flight on a standalone server (one on a cluster: `MigrationStrategy.batchesInFlight`):
 * batch k's save goes out as soon as its replies are in, between batch k+1's calls (Redis never
 * waits for the client), and batch k+2 goes out once it has landed. So the stored cursor never
 * passes a key still to be retried, and a crash (even `kill -9`) re-reads at most the batches in
 * flight. Copies are idempotent, so a re-read is harmless.
 *
 * The {@linkcode Checkpointer} keeps each node's counts not stored yet, so a failed save loses none.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import {
  type BatchPosition,
  decodePosition,
  encodePosition,
} from "../checkpoint/batch_position.ts";
import type { NodeCheckpoint } from "../checkpoint/resume.ts";
import {
  INVALID_REASONS,
  type InvalidReason,
  type KeyResult,
  type Outcome,
  OUTCOMES,
} from "../outcome.ts";
import type { ScanBatch } from "../control/scanner.ts";
import type { Cluster, Redis } from "../redis/ioredis.ts";
import { type CarriedTotals, EARLIER_RUNS, type RunMode } from "../run_events.ts";
import { refusedAsFenced, type RunLock } from "../safety/lock.ts";
import type { KeySchema } from "../schema.ts";
import type { KeyRetry, SentBatch } from "./copier.ts";

/** Where one node's scan stands: what its checkpoint says, or will (`within` is at `committed`). */
export interface NodeState extends Pick<NodeCheckpoint, "runId" | "lastJob" | "within"> {
  node: Redis;
  /** `host:port` at the start (the key of the resume cursor). */
  name: string;
  nodeId: string;
  /** The cursor the next scan starts from. */
  committed: string;
  startFraction: number;
  lastSave: number;
  /** Counts not yet in the stored totals (execute only). */
  unsaved: TotalsDelta;
  outageSince?: number;
}

/** A batch sent and not yet finished. */
export interface Flight extends SentBatch {
  batch: ScanBatch;
  /** The keys sent (a `--max-keys` trim may have cut the batch). */
  keys: Buffer[];
  trimmed: boolean;
  /** performance.now() when it was sent. */
  started: number;
  /** Where a stored position let this (first) batch start inside, if it did. */
  resumedFrom?: BatchPosition;
  /** Counted and saved, in batch order, as its replies come in. */
  end?: Promise<BatchEnd>;
  /** Its results are counted (or left to its re-read, which counts them). */
  counted?: boolean;
}

/** Where a finished batch leaves its node's scan, and whether the engine saves it now. */
export interface BatchEnd {
  resumeAt: string;
  scanDone: boolean;
  save: boolean;
}

/**
 * A batch cut short (a stop, `--max-keys`) is re-read from its start next time, so nothing of it
 * is lost; a finished one moves the cursor on. A save is due after any processed key, or after a
 * second of empty batches.
 */
export function batchEnd(input: {
  flight: Pick<Flight, "batch" | "complete" | "trimmed">;
  processed: number;
  msSinceSave: number;
  execute: boolean;
}): BatchEnd {
  const { batch, complete, trimmed } = input.flight;
  const finished = complete && !trimmed;
  const resumeAt = finished ? batch.next : batch.cursor;
  const scanDone = finished && batch.next === "0";
  const due = input.processed > 0 || input.msSinceSave > 1000;
  return { resumeAt, scanDone, save: input.execute && !scanDone && due };
}

/** Waits for the oldest batches until `keep` are in flight; whether the last one ended the scan. */
export async function settleFlights(flights: Flight[], keep: number): Promise<boolean | undefined> {
  let scanDone: boolean | undefined;
  while (flights.length > keep) scanDone = (await flights.shift()!.end!).scanDone;
  return scanDone;
}

export type RunCheckpointStore = Omit<CheckpointStore, "keys">;

interface CheckpointerOptions {
  store: RunCheckpointStore;
  mode: RunMode;
  /** Stored with every checkpoint: a resume with other parameters is refused. */
  params: string;
  /** Waits out OOM: Redis refusing writes is no reason to lose the checkpoint. */
  retry: Pick<KeyRetry, "untilWritable">;
}

/** Checkpoints and running totals of every node of one run. */
export class Checkpointer {
  readonly #options: CheckpointerOptions;

  constructor(options: CheckpointerOptions) {
    this.#options = options;
  }

  /** Counts a batch's results toward the node's totals (stored with its next checkpoint). */
  count(state: NodeState, results: readonly KeyResult[]): void {
    if (this.#options.mode === "execute") state.unsaved.add(results);
  }

  /**
   * Stores the node's checkpoint at `cursor` with its unsaved totals and `batch`'s. When the save
   * fails, the batch's counts are not kept: its re-read counts it.
   */
  async save(state: NodeState, cursor: string, batch: readonly KeyResult[]): Promise<void> {
    const { lastJob, within, runId } = state;
    const checkpoint = { cursor, lastJob, within, runId, params: this.#options.params };
    const save = (totals: ReadonlyMap<string, number>) =>
      this.#options.store.save(state.nodeId, checkpoint, totals);
    await this.#write(state, save, batch);
    state.lastSave = performance.now();
  }

  /** The node's scan completed: marked finished in this pass, its last counts join the totals. */
  async complete(state: NodeState): Promise<void> {
    if (this.#options.mode !== "execute") return;
    const run = { runId: state.runId, params: this.#options.params };
    await this.#write(state, (totals) => this.#options.store.finish(state.nodeId, run, totals));
  }

  /** Every node of the run's pass completed: their checkpoints go, the next run starts over. */
  async passComplete(states: readonly NodeState[]): Promise<void> {
    if (this.#options.mode !== "execute") return;
    for (const state of states) {
      await this.#options.retry.untilWritable(
        state.name,
        () => this.#options.store.clear(state.nodeId),
      );
    }
  }

  /** One write with the unsaved counts and `batch`'s; a failed write leaves them to the next. */
  async #write(
    state: NodeState,
    write: (totals: ReadonlyMap<string, number>) => Promise<void>,
    batch: readonly KeyResult[] = [],
  ): Promise<void> {
    const earlier = state.unsaved.take();
    const totals = new TotalsDelta(earlier).add(batch).take();
    try {
      await this.#options.retry.untilWritable(state.name, () => write(totals));
    } catch (error) {
      state.unsaved.restore(earlier);
      throw error;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// the store
/*
 * Under the progress key P: `P:cursor` and `P:last_job` (the names the runbook reads), `P:within`,
 * and `P:meta` with the node's `run_id` (a restarted node's cursor is meaningless) and the run
 * parameters. A cluster keeps one set per master, `{P}:cursor:<node-id>`, …: the hash tag puts
 * them, the totals and the run locks in one slot, so one script call writes a save and its totals,
 * fenced by the locks. The totals are per outcome, not per workspace: with thousands of tenants
 * one HINCRBY per workspace per save would be a write for nearly every copied key.
 */

/** The meta field that marks a node finished in the current pass. */
const FINISHED_FIELD = "finished";

/** The keys of one node's checkpoint; `calls` is what a lost copy call created (in_server.ts). */
export type CheckpointKeys = Record<"cursor" | "lastJob" | "meta" | "within" | "calls", string>;

/** The parameters that give a cursor its meaning, as a stable string. */
export function runParams(
  parts: KeySchema["fingerprint"] & { workspace?: string; match: string },
): string {
  return JSON.stringify({
    workspace: parts.workspace ?? null,
    pattern: parts.pattern,
    match: parts.match,
    // Only a mapping other than the default is named, so the default's checkpoints stay valid.
    ...(parts.mapping === undefined ? {} : { mapping: parts.mapping }),
    ...(parts.patterns === undefined ? {} : { patterns: parts.patterns }),
  });
}

/** Reads and writes checkpoints. `node` is "" on a standalone server, the node id in a cluster. */
export class CheckpointStore {
  readonly prefix: string;
  readonly #client: Redis | Cluster;
  readonly #totalsKey: string;
  readonly #locks: readonly Pick<RunLock, "key" | "value">[];

  constructor(
    client: Redis | Cluster,
    prefix: string,
    options: { cluster?: boolean; locks?: readonly Pick<RunLock, "key" | "value">[] } = {},
  ) {
    this.#client = client;
    this.prefix = prefix;
    this.#totalsKey = options.cluster ? `{${prefix}}:totals` : `${prefix}:totals`;
    this.#locks = options.locks ?? [];
  }

  /**
   * A node's key names. Redis hashes only what lies between the first `{` and the next `}`, so
   * every cluster key shares the `{P}` slot whatever braces P itself contains.
   */
  keys(node: string): CheckpointKeys {
    const key = (name: string) =>
      node === "" ? `${this.prefix}:${name}` : `{${this.prefix}}:${name}:${node}`;
    return {
      cursor: key("cursor"),
      lastJob: key("last_job"),
      meta: key("meta"),
      within: key("within"),
      calls: key("calls"),
    };
  }

  /** The stored checkpoint, or `undefined` when there is no cursor. */
  async load(node: string): Promise<NodeCheckpoint | undefined> {
    const keys = this.keys(node);
    const [cursor, lastJob, meta, within] = await Promise.all([
      this.#client.get(keys.cursor),
      this.#client.getBuffer(keys.lastJob),
      this.#client.hgetall(keys.meta),
      this.#client.getBuffer(keys.within),
    ]);
    if (cursor === null) return undefined;
    return {
      cursor,
      lastJob: lastJob ?? undefined,
      within: decodePosition(within),
      runId: meta.run_id ?? "",
      params: meta.params ?? "",
      finished: meta[FINISHED_FIELD] === "1",
    };
  }

  /** Stores a checkpoint and adds `totals` to the running totals, in one call. */
  async save(
    node: string,
    checkpoint: NodeCheckpoint,
    totals: ReadonlyMap<string, number> = new Map(),
  ): Promise<void> {
    const keys = this.keys(node);
    const writes = new Writes()
      .add("SET", keys.cursor, checkpoint.cursor)
      .add("HSET", keys.meta, ...metaFields(checkpoint))
      // A cursor being saved is a scan under way: the node is not finished (any more).
      .add("HDEL", keys.meta, FINISHED_FIELD);
    if (checkpoint.lastJob !== undefined) writes.add("SET", keys.lastJob, checkpoint.lastJob);
    if (checkpoint.within === undefined) writes.add("DEL", keys.within);
    else writes.add("SET", keys.within, encodePosition(checkpoint.within));
    await this.#write(writes, totals);
  }

  /**
   * Marks a node's scan completed in this pass (the next run skips it until the pass completes or
   * `--reset-progress`) and adds its last `totals`, in one call.
   */
  async finish(
    node: string,
    run: { runId: string; params: string },
    totals: ReadonlyMap<string, number> = new Map(),
  ): Promise<void> {
    const keys = this.keys(node);
    const writes = new Writes()
      .add("SET", keys.cursor, "0")
      .add("DEL", keys.lastJob, keys.within)
      .add("HSET", keys.meta, ...metaFields(run), FINISHED_FIELD, "1");
    await this.#write(writes, totals);
  }

  /** Removes a node's checkpoint; the totals stay (they are the migration's). */
  async clear(node: string): Promise<void> {
    const keys = this.keys(node);
    await this.#write(
      new Writes().add("DEL", keys.cursor, keys.lastJob, keys.meta, keys.within, keys.calls),
    );
  }

  /** The migration's running totals, or `undefined` when none are stored. */
  async loadTotals(): Promise<CarriedTotals | undefined> {
    return parseTotals(await this.#client.hgetall(this.#totalsKey));
  }

  /** Forgets the running totals (`--reset-progress`). */
  async resetTotals(): Promise<void> {
    await this.#write(new Writes().add("DEL", this.#totalsKey));
  }

  /**
   * Runs `writes`, then HINCRBY of `totals`, as one script call fenced by the run's locks.
   *
   * @throws {SafetyRefusal} when Redis refused it (`FENCED`): this runner lost its lock.
   */
  async #write(writes: Writes, totals: ReadonlyMap<string, number> = new Map()): Promise<void> {
    const args = totalsArgs(totals);
    for (let i = 0; i < args.length; i += 2) {
      writes.add("HINCRBY", this.#totalsKey, args[i]!, args[i + 1]!);
    }
    // The totals key routes the call on a cluster: every key here shares the `{P}` slot.
    const keys = [this.#totalsKey, ...this.#locks.map((lock) => lock.key)];
    const argv = [...this.#locks.map((lock) => lock.value), ...writes.args];
    try {
      await this.#client.eval(FENCED_WRITES, keys.length, ...keys, ...argv);
    } catch (error) {
      throw refusedAsFenced(error) ?? error;
    }
  }
}

function metaFields(run: { runId: string; params: string }): string[] {
  return ["run_id", run.runId, "params", run.params, "updated_at", new Date().toISOString()];
}

/** Commands for {@linkcode FENCED_WRITES}, flat: name, argument count, arguments…; in order. */
class Writes {
  readonly args: (string | Buffer)[] = [];

  add(command: string, ...args: (string | Buffer)[]): this {
    this.args.push(command, String(args.length), ...args);
    return this;
  }
}

/**
 * KEYS: a key of the store's slot, then the run's locks; ARGV: each lock's value, then the writes,
 * of which none is made unless every lock still holds its value. No shebang: Redis 6.2 runs it,
 * and a full Redis refuses its first write (OOM) before anything is written, as a MULTI would.
 */
const FENCED_WRITES = `
for i = 2, #KEYS do
  if redis.call("GET", KEYS[i]) ~= ARGV[i - 1] then
    return redis.error_reply("FENCED the run lock " .. KEYS[i] ..
      " is no longer held by this runner (taken over, or expired)")
  end
end
local i = #KEYS
while i < #ARGV do
  local n = tonumber(ARGV[i + 1])
  redis.call(ARGV[i], unpack(ARGV, i + 2, i + 1 + n))
  i = i + 2 + n
end
return 1
`;

// ---------------------------------------------------------------------------------------------
// the running totals: `P:totals`, one field per outcome (`migrated:*`) and per invalid-key
// reason (`invalid_reason:not_hash`). The one place that spells the fields.

const REASON_PREFIX = "invalid_reason:";

/** The totals field of an outcome (every workspace together). */
export function totalsField(outcome: Outcome): string {
  return `${outcome}:${EARLIER_RUNS}`;
}

/** What one node counted since its last checkpoint save; taken (and emptied) by each save. */
export class TotalsDelta {
  #counts = new Map<string, number>();

  constructor(counts: ReadonlyMap<string, number> = new Map()) {
    this.restore(counts);
  }

  add(results: readonly KeyResult[]): this {
    for (const result of results) {
      this.#inc(totalsField(result.outcome), 1);
      if (result.outcome === "skipped_invalid" && result.invalidReason !== undefined) {
        this.#inc(REASON_PREFIX + result.invalidReason, 1);
      }
    }
    return this;
  }

  /** The counts so far (field → count), leaving the delta empty. */
  take(): Map<string, number> {
    const taken = this.#counts;
    this.#counts = new Map();
    return taken;
  }

  /** Puts counts back that a failed save did not store. */
  restore(taken: ReadonlyMap<string, number>): void {
    for (const [field, count] of taken) this.#inc(field, count);
  }

  #inc(field: string, count: number): void {
    this.#counts.set(field, (this.#counts.get(field) ?? 0) + count);
  }
}

/** The HINCRBY arguments of `counts` as one flat list: field, count, …. */
export function totalsArgs(counts: ReadonlyMap<string, number>): string[] {
  const args: string[] = [];
  for (const [field, count] of counts) if (count > 0) args.push(field, String(count));
  return args;
}

/** The stored totals hash as the metrics take them; `undefined` when nothing is stored. */
export function parseTotals(hash: Readonly<Record<string, string>>): CarriedTotals | undefined {
  const carried: CarriedTotals = { byOutcome: {}, invalidByReason: {} };
  let any = false;
  for (const [field, raw] of Object.entries(hash)) {
    const count = Number(raw);
    if (!Number.isSafeInteger(count) || count <= 0) continue;
    if (field.startsWith(REASON_PREFIX)) {
      const reason = field.slice(REASON_PREFIX.length);
      if (!(INVALID_REASONS as readonly string[]).includes(reason)) continue;
      carried.invalidByReason![reason as InvalidReason] = count;
      any = true;
      continue;
    }
    const colon = field.indexOf(":");
    const outcome = field.slice(0, colon) as Outcome;
    if (colon < 0 || !OUTCOMES.includes(outcome)) continue;
    const byWorkspace = (carried.byOutcome[outcome] ?? {}) as Record<string, number>;
    byWorkspace[field.slice(colon + 1)] = count;
    carried.byOutcome[outcome] = byWorkspace;
    any = true;
  }
  return any ? carried : undefined;
}

/**
 * The earlier runs' totals, which a run's metrics continue from. Dry-run neither reads nor writes
 * them; `--reset-progress` forgets them.
 */
export async function carriedTotals(
  store: Pick<RunCheckpointStore, "loadTotals" | "resetTotals">,
  run: { mode: RunMode; resetProgress: boolean },
): Promise<CarriedTotals | undefined> {
  if (run.mode !== "execute") return undefined;
  if (!run.resetProgress) return await store.loadTotals();
  await store.resetTotals();
  return undefined;
}
