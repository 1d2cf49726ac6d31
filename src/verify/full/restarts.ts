/**
 * Masters that restarted since `verify --full` read them (a new `run_id`): a SCAN cursor means
 * nothing on a new process, and a restarted master may have lost or changed keys, so its keys are
 * checked again from the start. Its counts are dropped, and so are its findings in the report: the
 * report is cut back to where that node's findings began, and every node whose findings come after
 * that point is checked again too (nodes are verified one after the other, so the report holds
 * each node's findings in one stretch).
 *
 * @module
 */
import type { Redis } from "../../redis/ioredis.ts";
import { type NodeProgress, type VerifyState, zeroCounts } from "./checkpoint.ts";

/** A master now: its cluster node id ("standalone" otherwise) and its server's `run_id`. */
export interface NodeIdentity {
  id: string;
  runId: string;
}

/** Reads a master's identity (two calls). */
export async function identify(node: Redis, cluster: boolean): Promise<NodeIdentity> {
  const id = cluster ? String(await node.call("CLUSTER", "MYID")) : "standalone";
  return { id, runId: await runIdOf(node) };
}

/** The `run_id` of the server behind `node`. */
export async function runIdOf(node: Redis): Promise<string> {
  return /run_id:(\w+)/.exec(await node.info("server"))?.[1] ?? "";
}

/** A master restarted while it was being verified (its `run_id` changed between two chunks). */
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
  /** Report length to cut back to, when there is a report and something is dropped. */
  cut?: number;
}

/**
 * Decides what a restart undoes (pure). `current` maps node id → run_id now. Without a report only
 * the restarted nodes are dropped.
 */
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
  return {
    runId,
    phase: "jobs",
    cursor: "0",
    counts: zeroCounts(),
    reportFrom,
  };
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
