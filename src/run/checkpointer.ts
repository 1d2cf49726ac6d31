/**
 * The checkpointer: when a node's checkpoint is saved, and how. The checkpoint rule, in one place:
 *
 * **A batch's checkpoint is saved by the engine, in one fenced script call with the running
 * totals, once every key of the batch is final (its retries done); a node sends no batch while
 * more than {@linkcode batchWindow} − 1 batches sent before it are unsaved.** A node keeps two
 * batches in flight on a standalone server (one on a cluster,
 * {@linkcode MigrationStrategy.batchesInFlight}): batch k+1 is sent while batch k's replies are
 * still coming; batch k's save is sent as soon as its replies are in (between k+1's calls on the
 * connection, so Redis never waits for the client), and batch k+2 goes out once it has landed. So
 * the stored cursor never passes a key still to be retried, and a crash (even `kill -9`) re-reads at
 * most the batches in flight: two on a standalone server, one on a cluster. Copies are idempotent,
 * so a re-read is harmless.
 *
 * Below the rule: the store, which knows the checkpoint's keys and writes each save in one fenced
 * script call; the {@linkcode Checkpointer} keeps each node's counts that are not stored yet, so a
 * failed save loses none of them.
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
import type { MigrationStrategy } from "../migrate/strategy.ts";
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
import type { NodeState } from "./outage.ts";
import type { KeyRetry, SentBatch } from "./copier.ts";

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
  /** Its finish: counted, checkpoint saved (started as its replies come in, in batch order). */
  end?: Promise<BatchEnd>;
  /** True once its results are counted (or left to its re-read, which counts them). */
  counted?: boolean;
}

/** Batches a node keeps in flight: the rule's window (see the module comment). */
export function batchWindow(strategy: Pick<MigrationStrategy, "batchesInFlight">): number {
  return strategy.batchesInFlight ?? 1;
}

/** Where a finished batch leaves its node's scan. */
export interface BatchEnd {
  /** The cursor the node resumes from. */
  resumeAt: string;
  /** The scan is complete. */
  scanDone: boolean;
  /** The engine stores the checkpoint now. */
  save: boolean;
}

/**
 * Decides where a batch leaves the scan. A batch cut short (a stop, `--max-keys`) is re-read from
 * its start next time (idempotent), so nothing of it is lost; a finished one moves the cursor on.
 * A checkpoint is due after any processed key, or after a second of empty batches.
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

/**
 * Waits for the oldest batches' finishes, in order, until at most `keep` are in flight. Resolves
 * to whether the last batch finished completed the scan (undefined when none finished).
 */
export async function settleFlights(
  flights: Flight[],
  keep: number,
): Promise<boolean | undefined> {
  let scanDone: boolean | undefined;
  while (flights.length > keep) scanDone = (await flights.shift()!.end!).scanDone;
  return scanDone;
}

/** The store operations a run uses. */
export type RunCheckpointStore = Pick<
  CheckpointStore,
  | "prefix"
  | "load"
  | "save"
  | "finish"
  | "clear"
  | "loadTotals"
  | "resetTotals"
>;

/** Options of {@linkcode Checkpointer}. */
export interface CheckpointerOptions {
  store: RunCheckpointStore;
  mode: RunMode;
  /** The run parameters stored with every checkpoint (a resume with others is refused). */
  params: string;
  /** Waits out OOM while saving (Redis refusing writes is no reason to lose the checkpoint). */
  retry: Pick<KeyRetry, "untilWritable">;
}

/** Checkpoints and running totals of every node of one run. */
export class Checkpointer {
  readonly #options: CheckpointerOptions;
  /** Each node's counts not yet in the stored totals (execute only). */
  readonly #unsaved = new Map<string, TotalsDelta>();

  constructor(options: CheckpointerOptions) {
    this.#options = options;
  }

