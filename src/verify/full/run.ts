/**
 * `backfill verify --full`: every old key compared with its new key, master by master, in chunks
 * of SCAN batches. A chunk is compared in sub-batches (read-only script calls sized to a Redis
 * time budget and paced by the limiter), its differences are rechecked after a delay, its
 * findings are appended to the report, and only then is the node's cursor stored together with
 * its counts. Where lanes apply (`lane_phase.ts`), the jobs phase SCANs inside the script instead
 * (`lanes.ts`) and stores the lanes' cursors the same way. With `orphans`, each master's new keys
 * are scanned next.
 *
 * @module
 */
import type { Redis } from "../../redis/ioredis.ts";
import { type Logger, silentLogger } from "../../run_events.ts";
import type { FullVerifyDeps, FullVerifyOptions } from "./options.ts";
import type { CheckContext, CheckedJob } from "./check.ts";
import {
  addCounts,
  type FullCounts,
  LANES_CURSOR,
  type NodeProgress,
  type VerifyState,
  zeroCounts,
} from "./checkpoint.ts";
import { NodeCalls } from "./node_calls.ts";
import { logClientClocks } from "../../control/call_clock.ts";
import { readAhead, type ScanChunk, scanChunks } from "./chunks.ts";
import { SubBatches } from "./sub_batches.ts";
import {
  applyRescan,
  freshProgress,
  identify,
  type NodeIdentity,
  NodeRestartedError,
  planRescan,
  runIdOf,
} from "./restarts.ts";
import { type FullReport, fullReport } from "./summary.ts";
import { ProgressLog } from "./progress_log.ts";
import { resumeState, verifyParams } from "./resume.ts";
import { type CheckedChunk, checkJobChunk, checkOrphanChunk } from "./chunk_check.ts";
import type { LaneCommit } from "./lanes.ts";
import { checkProgressForm, lanesApply, nodeTakesLanes, runLanePhase } from "./lane_phase.ts";

export type { FullVerifyDeps, FullVerifyOptions } from "./options.ts";

/** SCAN COUNT: ~250 buckets keep one SCAN (MATCH on a store of both schemas) near 0.25 ms. */
const SCAN_COUNT = 250;

/**
 * Runs (or resumes) a full verify and returns its report; writes only `<P>:verify:state`.
 *
 * @throws {SafetyRefusal} when a stored checkpoint was made with other parameters.
 * @throws the abort reason when `deps.signal` aborts; Redis errors as they are.
 */
export async function runFullVerify(
  options: FullVerifyOptions,
  deps: FullVerifyDeps,
): Promise<FullReport> {
  const started = performance.now();
  const logger = deps.logger ?? silentLogger;
  const calls = new NodeCalls(deps.target, {
    signal: deps.signal,
    onlyWorkspace: options.workspace,
    keys: options.keys,
    callBudgetUs: options.callBudgetUs,
    toleranceMs: options.ttlToleranceSeconds * 1000,
    callClock: options.callClock,
    callsInFlight: options.callsInFlight,
  });
  await calls.init();
  await logClientClocks(
    deps.target,
    (node) => calls.clockOf(node),
    logger,
    options.callClock,
    "; their jobs are checked in sub-batches, not lanes",
  );
  const { state, stored } = await resumeState({
    params: verifyParams(options),
    resetProgress: options.resetProgress,
    checkpoint: deps.checkpoint,
    report: deps.report,
    logger,
  });
  const run = new FullRun(options, deps, calls, state, logger, started);
  await run.rescanRestarted();
  const total = zeroCounts();
  for (const node of deps.target.masters()) addCounts(total, await run.node(node));
  const durationMs = run.elapsedMs();
  await deps.checkpoint.clear();
  return fullReport({
    counts: total,
    min_parity: options.minParity,
    orphans_checked: options.orphans,
    workspace: options.workspace ?? null,
    duration_seconds: Math.round(durationMs) / 1000,
    resumed: stored !== undefined,
    redis_calls: {
      calls: calls.stats.calls,
      mean_ms: calls.stats.calls === 0 ? 0 : calls.stats.totalUs / calls.stats.calls / 1000,
      max_ms: calls.stats.maxUs / 1000,
    },
    report: deps.report?.path ?? null,
  });
}

/** The per-node loop and its chunks. */
class FullRun {
  readonly #ctx: CheckContext;
  readonly #batches: SubBatches;
  readonly #identities = new Map<Redis, NodeIdentity>();
  /** Whether each master's jobs phase runs on lanes (`lanes.ts`). */
  readonly #onLanes = new Map<Redis, boolean>();
  /** Time of the earlier sessions, as loaded (`state.elapsedMs` moves on with each save). */
  readonly #priorMs: number;
  readonly #sessionStart: number;
  readonly #progressLog: ProgressLog;

