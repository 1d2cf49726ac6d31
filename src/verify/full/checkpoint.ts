/**
 * The checkpoint of `verify --full`: one hash, `<P>:verify:state`, next to the lock
 * `<P>:verify:lock` and apart from a backfill run's `<P>:cursor`, `<P>:meta`, `<P>:lock`. One field
 * per master (`node:<id>`: run_id, phase, cursor and that node's running counts, as JSON), plus
 * the parameters and the report file's length. Every save is ONE HSET, so a node's counts and its
 * cursor are stored together or not at all: a verify killed at any point and resumed counts each
 * key once (keys of the chunk in flight are checked again, and were never counted).
 *
 * @module
 */
import type { Cluster, Redis } from "../../redis/ioredis.ts";

/** Running counts of one node (or of the whole run, summed). */
export interface FullCounts {
  /** Old keys compared (gone and filtered keys excluded). */
  checked: number;
  matched: number;
  missing: number;
  field_missing: number;
  field_differs: number;
  ttl: number;
  type: number;
  invalid: number;
  /** Old keys that vanished before they could be compared (not counted in `checked`). */
  gone: number;
  /** Old keys of other workspaces than `--workspace`. */
  filtered: number;
  /** Differences that cleared on a recheck. */
  transient: number;
  /** New keys checked for orphans (`--orphans`). */
  new_checked: number;
  orphans: number;
  /** Keys SCAN returned a second time within a node's pass, dropped (counted once). */
  scan_duplicates: number;
}

/** Zero counts. */
export function zeroCounts(): FullCounts {
  return {
    checked: 0,
    matched: 0,
    missing: 0,
    field_missing: 0,
    field_differs: 0,
    ttl: 0,
    type: 0,
    invalid: 0,
    gone: 0,
    filtered: 0,
    transient: 0,
    new_checked: 0,
    orphans: 0,
    scan_duplicates: 0,
  };
}

/** Adds `b` into `a`. */
export function addCounts(a: FullCounts, b: Readonly<FullCounts>): FullCounts {
  for (const name of Object.keys(a) as (keyof FullCounts)[]) a[name] += b[name];
  return a;
}

/** Where one master's verify stands. */
export interface NodeProgress {
  /** `run_id` of the server the cursor belongs to (a restarted node rescans from 0). */
  runId: string;
  /** Old keys first, then (with `--orphans`) new keys, then done. */
  phase: "jobs" | "orphans" | "done";
  /** The SCAN cursor of the phase ("0" = not started). */
  cursor: string;
  counts: FullCounts;
  /** Length of the `--report` file when this node's pass began: its findings follow. */
  reportFrom?: number;
}

/** The whole stored state. */
export interface VerifyState {
  /** Fingerprint of the parameters that give the counts their meaning. */
  params: string;
  nodes: Map<string, NodeProgress>;
  /** Bytes of the `--report` file that belong to the stored counts. */
  reportBytes: number;
  /** Wall time of earlier sessions of this verify, in ms. */
  elapsedMs: number;
  startedAt: string;
}

/** Reads and writes `<P>:verify:state`. */
export class VerifyCheckpoint {
  /** The state key. */
  readonly key: string;
  /** The lock key (held by the command). */
  readonly lockKey: string;
  readonly #client: Redis | Cluster;

  constructor(client: Redis | Cluster, prefix: string) {
    this.#client = client;
    this.key = `${prefix}:verify:state`;
    this.lockKey = `${prefix}:verify:lock`;
  }

  /** The stored state, or `undefined` when there is none. */
  async load(): Promise<VerifyState | undefined> {
    const hash = await this.#client.hgetall(this.key);
    if (hash.params === undefined) return undefined;
    const nodes = new Map<string, NodeProgress>();
    for (const [field, value] of Object.entries(hash)) {
      if (field.startsWith("node:")) {
        const stored = JSON.parse(value) as NodeProgress;
        nodes.set(field.slice(5), { ...stored, counts: { ...zeroCounts(), ...stored.counts } });
      }
    }
    return {
      params: hash.params,
      nodes,
      reportBytes: Number(hash.report_bytes ?? 0),
      elapsedMs: Number(hash.elapsed_ms ?? 0),
      startedAt: hash.started_at ?? "",
    };
  }

  /** Stores nodes' progress with the run-wide fields, in one HSET (atomic). */
  async save(state: VerifyState, ...nodes: string[]): Promise<void> {
    const fields: Record<string, string> = {};
    for (const node of nodes) {
      const progress = state.nodes.get(node);
      if (progress === undefined) throw new RangeError(`no progress for node '${node}'`);
      fields[`node:${node}`] = JSON.stringify(progress);
    }
    await this.#client.hset(this.key, {
      params: state.params,
      ...fields,
      report_bytes: String(state.reportBytes),
      elapsed_ms: String(Math.round(state.elapsedMs)),
      started_at: state.startedAt,
    });
  }

  /** Removes the state (a finished verify, or `--reset-progress`). */
  async clear(): Promise<void> {
    await this.#client.del(this.key);
  }
}
