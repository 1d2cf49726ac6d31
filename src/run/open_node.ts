/**
 * Opening one node of a run: its identity (node id, `run_id`) and where its scan starts, decided
 * by the resume policy (checkpoint/resume.ts) from its stored checkpoint; a stale or foreign
 * checkpoint is cleared or refused there, and the decision's log line written here.
 *
 * @module
 */
import { decideStart } from "../checkpoint/resume.ts";
import { SafetyRefusal } from "../errors.ts";
import { serverRunId } from "../redis/availability.ts";
import type { Redis } from "../redis/ioredis.ts";
import type { RedisTarget } from "../redis/target.ts";
import type { Logger, RunMode } from "../run_events.ts";
import { scanFraction } from "./estimate.ts";
import type { RunCheckpointStore } from "./node_checkpoints.ts";
import type { NodeState } from "./outage.ts";

/** What {@linkcode openNode} needs from the run. */
export interface OpenNodeOptions {
  target: Pick<RedisTarget, "nodeName">;
  checkpoints: RunCheckpointStore;
  /** The node id used in checkpoint keys ("" = standalone). */
  nodeId?: (node: Redis) => Promise<string>;
  mode: RunMode;
  /** `--cursor`, when given. */
  cursor?: string;
  resetProgress: boolean;
  /** Fingerprint of the run's parameters (a checkpoint of other parameters is refused). */
  params: string;
  /** Keys on all masters at the start (for the scan fraction). */
  dbsize: number;
  logger: Logger;
}

/** A node as opened: where its scan starts, or `finished` when it completed earlier in the pass. */
export type OpenedNode = NodeState & { finished: boolean };

/**
 * The node's state at the start of its scan.
 *
 * @throws {SafetyRefusal} when the stored checkpoint must not be resumed (checkpoint/resume.ts).
 */
export async function openNode(node: Redis, options: OpenNodeOptions): Promise<OpenedNode> {
  const { target, checkpoints } = options;
  const name = target.nodeName(node);
  const nodeId = options.nodeId ? await options.nodeId(node) : "";
  const runId = await serverRunId(node);
  const decision = decideStart({
    mode: options.mode,
    cursor: options.cursor,
    resetProgress: options.resetProgress,
    stored: await checkpoints.load(nodeId),
    params: options.params,
    runId,
    node: name,
    perNode: nodeId !== "",
    prefix: checkpoints.prefix,
  });
  if (decision.kind === "refuse") throw new SafetyRefusal(decision.reason);
  if (decision.log) {
    const { level, event, message, fields } = decision.log;
    options.logger.log(level, event, message, fields);
  }
  const finished = decision.kind === "finished";
  if (!finished && decision.clear) await checkpoints.clear(nodeId);
  return {
    finished,
    node,
    name,
    nodeId,
    runId,
    committed: finished ? "0" : decision.cursor,
    within: finished ? undefined : decision.within,
    startFraction: finished ? 1 : scanFraction(decision.cursor, options.dbsize),
    lastSave: 0,
  };
}