  constructor(
    readonly options: FullVerifyOptions,
    readonly deps: FullVerifyDeps,
    readonly calls: NodeCalls,
    readonly state: VerifyState,
    readonly logger: Logger,
    sessionStart: number,
  ) {
    this.#priorMs = state.elapsedMs;
    this.#sessionStart = sessionStart;
    this.#progressLog = new ProgressLog(logger, options.progressIntervalMs ?? 10_000);
    this.#ctx = {
      calls,
      keys: options.keys,
      workspace: options.workspace,
      toleranceMs: options.ttlToleranceSeconds * 1000,
    };
    this.#batches = new SubBatches({
      recheck: options.recheck,
      recheckDelayMs: options.recheckDelayMs,
      limiter: deps.limiter,
      rps: options.rps,
      callBudgetUs: options.callBudgetUs ?? 250,
      inFlight: options.inFlight ?? 4,
      signal: deps.signal,
    });
  }

  /**
   * Drops the progress of masters that restarted since the checkpoint (and, with a report, of the
   * nodes whose findings follow theirs), cuts the report back, and stores that in one HSET.
   */
  async rescanRestarted(): Promise<void> {
    const current = new Map<string, string>();
    for (const node of this.deps.target.masters()) {
      const identity = await identify(node, this.deps.target.kind === "cluster");
      this.#identities.set(node, identity);
      current.set(identity.id, identity.runId);
    }
    const plan = planRescan(this.state.nodes, current, this.deps.report !== undefined);
    if (plan.dropped.length === 0) return;
    this.logger.log(
      "warn",
      "verify_node_restarted",
      `${plan.restarted.length} master(s) restarted since their keys were checked (new run_id): ` +
        `${plan.dropped.length} master(s) are checked again from the start`,
      { restarted: plan.restarted, rechecked: plan.dropped },
    );
    // The dropped counts are stored before the report loses their findings: a crash in between
    // leaves findings without counts, which the report's cut on resume removes.
    await this.deps.checkpoint.save(this.state, ...applyRescan(this.state, plan, current));
    if (plan.cut !== undefined) await this.deps.report?.startAt(plan.cut);
  }

  /** Verifies one master (resuming its stored progress) and returns its counts. */
  async node(node: Redis): Promise<FullCounts> {
    for (;;) {
      try {
        return await this.#node(node);
      } catch (error) {
        if (!(error instanceof NodeRestartedError)) throw error;
        await this.rescanRestarted();
      }
    }
  }

  async #node(node: Redis): Promise<FullCounts> {
    const { id, runId } = this.#identities.get(node) ??
      await identify(node, this.deps.target.kind === "cluster");
    const progress = this.state.nodes.get(id) ?? freshProgress(runId, 0);
    if (progress.phase === "jobs" && progress.cursor === "0") {
      // Nothing counted yet: this node's findings begin here.
      progress.reportFrom = this.deps.report?.bytes ?? 0;
    }
    this.state.nodes.set(id, progress);
    while (progress.phase !== "done") {
      await this.#phase(node, id, progress);
      progress.phase = progress.phase === "jobs" && this.options.orphans ? "orphans" : "done";
      progress.cursor = "0";
      delete progress.lanes;
      await this.#save(id, node, runId);
    }
    return progress.counts;
  }

  async #phase(node: Redis, id: string, progress: NodeProgress): Promise<void> {
    const jobs = progress.phase === "jobs";
    const lanes = jobs && await this.#takesLanes(node);
    const where = { key: this.deps.checkpoint.key, node: this.deps.target.nodeName(node) };
    checkProgressForm(progress, lanes, where);
    if (lanes) return await this.#lanes(node, id, progress);
    // New keys; with a workspace, only that workspace's (the name tells).
    const workspace = this.options.workspace;
    const { keys } = this.options;
    const newMatch = workspace === undefined ? keys.newMatch : keys.newMatchFor(workspace);
    const chunks = scanChunks(node, {
      match: jobs ? keys.oldMatch : newMatch,
      count: SCAN_COUNT,
      cursor: progress.cursor,
      chunkKeys: () => this.#chunkKeys(),
    });
    // The next chunk is scanned while this one is checked, and this one is committed while the
    // next is checked: Redis does not wait for the client's counting and checkpoint between two.
    let committing: Promise<void> = Promise.resolve();
    try {
      for await (const chunk of readAhead(chunks)) {
        const deps = { batches: this.#batches, ctx: this.#ctx };
        const checked = jobs
          ? await checkJobChunk(chunk.keys, deps)
          : await checkOrphanChunk(chunk.keys, deps);
        await committing;
        committing = this.#commit({ node, id, progress }, chunk, checked);
        // Awaited before the next commit, or in `finally`; never an unhandled rejection.
        committing.catch(() => {});
      }
      await committing;
    } finally {
      await committing.catch(() => {});
    }
  }

  /** True when `node`'s jobs phase runs on lanes (the options and its server allow it). */
  async #takesLanes(node: Redis): Promise<boolean> {
    let lanes = this.#onLanes.get(node);
    if (lanes === undefined) {
      // A lane call stops by the script's own clock: where time stands still inside a script,
      // the jobs go on sub-batches, whose calls the client sizes and times.
      lanes = lanesApply(this.options) &&
        await nodeTakesLanes(node, this.deps.target.kind === "cluster") &&
        (await this.calls.clockOf(node)).source === "script";
      this.#onLanes.set(node, lanes);
    }
    return lanes;
  }

  /** The jobs phase on lanes, from the stored lane cursors (or their starts). */
  async #lanes(node: Redis, id: string, progress: NodeProgress): Promise<void> {
    const { options, deps } = this;
    await runLanePhase(node, progress, {
      ranges: this.calls.rangesOf(node),
      toleranceMs: options.ttlToleranceSeconds * 1000,
      callBudgetUs: options.callBudgetUs ?? 250,
      rps: options.rps,
      limiter: deps.limiter,
      chunkKeys: () => this.#chunkKeys(),
      signal: deps.signal,
    }, {
      chunk: { batches: this.#batches, ctx: this.#ctx },
      calls: this.calls,
      commit: (window) => this.#commitLanes({ node, id, progress }, window),
    });
  }

  /**
   * Counts a window of lane calls, appends its findings and stores the lanes' cursors with the
   * counts (one HSET); the last window is stored with the phase's end by the caller.
   */
  async #commitLanes(
    { node, id, progress }: { node: Redis; id: string; progress: NodeProgress },
    window: LaneCommit,
  ): Promise<void> {
    // Findings reach the disk before the counts that include them are stored.
    await this.deps.report?.append(window.findings);
    addCounts(progress.counts, window.counts);
    progress.lanes = window.cursors;
    progress.cursor = LANES_CURSOR;
    if (!window.done) await this.#save(id, node, progress.runId);
    this.#progressLog.note(this.deps.target.nodeName(node), progress, window.keys);
  }

  /**
   * Counts a checked chunk, appends its findings to the report and stores the node's cursor with
   * its counts. Commits run one after the other, in chunk order.
   */
  async #commit(
    { node, id, progress }: { node: Redis; id: string; progress: NodeProgress },
    chunk: ScanChunk,
    { counts, findings }: CheckedChunk,
  ): Promise<void> {
    counts.scan_duplicates = chunk.duplicates;
    // Findings reach the disk before the counts that include them are stored.
    await this.deps.report?.append(findings);
    addCounts(progress.counts, counts);
    progress.cursor = chunk.next;
    if (chunk.next !== "0") await this.#save(id, node, progress.runId);
    this.#progressLog.note(this.deps.target.nodeName(node), progress, chunk.keys.length);
  }

  /**
   * Keys per checkpointed chunk: about two seconds of work under `--rps` (between 1 000 and
   * 10 000), so a paced verify stores its progress often and a crash re-checks little.
   */
  #chunkKeys(): number {
    if (this.options.chunkKeys !== undefined) return this.options.chunkKeys;
    return this.options.rps > 0 ? Math.min(10_000, Math.max(1_000, this.options.rps * 2)) : 10_000;
  }

  /**
   * Stores `id`'s progress, unless its server restarted meanwhile (a reconnect can hide that): the
   * counts since then may come from a SCAN cursor that means nothing on the new process.
   *
   * @throws {NodeRestartedError} when `node`'s run_id is no longer `runId`.
   */
  async #save(id: string, node: Redis, runId: string): Promise<void> {
    if (await runIdOf(node) !== runId) {
      throw new NodeRestartedError(this.deps.target.nodeName(node));
    }
    this.state.reportBytes = this.deps.report?.bytes ?? 0;
    this.state.elapsedMs = this.elapsedMs();
    await this.deps.checkpoint.save(this.state, id);
  }

  /**
   * Work time of this verify: the earlier sessions' (as loaded) plus this session's so far. Always
   * from the loaded value, never from `state.elapsedMs`: each save writes this total there, so
   * adding the session to it again would count the session twice.
   */
  elapsedMs(): number {
    return this.#priorMs + (performance.now() - this.#sessionStart);
  }
}

export type { CheckedJob };
