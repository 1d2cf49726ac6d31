/**
 * Where a full verify starts: the stored state when it was made with the same parameters, a
 * refusal when it was not, or a fresh state (first run, `--reset-progress`).
 *
 * @module
 */
import { SafetyRefusal } from "../../errors.ts";
import type { Logger } from "../../run_events.ts";
import type { KeySchema } from "../../schema.ts";
import type { VerifyCheckpoint, VerifyState } from "./checkpoint.ts";
import { lanesApply } from "./lane_phase.ts";
import type { ReportFile } from "./report_file.ts";

/** The flags that change what a verify counts; a resume must use the same ones. */
export interface VerifyParams {
  keys: KeySchema;
  workspace?: string;
  ttlToleranceSeconds: number;
  orphans: boolean;
}

/**
 * The parameters as stored in `<P>:verify:state` (JSON, compared as text).
 *
 * @example
 * ```ts
 * import { KeySchema } from "../../schema.ts";
 * import { verifyParams } from "./resume.ts";
 * verifyParams({
 *   keys: new KeySchema({ workspacePattern: "^[a-z]+$" }),
 *   ttlToleranceSeconds: 1,
 *   orphans: false,
 * });
 * // '{"workspace":null,"pattern":"^[a-z]+$","ttl_tolerance":1,"orphans":false,
 * //   "jobs_path":"sub_batches"}'
 * ```
 */
export function verifyParams(params: VerifyParams): string {
  return JSON.stringify({
    workspace: params.workspace ?? null,
    ...params.keys.fingerprint,
    ttl_tolerance: params.ttlToleranceSeconds,
    orphans: params.orphans,
    // Which path checks the jobs: a checkpoint of one is never read as the other's.
    jobs_path: lanesApply(params) ? "lanes" : "sub_batches",
  });
}

/** Options of {@linkcode resumeState}. */
export interface ResumeStateOptions {
  /** {@linkcode verifyParams} of this verify. */
  params: string;
  /** Ignore (and later overwrite) a stored state. */
  resetProgress: boolean;
  checkpoint: VerifyCheckpoint;
  /** The report file, moved to where the stored state's findings end. */
  report?: ReportFile;
  logger: Logger;
}

/**
 * Loads the stored state (unless `resetProgress`) or starts a fresh one, and moves the report to
 * where the state's findings end. `stored` is the loaded state itself (the same object as
 * `state`), undefined on a fresh start.
 *
 * @throws {SafetyRefusal} when the stored state was made with other parameters.
 */
export async function resumeState(
  options: ResumeStateOptions,
): Promise<{ state: VerifyState; stored?: VerifyState }> {
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
  return { state, stored };
}
