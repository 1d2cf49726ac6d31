/**
 * Where `verify --full` stands: one hash `<P>:verify:state` (apart from a backfill run's keys)
 * with one field per master (`node:<id>`: run_id, phase, cursor and that node's counts, as JSON),
 * the parameters and the report file's length. Every save is ONE HSET, so a node's counts and
 * cursor are stored together or not at all: a verify killed and resumed counts each key once.
 *
 * A resume with other parameters is refused. A master that restarted (new `run_id`) is checked
 * again from the start, as its cursor means nothing there and it may have lost keys; its findings
 * are cut from the report, with those of every node checked after it (nodes run one after the
 * other, so each node's findings are one stretch of the report).
 *
 * @module
 */
import { serverRunId } from "../../redis/availability.ts";
import type { Cluster, Redis } from "../../redis/ioredis.ts";
import { SafetyRefusal } from "../../errors.ts";
import type { Logger } from "../../run_events.ts";
import type { KeySchema } from "../../schema.ts";
import { type FullCounts, type ReportFile, zeroCounts } from "./report.ts";

/** Where one master's verify stands. */
export interface NodeProgress {
  /** `run_id` of the server the cursor belongs to. */
  runId: string;
  /** Old keys first, then (with `--orphans`) new keys. */
  phase: "jobs" | "orphans" | "done";
  /** The SCAN cursor of the phase ("0" = not started). */
  cursor: string;
  counts: FullCounts;
  /** Length of the `--report` file when this node's pass began. */
  reportFrom?: number;
}

export interface VerifyState {
  /** {@linkcode verifyParams}. */
  params: string;
  nodes: Map<string, NodeProgress>;
  /** Bytes of the `--report` file that belong to the stored counts. */
  reportBytes: number;
  /** Wall time of earlier sessions, in ms. */
  elapsedMs: number;
  startedAt: string;
}

/** Reads and writes `<P>:verify:state`. */
export class VerifyCheckpoint {
  readonly key: string;
  /** The lock key (held by the command). */
  readonly lockKey: string;
  readonly #client: Redis | Cluster;

  constructor(client: Redis | Cluster, prefix: string) {
    this.#client = client;
    this.key = `${prefix}:verify:state`;
    this.lockKey = `${prefix}:verify:lock`;
  }

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

  /** Stores nodes' progress (each in `state`) with the run-wide fields, in one HSET (atomic). */
  async save(state: VerifyState, ...nodes: string[]): Promise<void> {
    const fields = Object.fromEntries(
      nodes.map((node) => [`node:${node}`, JSON.stringify(state.nodes.get(node))]),
    );
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

/**
 * The flags that change what a verify counts, as stored (JSON, compared as text): a resume must
 * use the same ones.
 */
export function verifyParams(params: {
  keys: KeySchema;
  workspace?: string;
  ttlToleranceSeconds: number;
  orphans: boolean;
}): string {
  return JSON.stringify({
    workspace: params.workspace ?? null,
    ...params.keys.fingerprint,
    ttl_tolerance: params.ttlToleranceSeconds,
    orphans: params.orphans,
    // A checkpoint that names another path holds no SCAN cursors: refused, not misread.
    jobs_path: "sub_batches",
  });
}

/**
 * Loads the stored state (unless `resetProgress`) or starts a fresh one, and moves the report to
 * where the state's findings end.
 *
 * @throws {SafetyRefusal} when the stored state was made with other parameters.
 */
export async function resumeState(options: {
  /** {@linkcode verifyParams} of this verify. */
  params: string;
  resetProgress: boolean;
  checkpoint: VerifyCheckpoint;
  report?: ReportFile;
  logger: Logger;
}): Promise<{ state: VerifyState; resumed: boolean }> {
  const { params, checkpoint, report, logger } = options;
  const stored = options.resetProgress ? undefined : await checkpoint.load();
  if (stored !== undefined && stored.params !== params) {
    throw new SafetyRefusal(
      `${checkpoint.key} holds a verify with other parameters (${stored.params}); ` +
        "rerun with the same flags, or add --reset-progress to start over",
    );
  }
  const state: VerifyState = stored ??
    { params, nodes: new Map(), reportBytes: 0, elapsedMs: 0, startedAt: new Date().toISOString() };
  if (report && !(await report.startAt(state.reportBytes))) {
    logger.log(
      "warn",
      "verify_report_restarted",
      "the report file is shorter than the " +
        "checkpoint says: it holds only the findings from here on",
    );
  }
  if (stored !== undefined) {
    logger.log("info", "verify_resumed", `resuming the full verify started ${state.startedAt}`);
  }
  return { state, resumed: stored !== undefined };
}

/** A master now: its cluster node id ("standalone" otherwise) and its server's `run_id`. */
export async function identify(
  node: Redis,
  cluster: boolean,
): Promise<{ id: string; runId: string }> {
  const id = cluster ? String(await node.call("CLUSTER", "MYID")) : "standalone";
  return { id, runId: await serverRunId(node) };
}

/** A master restarted while it was being verified (its `run_id` changed). */
export class NodeRestartedError extends Error {
  constructor(readonly node: string) {
    super(`${node} restarted during verify --full (new run_id)`);
    this.name = "NodeRestartedError";
  }
}

/** What to check again. */
export interface RescanPlan {
  /** Stored nodes whose `run_id` changed. */
  restarted: string[];
  /** Nodes whose progress is dropped (the restarted ones and those whose findings follow). */
  dropped: string[];
  /** Report length to cut back to. */
  cut?: number;
}

/** Decides what a restart undoes. `current` maps node id → run_id now. */
export function planRescan(
  nodes: ReadonlyMap<string, NodeProgress>,
  current: ReadonlyMap<string, string>,
  withReport: boolean,
): RescanPlan {
  const restarted = [...nodes].filter(([id, p]) => current.has(id) && current.get(id) !== p.runId)
    .map(([id]) => id);
  if (restarted.length === 0) return { restarted, dropped: [] };
  if (!withReport) return { restarted, dropped: restarted };
  const cut = Math.min(...restarted.map((id) => nodes.get(id)!.reportFrom ?? 0));
  const dropped = [...nodes].filter(([id, p]) =>
    restarted.includes(id) || (p.reportFrom ?? 0) >= cut
  ).map(([id]) => id);
  return { restarted, dropped, cut };
}

/** A node's progress from the start, on the server with `runId`, findings from `reportFrom`. */
export function freshProgress(runId: string, reportFrom: number): NodeProgress {
  return { runId, phase: "jobs", cursor: "0", counts: zeroCounts(), reportFrom };
}

/** Applies a plan to `state` (in memory): dropped nodes start over; returns their ids. */
export function applyRescan(
  state: VerifyState,
  plan: RescanPlan,
  current: ReadonlyMap<string, string>,
): string[] {
  if (plan.cut !== undefined) state.reportBytes = plan.cut;
  for (const id of plan.dropped) {
    state.nodes.set(id, freshProgress(current.get(id) ?? "", plan.cut ?? 0));
  }
  return plan.dropped;
}
