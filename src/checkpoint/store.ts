/**
 * Checkpoints in Redis, under the progress key P: `P:cursor` and `P:last_job` (the names the runbook reads),
 * plus `P:meta`, a hash with the node's `run_id` (a restarted node's cursor is meaningless) and the
 * run parameters (a checkpoint made for another workspace or pattern is not silently reused). On a
 * standalone server the copy script itself moves `P:cursor` and `P:last_job` and keeps its call
 * token in `P:meta` (checkpoint/in_script.ts); this store writes the rest, in the same format.
 * A cluster keeps one set per master, named by the master's node id and wrapped in a hash tag so
 * that every checkpoint key of the run lands in one slot (one MULTI can write them):
 * `{P}:cursor:<node-id>`, `{P}:last_job:<node-id>`, `{P}:meta:<node-id>`.
 * The migration's running totals (totals.ts) live beside them in `P:totals` (`{P}:totals`) and
 * move in the same transaction as each save.
 *
 * A node whose scan completed while others of the run's pass have not is kept finished: cursor
 * `0` and `finished` = `1` in its meta, so the next run (`--max-keys` loops, a stopped run) does
 * not scan it again; the run that completes the pass clears every node's checkpoint. An older
 * version reads such a checkpoint as cursor 0 and rescans that node (harmless: copies are
 * idempotent); a checkpoint of an older version has no `finished` field and resumes as before.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import type { Cluster, Redis } from "../redis/ioredis.ts";
import { type BatchPosition, decodePosition, encodePosition } from "./batch_position.ts";
import type { CarriedTotals } from "../run_events.ts";
import { parseTotals, totalsArgs } from "./totals.ts";

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

/** The parameters that give a cursor its meaning, as a stable string. */
export function runParams(parts: { workspace?: string; pattern: string; match: string }): string {
  return JSON.stringify({
    workspace: parts.workspace ?? null,
    pattern: parts.pattern,
    match: parts.match,
  });
}

/** Reads and writes checkpoints. `node` is "" on a standalone server, the node id in a cluster. */
export class CheckpointStore {
  readonly prefix: string;
  readonly #client: Redis | Cluster;
  readonly #totalsKey: string;

  /** `cluster`: keys carry the `{P}` hash tag (one slot for all of a run's checkpoint keys). */
  constructor(client: Redis | Cluster, prefix: string, options: { cluster?: boolean } = {}) {
    this.#client = client;
    this.prefix = prefix;
    this.#totalsKey = options.cluster ? `{${prefix}}:totals` : `${prefix}:totals`;
  }

  /**
   * Key names for a node: `P:cursor`, … on a standalone server (node ""), `{P}:cursor:<node>`, … in
   * a cluster. Redis hashes only what lies between the first `{` and the next `}`; every cluster key
   * starts with `{P}`, so they share that tag (and slot) whatever braces P itself contains.
   */
  keys(node: string): { cursor: string; lastJob: string; meta: string; within: string } {
    if (node === "") {
      return {
        cursor: `${this.prefix}:cursor`,
        lastJob: `${this.prefix}:last_job`,
        meta: `${this.prefix}:meta`,
        within: `${this.prefix}:within`,
      };
    }
    const tag = `{${this.prefix}}`;
    return {
      cursor: `${tag}:cursor:${node}`,
      lastJob: `${tag}:last_job:${node}`,
      meta: `${tag}:meta:${node}`,
      within: `${tag}:within:${node}`,
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
   * Stores a checkpoint atomically (one MULTI: a crash never leaves cursor and meta apart), with
   * the totals counted since the node's last save added to the migration's running totals.
   */
  async save(
    node: string,
    checkpoint: NodeCheckpoint,
    totals: ReadonlyMap<string, number> = new Map(),
  ): Promise<void> {
    const keys = this.keys(node);
    const tx = this.#client.multi()
      .set(keys.cursor, checkpoint.cursor)
      .hset(keys.meta, {
        run_id: checkpoint.runId,
        params: checkpoint.params,
        updated_at: new Date().toISOString(),
      });
    // A cursor being saved is a scan under way: the node is not finished (any more).
    tx.hdel(keys.meta, FINISHED_FIELD);
    if (checkpoint.lastJob !== undefined) tx.set(keys.lastJob, checkpoint.lastJob);
    if (checkpoint.within === undefined) tx.del(keys.within);
    else tx.set(keys.within, encodePosition(checkpoint.within));
    this.#addTotals(tx, totals);
    await execOrThrow(tx);
  }

  /**
   * Marks a node's scan completed in this pass (cursor `0`, `finished` in its meta), adding its
   * last counts to the running totals in the same transaction. The next run skips the node until
   * the pass completes ({@linkcode clear} of every node) or `--reset-progress`.
   */
  async finish(
    node: string,
    run: { runId: string; params: string },
    totals: ReadonlyMap<string, number> = new Map(),
  ): Promise<void> {
    const keys = this.keys(node);
    const tx = this.#client.multi()
      .set(keys.cursor, "0")
      .del(keys.lastJob, keys.within)
      .hset(keys.meta, {
        run_id: run.runId,
        params: run.params,
        updated_at: new Date().toISOString(),
        [FINISHED_FIELD]: "1",
      });
    this.#addTotals(tx, totals);
    await execOrThrow(tx);
  }

  /**
   * Removes a node's checkpoint (its pass is complete: the next run starts from 0), adding its last
   * counts to the running totals in the same transaction. The totals stay: they are the
   * migration's, until `--reset-progress`.
   */
  async clear(node: string, totals: ReadonlyMap<string, number> = new Map()): Promise<void> {
    const keys = this.keys(node);
    const tx = this.#client.multi().del(keys.cursor, keys.lastJob, keys.meta, keys.within);
    this.#addTotals(tx, totals);
    await execOrThrow(tx);
  }

  /** Adds counts to the running totals (after a checkpoint a copy script stored). */
  async addTotals(totals: ReadonlyMap<string, number>): Promise<void> {
    const tx = this.#client.multi();
    this.#addTotals(tx, totals);
    await execOrThrow(tx);
  }

  /** The migration's running totals, or `undefined` when none are stored. */
  async loadTotals(): Promise<CarriedTotals | undefined> {
    return parseTotals(await this.#client.hgetall(this.#totalsKey));
  }

  /** Forgets the running totals (`--reset-progress`). */
  async resetTotals(): Promise<void> {
    await this.#client.del(this.#totalsKey);
  }

  #addTotals(tx: ReturnType<Redis["multi"]>, totals: ReadonlyMap<string, number>): void {
    const args = totalsArgs(totals);
    for (let i = 0; i < args.length; i += 2) tx.hincrby(this.#totalsKey, args[i]!, args[i + 1]!);
  }
}

async function execOrThrow(tx: ReturnType<Redis["multi"]>): Promise<void> {
  const replies = await tx.exec();
  const failed = replies?.find(([error]) => error);
  if (!replies || failed) throw failed?.[0] ?? new Error("checkpoint transaction aborted");
}
