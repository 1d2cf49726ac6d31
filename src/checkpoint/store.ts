/**
 * Checkpoints in Redis, under the progress key P: `P:cursor` and `P:last_job` (the DESIGN names),
 * plus `P:meta`, a hash with the node's `run_id` (a restarted node's cursor is meaningless) and the
 * run parameters (a checkpoint made for another workspace or pattern is not silently reused). On a
 * standalone server the copy script itself moves `P:cursor` and `P:last_job` and keeps its call
 * token in `P:meta` (checkpoint/in_script.ts); this store writes the rest, in the same format.
 * A cluster keeps one set per master, named by the master's node id and wrapped in a hash tag so
 * that every checkpoint key of the run lands in one slot (one MULTI can write them):
 * `{P}:cursor:<node-id>`, `{P}:last_job:<node-id>`, `{P}:meta:<node-id>`.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import type { Cluster, Redis } from "../redis/ioredis.ts";

/** Where one node's scan stands. */
export interface NodeCheckpoint {
  cursor: string;
  /** Job id (bytes) of the last processed key. */
  lastJob?: Buffer;
  /** `run_id` of the node the cursor belongs to. */
  runId: string;
  /** Fingerprint of the run parameters (see {@linkcode runParams}). */
  params: string;
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

  constructor(client: Redis | Cluster, prefix: string) {
    this.#client = client;
    this.prefix = prefix;
  }

  /**
   * Key names for a node: `P:cursor`, … on a standalone server (node ""), `{P}:cursor:<node>`, … in
   * a cluster. Redis hashes only what lies between the first `{` and the next `}`; every cluster key
   * starts with `{P}`, so they share that tag (and slot) whatever braces P itself contains.
   */
  keys(node: string): { cursor: string; lastJob: string; meta: string } {
    if (node === "") {
      return {
        cursor: `${this.prefix}:cursor`,
        lastJob: `${this.prefix}:last_job`,
        meta: `${this.prefix}:meta`,
      };
    }
    const tag = `{${this.prefix}}`;
    return {
      cursor: `${tag}:cursor:${node}`,
      lastJob: `${tag}:last_job:${node}`,
      meta: `${tag}:meta:${node}`,
    };
  }

  /** The stored checkpoint, or `undefined` when there is no cursor. */
  async load(node: string): Promise<NodeCheckpoint | undefined> {
    const keys = this.keys(node);
    const [cursor, lastJob, meta] = await Promise.all([
      this.#client.get(keys.cursor),
      this.#client.getBuffer(keys.lastJob),
      this.#client.hgetall(keys.meta),
    ]);
    if (cursor === null) return undefined;
    return {
      cursor,
      lastJob: lastJob ?? undefined,
      runId: meta.run_id ?? "",
      params: meta.params ?? "",
    };
  }

  /** Stores a checkpoint atomically (one MULTI: a crash never leaves cursor and meta apart). */
  async save(node: string, checkpoint: NodeCheckpoint): Promise<void> {
    const keys = this.keys(node);
    const tx = this.#client.multi()
      .set(keys.cursor, checkpoint.cursor)
      .hset(keys.meta, {
        run_id: checkpoint.runId,
        params: checkpoint.params,
        updated_at: new Date().toISOString(),
      });
    if (checkpoint.lastJob !== undefined) tx.set(keys.lastJob, checkpoint.lastJob);
    const replies = await tx.exec();
    const failed = replies?.find(([error]) => error);
    if (!replies || failed) throw failed?.[0] ?? new Error("checkpoint transaction aborted");
  }

  /** Removes a node's cursor (a finished scan: the next run starts from 0). */
  async clear(node: string): Promise<void> {
    const keys = this.keys(node);
    await this.#client.del(keys.cursor, keys.lastJob, keys.meta);
  }
}
