/**
 * Where a node's scan starts: the resume policy as a pure function of the flags, the stored
 * checkpoint and the node's current `run_id`. No I/O: the engine loads the checkpoint, asks here,
 * then clears, logs or refuses as told.
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
  /** Where processing stopped inside the batch at `cursor` (see batch_position.ts). */
  within?: BatchPosition;
  /** `run_id` of the node the cursor belongs to. */
  runId: string;
  /** Fingerprint of the run parameters (see `runParams`, run/checkpointer.ts). */
  params: string;
  /** The node's scan completed in this pass (the cursor is `0`); see `CheckpointStore.finish`. */
  finished?: boolean;
}

/** What the decision depends on. */
export interface ResumeInput {
  mode: RunMode;
  /** `--cursor`. */
  cursor?: string;
  /** `--reset-progress`. */
  resetProgress: boolean;
  /** The node's stored checkpoint, if any. */
  stored?: NodeCheckpoint;
  /** The fingerprint of this run's parameters (see `runParams`). */
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

/** A line for the run's log. */
export interface ResumeLog {
  level: "info" | "warn";
  event: string;
  message: string;
  fields?: Record<string, unknown>;
}

/** Start here (clearing the stored checkpoint first when `clear`), or refuse the run. */
export type ResumeDecision =
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
 * Decides the start cursor. Dry-run never uses a stored checkpoint; `--reset-progress` clears it;
 * `--cursor` overrides it; a checkpoint made with other parameters is refused; one made before
 * the server restarted (another `run_id`) is meaningless, so the scan starts over at 0; a node
 * finished earlier in the pass is not scanned again.
 */
export function decideStart(input: ResumeInput): ResumeDecision {
  const where = input.perNode ? ` on ${input.node}` : "";
  return startFromFlags(input, where) ?? startFromCheckpoint(input, where);
}

/**
 * The flags that decide without the checkpoint, in order of precedence: dry-run, then
 * `--reset-progress`, then `--cursor`. Undefined when none of them applies.
 */
function startFromFlags(input: ResumeInput, where: string): ResumeDecision | undefined {
  const flag = input.cursor ?? "0";
  const { stored } = input;
  if (input.mode === "dry-run") {
    const ignored = stored !== undefined && input.cursor === undefined;
    return start(
      flag,
      false,
      ignored
        ? info(
          "checkpoint_ignored",
          `dry-run ignores the stored checkpoint (cursor=${stored.cursor})${where} and scans from cursor 0`,
        )
        : undefined,
    );
  }
  if (input.resetProgress) {
    return start(
      flag,
      true,
      info(
        "checkpoint_reset",
        `cleared the stored checkpoint${where}; starting from cursor ${flag}`,
      ),
    );
  }
  if (input.cursor !== undefined) {
    return start(
      input.cursor,
      false,
      info("cursor_flag", `starting from --cursor ${input.cursor}${where}`),
    );
  }
  return undefined;
}

/**
 * No flag decided: resume the stored checkpoint when it was made with these parameters and on
 * this server process; refuse other parameters; rescan from 0 after a restart.
 */
function startFromCheckpoint(input: ResumeInput, where: string): ResumeDecision {
  const { stored } = input;
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
    return start("0", false, {
      level: "warn",
      event: "checkpoint_stale",
      message:
        `Redis at ${input.node} restarted since the checkpoint (run_id changed): its cursor is meaningless, rescanning from cursor 0`,
    });
  }
  if (stored.finished) {
    return {
      kind: "finished",
      log: info(
        "node_finished",
        `the scan${where} completed in an earlier run of this pass: not scanned again ` +
          `until every node of the pass is done (--reset-progress starts over)`,
      ),
    };
  }
  const last = stored.lastJob ? escapeForLog(stored.lastJob) : "none";
  const inside = stored.within ? " (inside its batch, after that job)" : "";
  return {
    ...start(stored.cursor, false, {
      ...info(
        "resume",
        `Resuming from stored cursor=${stored.cursor}, last_job=${last}${inside}${where}`,
      ),
      fields: { cursor: stored.cursor },
    }),
    within: stored.within,
  };
}

function start(
  cursor: string,
  clear: boolean,
  log?: ResumeLog,
): Extract<ResumeDecision, { kind: "start" }> {
  return { kind: "start", cursor, clear, log };
}

function info(event: string, message: string): ResumeLog {
  return { level: "info", event, message };
}
