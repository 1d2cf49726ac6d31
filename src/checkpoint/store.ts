/**
 * Checkpoints in Redis, under the progress key P: `P:cursor` and `P:last_job` (the names the runbook reads),
 * plus `P:meta`, a hash with the node's `run_id` (a restarted node's cursor is meaningless) and the
 * run parameters (a checkpoint made for another workspace or pattern is not silently reused). When
 * the engine saves is stated once, in run/checkpointer.ts.
 * A cluster keeps one set per master, named by the master's node id and wrapped in a hash tag so
 * that every checkpoint key of the run lands in one slot (one script call can write them):
 * `{P}:cursor:<node-id>`, `{P}:last_job:<node-id>`, `{P}:meta:<node-id>`.
 * The migration's running totals (below) live beside them in `P:totals` (`{P}:totals`) and
 * move in the same call as each save. The run locks live in that slot too, so every write here is
 * fenced by them: a runner whose lock expired or was taken over has its writes refused by Redis.
 *
 * A node whose scan completed while others of the run's pass have not is kept finished: cursor
 * `0` and `finished` = `1` in its meta, so the next run (`--max-keys` loops, a stopped run) does
 * not scan it again; the run that completes the pass clears every node's checkpoint. An older
 * version reads such a checkpoint as cursor 0 and rescans that node (harmless: copies are
 * idempotent); a checkpoint of an older version has no `finished` field and resumes as before.
 *
 * ## Running totals
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
 * nearly every copied key. The carried part therefore shows under {@linkcode EARLIER_RUNS}, the per-workspace series count from
 * this run's start, and every sum over workspaces is the migration's total.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import type { Cluster, Redis } from "../redis/ioredis.ts";
import { refusedAsFenced, type RunLock } from "../safety/lock.ts";
import { type BatchPosition, decodePosition, encodePosition } from "./batch_position.ts";
import {
  INVALID_REASONS,
  type InvalidReason,
  type KeyResult,
  type Outcome,
  OUTCOMES,
} from "../outcome.ts";
import { type CarriedTotals, EARLIER_RUNS } from "../run_events.ts";

/** The meta field that marks a node finished in the current pass. */
const FINISHED_FIELD = "finished";

/** Where one node's scan stands. */
export interface NodeCheckpoint {
  cursor: string;
  /** Job id (bytes) of the last processed key. */
  lastJob?: Buffer;
  /** Where processing stopped inside the batch at `cursor` (see batch_position.ts). */
  within?: BatchPosition;
  /** `run_id` of the node the cursor belongs to. */
  runId: string;
  /** Fingerprint of the run parameters (see {@linkcode runParams}). */
  params: string;
  /** The node's scan completed in this pass (the cursor is `0`); see {@linkcode CheckpointStore.finish}. */
  finished?: boolean;
}

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
  parts: { workspace?: string; pattern: string; match: string; mapping?: string },
): string {
  return JSON.stringify({
    workspace: parts.workspace ?? null,
    pattern: parts.pattern,
    match: parts.match,
    // Only another mapping than the default one is named (the default's checkpoints stay valid).
    ...(parts.mapping === undefined ? {} : { mapping: parts.mapping }),
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
  run: { mode: "dry-run" | "execute"; resetProgress: boolean },
): Promise<CarriedTotals | undefined> {
  if (run.mode !== "execute") return undefined;
  if (!run.resetProgress) return await store.loadTotals();
  await store.resetTotals();
  return undefined;
}
