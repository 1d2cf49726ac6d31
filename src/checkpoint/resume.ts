/**
 * Where a node's scan starts: the resume policy as a pure function of the flags, the stored
 * checkpoint and the node's current `run_id`. The engine loads the checkpoint, asks here, then
 * clears, logs or refuses as told.
 *
 * @module
 */
import { escapeForLog } from "../telemetry/redact.ts";
import type { BatchPosition } from "./batch_position.ts";
import type { Buffer } from "node:buffer";
import type { RunMode } from "../run_events.ts";

/** Where one node's scan stands. */
export interface NodeCheckpoint {
  cursor: string;
  /** Job id (bytes) of the last processed key. */
  lastJob?: Buffer;
  /** Where processing stopped inside the batch at `cursor`. */
  within?: BatchPosition;
  /** `run_id` of the node the cursor belongs to. */
  runId: string;
  /** Fingerprint of the run parameters (`runParams`, run/checkpointer.ts). */
  params: string;
  /** The node's scan completed in this pass (the cursor is `0`). */
  finished?: boolean;
}

/** What the decision depends on. */
export interface ResumeInput {
  mode: RunMode;
  /** `--cursor`. */
  cursor?: string;
  /** `--reset-progress`. */
  resetProgress: boolean;
  stored?: NodeCheckpoint;
  /** The fingerprint of this run's parameters. */
  params: string;
  /** The node's `run_id` now. */
  runId: string;
  /** `host:port` of the node. */
  node: string;
  /** True on a cluster, where each master has its own checkpoint (log lines name the node). */
  perNode: boolean;
  /** The progress key prefix, for the refusal message. */
  prefix: string;
}

interface ResumeLog {
  level: "info" | "warn";
  event: string;
  message: string;
  fields?: Record<string, unknown>;
}

/** Start here (clearing the stored checkpoint first when `clear`), or refuse the run. */
type ResumeDecision =
  | {
    kind: "start";
    cursor: string;
    clear: boolean;
    log?: ResumeLog;
    /** Where the stored run stopped inside the batch at `cursor` (resuming only). */
    within?: BatchPosition;
  }
  | { kind: "refuse"; reason: string }
  /** The node's scan completed earlier in this pass: skip it until the pass completes. */
  | { kind: "finished"; log: ResumeLog };

/**
 * Decides the start cursor, in order of precedence: dry-run never uses a stored checkpoint;
 * `--reset-progress` clears it; `--cursor` overrides it; a checkpoint made with other parameters
 * is refused; one made before the server restarted (another `run_id`) is meaningless, so the scan
 * starts over at 0; a node finished earlier in the pass is not scanned again.
 */
export function decideStart(input: ResumeInput): ResumeDecision {
  const where = input.perNode ? ` on ${input.node}` : "";
  const { stored } = input;
  const flag = input.cursor ?? "0";
  if (input.mode === "dry-run") {
    if (stored === undefined || input.cursor !== undefined) return start(flag, false);
    const message =
      `dry-run ignores the stored checkpoint (cursor=${stored.cursor})${where} and scans from cursor 0`;
    return start(flag, false, info("checkpoint_ignored", message));
  }
  if (input.resetProgress) {
    const message = `cleared the stored checkpoint${where}; starting from cursor ${flag}`;
    return start(flag, true, info("checkpoint_reset", message));
  }
  if (input.cursor !== undefined) {
    const message = `starting from --cursor ${input.cursor}${where}`;
    return start(input.cursor, false, info("cursor_flag", message));
  }
  if (stored === undefined) return start("0", false);
  if (stored.params !== input.params) {
    return {
      kind: "refuse",
      reason: `the checkpoint under ${input.prefix} was made with other parameters (${
        stored.params || "unknown"
      }); run with the same --workspace/--workspace-pattern/--from/--to/--pattern, or --reset-progress to start over`,
    };
  }
  if (stored.runId !== input.runId) {
    const message =
      `Redis at ${input.node} restarted since the checkpoint (run_id changed): its cursor is meaningless, rescanning from cursor 0`;
    return start("0", false, { level: "warn", event: "checkpoint_stale", message });
  }
  if (stored.finished) {
    const message =
      `the scan${where} completed in an earlier run of this pass: not scanned again ` +
      `until every node of the pass is done (--reset-progress starts over)`;
    return { kind: "finished", log: info("node_finished", message) };
  }
  const last = stored.lastJob ? escapeForLog(stored.lastJob) : "none";
  const inside = stored.within ? " (inside its batch, after that job)" : "";
  const message = `Resuming from stored cursor=${stored.cursor}, last_job=${last}${inside}${where}`;
  const log = { ...info("resume", message), fields: { cursor: stored.cursor } };
  return start(stored.cursor, false, log, stored.within);
}

function start(
  cursor: string,
  clear: boolean,
  log?: ResumeLog,
  within?: BatchPosition,
): ResumeDecision {
  return { kind: "start", cursor, clear, log, within };
}

function info(event: string, message: string): ResumeLog {
  return { level: "info", event, message };
}