  /** Counts a batch's results toward the node's totals (stored with its next checkpoint). */
  count(state: NodeState, results: readonly KeyResult[]): void {
    if (this.#options.mode === "execute") this.#unsavedOf(state).add(results);
  }

  /**
   * Stores the node's checkpoint at `cursor` with the totals counted since its last save and the
   * `batch` it ends. When the save fails, the batch's counts are not kept: its re-read counts it.
   */
  async save(state: NodeState, cursor: string, batch: readonly KeyResult[] = []): Promise<void> {
    const { lastJob, within, runId } = state;
    const checkpoint = { cursor, lastJob, within, runId, params: this.#options.params };
    const save = (totals: ReadonlyMap<string, number>) =>
      this.#options.store.save(state.nodeId, checkpoint, totals);
    await this.#write(state, save, batch);
    state.lastSave = performance.now();
  }

  /**
   * The node's scan completed: it is marked finished in this pass (a later run of the pass does
   * not scan it again), its last counts join the totals.
   */
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

  /**
   * One write with the node's unsaved counts (and `batch`'s), waiting out OOM; the unsaved counts a
   * failed write did not store go with the next one.
   */
  async #write(
    state: NodeState,
    write: (totals: ReadonlyMap<string, number>) => Promise<void>,
    batch: readonly KeyResult[] = [],
  ): Promise<void> {
    const unsaved = this.#unsavedOf(state);
    const earlier = unsaved.take();
    const totals = new TotalsDelta();
    totals.restore(earlier);
    if (this.#options.mode === "execute") totals.add(batch);
    const counts = totals.take();
    try {
      await this.#options.retry.untilWritable(state.name, () => write(counts));
    } catch (error) {
      unsaved.restore(earlier);
      throw error;
    }
  }

  #unsavedOf(state: NodeState): TotalsDelta {
    let delta = this.#unsaved.get(state.name);
    if (delta === undefined) this.#unsaved.set(state.name, delta = new TotalsDelta());
    return delta;
  }
}

// ---------------------------------------------------------------------------------------------
// the store
/*
 * Checkpoints in Redis, under the progress key P: `P:cursor` and `P:last_job` (the names the
 * runbook reads), plus `P:meta`, a hash with the node's `run_id` (a restarted node's cursor is meaningless) and the
 * run parameters (a checkpoint made for another workspace or pattern is not silently reused).
 * A cluster keeps one set per master, named by the master's node id and wrapped in a hash tag so
 * that every checkpoint key of the run lands in one slot (one script call can write them):
 * `{P}:cursor:<node-id>`, `{P}:last_job:<node-id>`, `{P}:meta:<node-id>`.
 * The migration's running totals (below) live beside them in `P:totals` (`{P}:totals`) and
 * move in the same call as each save. The run locks live in that slot too, so every write here is
 * fenced by them: a runner whose lock expired or was taken over has its writes refused by Redis.
 *
 * A node whose scan completed while others of the run's pass have not is kept finished: cursor
 * `0` and `finished` = `1` in its meta, so the next run (`--max-keys` loops, a stopped run) does
 * not scan it again; the run that completes the pass clears every node's checkpoint.
 *
 * The running totals of one migration are kept with its checkpoint so the metrics of a resumed run
 * continue where the last run stopped: a hash `<P>:totals` (`{P}:totals` on a cluster) with one
 * field per outcome (`migrated:*`) and one per invalid-key reason (`invalid_reason:not_hash`). Each
 * checkpoint save adds what the node counted since its last save, with HINCRBY in the same
 * fenced call, so the totals always describe the work up to the stored cursor. The one place that
 * spells the fields.
 *
 * Per outcome, not per workspace: with thousands of tenants a 500-key batch touches hundreds of
 * workspaces, and one HINCRBY per workspace per save would be a write (and its replication) for
 * nearly every copied key. The carried part therefore shows under {@linkcode EARLIER_RUNS}, the
 * per-workspace series count from this run's start, and every sum over workspaces is the
 * migration's total.
 */

/** The meta field that marks a node finished in the current pass. */
const FINISHED_FIELD = "finished";

/** The keys of one node's checkpoint. */
export interface CheckpointKeys {
  cursor: string;
  lastJob: string;
  meta: string;
  within: string;
  /** What the copy calls of a run created, for a call whose reply was lost (in_server.ts). */
  calls: string;
}

/** The parameters that give a cursor its meaning, as a stable string. */
export function runParams(
  parts: {
    workspace?: string;
    pattern: string;
    match: string;
    mapping?: string;
    patterns?: Record<string, string>;
  },
): string {
  return JSON.stringify({
    workspace: parts.workspace ?? null,
    pattern: parts.pattern,
    match: parts.match,
    // Only another mapping than the default one is named (the default's checkpoints stay valid),
    // with the rules of the fields after the first when its new names read more than one.
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

  /**
   * `cluster`: keys carry the `{P}` hash tag (one slot for all of a run's checkpoint keys).
   * `locks`: the run locks every write is fenced by (they live in the same slot as the store).
   */
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
   * Key names for a node: `P:cursor`, … on a standalone server (node ""), `{P}:cursor:<node>`, … in
   * a cluster. Redis hashes only what lies between the first `{` and the next `}`; every cluster key
   * starts with `{P}`, so they share that tag (and slot) whatever braces P itself contains.
   */
  keys(node: string): CheckpointKeys {
    if (node === "") {
      return {
        cursor: `${this.prefix}:cursor`,
        lastJob: `${this.prefix}:last_job`,
        meta: `${this.prefix}:meta`,
        within: `${this.prefix}:within`,
        calls: `${this.prefix}:calls`,
      };
    }
    const tag = `{${this.prefix}}`;
    return {
      cursor: `${tag}:cursor:${node}`,
      lastJob: `${tag}:last_job:${node}`,
      meta: `${tag}:meta:${node}`,
      within: `${tag}:within:${node}`,
      calls: `${tag}:calls:${node}`,
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

  /**
   * Stores a checkpoint atomically (one script call: a crash never leaves cursor and meta apart),
   * with the totals counted since the node's last save added to the migration's running totals.
   */
  async save(
    node: string,
    checkpoint: NodeCheckpoint,
    totals: ReadonlyMap<string, number> = new Map(),
  ): Promise<void> {
    const keys = this.keys(node);
    const writes = new Writes()
      .add("SET", keys.cursor, checkpoint.cursor)
      .add(
        "HSET",
        keys.meta,
        "run_id",
        checkpoint.runId,
        "params",
        checkpoint.params,
        "updated_at",
        new Date().toISOString(),
      )
      // A cursor being saved is a scan under way: the node is not finished (any more).
      .add("HDEL", keys.meta, FINISHED_FIELD);
    if (checkpoint.lastJob !== undefined) writes.add("SET", keys.lastJob, checkpoint.lastJob);
    if (checkpoint.within === undefined) writes.add("DEL", keys.within);
    else writes.add("SET", keys.within, encodePosition(checkpoint.within));
    await this.#write(this.#withTotals(writes, totals));
  }

  /**
   * Marks a node's scan completed in this pass (cursor `0`, `finished` in its meta), adding its
   * last counts to the running totals in the same call. The next run skips the node until the
   * pass completes ({@linkcode clear} of every node) or `--reset-progress`.
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
      .add(
        "HSET",
        keys.meta,
        "run_id",
        run.runId,
        "params",
        run.params,
        "updated_at",
        new Date().toISOString(),
        FINISHED_FIELD,
        "1",
      );
    await this.#write(this.#withTotals(writes, totals));
  }

  /**
   * Removes a node's checkpoint (its pass is complete: the next run starts from 0), adding its last
   * counts to the running totals in the same call. The totals stay: they are the migration's,
   * until `--reset-progress`.
   */
  async clear(node: string, totals: ReadonlyMap<string, number> = new Map()): Promise<void> {
    const keys = this.keys(node);
    const writes = new Writes()
      .add("DEL", keys.cursor, keys.lastJob, keys.meta, keys.within, keys.calls);
    await this.#write(this.#withTotals(writes, totals));
  }

  /** The migration's running totals, or `undefined` when none are stored. */
  async loadTotals(): Promise<CarriedTotals | undefined> {
    return parseTotals(await this.#client.hgetall(this.#totalsKey));
  }

  /** Forgets the running totals (`--reset-progress`). */
  async resetTotals(): Promise<void> {
    await this.#write(new Writes().add("DEL", this.#totalsKey));
  }

  #withTotals(writes: Writes, totals: ReadonlyMap<string, number>): Writes {
    const args = totalsArgs(totals);
    for (let i = 0; i < args.length; i += 2) {
      writes.add("HINCRBY", this.#totalsKey, args[i]!, args[i + 1]!);
    }
    return writes;
  }

  /**
   * Runs `writes` as one script call, fenced by the run's locks: Redis refuses the whole call
   * (`FENCED`, nothing written) when a lock no longer holds this runner's value.
   *
   * @throws {SafetyRefusal} when it was refused so (this runner lost its lock).
   */
  async #write(writes: Writes): Promise<void> {
    if (writes.empty) return;
    // The totals key routes the call on a cluster: every key here shares the `{P}` slot.
    const keys = [this.#totalsKey, ...this.#locks.map((lock) => lock.key)];
    const args = [...this.#locks.map((lock) => lock.value), ...writes.args];
    try {
      await this.#client.eval(FENCED_WRITES, keys.length, ...keys, ...args);
    } catch (error) {
      throw refusedAsFenced(error) ?? error;
    }
  }
}

/** Commands for {@linkcode FENCED_WRITES}, flat: name, argument count, arguments…; in order. */
class Writes {
  readonly args: (string | Buffer)[] = [];

  add(command: string, ...args: (string | Buffer)[]): this {
    this.args.push(command, String(args.length), ...args);
    return this;
  }

  get empty(): boolean {
    return this.args.length === 0;
  }
}

/**
 * KEYS: a key of the store's slot, then the run's locks; ARGV: each lock's value, then the writes
 * (name, n, n arguments)…. The locks are checked first: when one no longer holds its value (it
 * expired, or another runner took it), nothing is written. Without a shebang, so that Redis 6.2
 * runs it and a full Redis refuses its first write (OOM) before anything is written, as a MULTI
 * would; a later write of the same call is never refused for memory.
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
// the running totals

const REASON_PREFIX = "invalid_reason:";

/** The totals field of an outcome (every workspace together). */
export function totalsField(outcome: Outcome): string {
  return `${outcome}:${EARLIER_RUNS}`;
}

/** What one node counted since its last checkpoint save; taken (and emptied) by each save. */
export class TotalsDelta {
  #counts = new Map<string, number>();

  /** Adds a batch's results. */
  add(results: readonly KeyResult[]): void {
    for (const result of results) {
      this.#inc(totalsField(result.outcome), 1);
      if (result.outcome === "skipped_invalid" && result.invalidReason !== undefined) {
        this.#inc(REASON_PREFIX + result.invalidReason, 1);
      }
    }
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

/**
 * The HINCRBY arguments of `counts` as one flat list (field, count, …), for a save that runs as a
 * script (ARGV) rather than a MULTI.
 */
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
 * them; `--reset-progress` forgets them along with the checkpoint.
 */
export async function carriedTotals(
  store: {
    loadTotals(): Promise<CarriedTotals | undefined>;
    resetTotals(): Promise<void>;
  },
  run: { mode: RunMode; resetProgress: boolean },
): Promise<CarriedTotals | undefined> {
  if (run.mode !== "execute") return undefined;
  if (!run.resetProgress) return await store.loadTotals();
  await store.resetTotals();
  return undefined;
}
