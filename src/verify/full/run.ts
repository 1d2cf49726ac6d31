/**
 * `backfill verify --full`: every old key compared with its new key, master by master, in
 * checkpointed chunks of its SCAN. A chunk is checked and rechecked, its findings appended to the
 * report, and only then the node's cursor stored with its counts. With `orphans`, each master's
 * new keys are scanned next.
 *
 * @module
 */
import { serverRunId } from "../../redis/availability.ts";
import type { Redis } from "../../redis/ioredis.ts";
import { type Logger, silentLogger } from "../../run_events.ts";
import {
  type CheckOptions,
  type Checks,
  type Counted,
  countJobs,
  countOrphans,
  openChecks,
} from "../pairs.ts";
import { newPopulation } from "../sample.ts";
import type { SubBatches } from "../sub_batches.ts";
import {
  applyRescan,
  freshProgress,
  identify,
  type NodeProgress,
  NodeRestartedError,
  planRescan,
  resumeState,
  type VerifyCheckpoint,
  verifyParams,
  type VerifyState,
} from "./checkpoint.ts";
import { TimedScan } from "../../control/scanner.ts";
import { logClientClocks } from "../../control/call_clock.ts";
import { readAhead, type ScanChunk, scanChunks } from "./chunks.ts";
import {
  addCounts,
  type FullCounts,
  type FullReport,
  fullReport,
  mismatched,
  type ReportFile,
  zeroCounts,
} from "./report.ts";
import type { RateLimiter } from "../../control/rate_limit.ts";
import type { RedisTarget } from "../../redis/target.ts";

/** What to verify and how (`rps` paces old and new keys alike). */
export interface FullVerifyOptions extends CheckOptions {
  /** Percentage of parity needed to pass (`--min-parity`). */
  minParity: number;
  /** Also scan the new schema for orphans. */
  orphans: boolean;
  /** Ignore (and overwrite) a stored checkpoint. */
  resetProgress: boolean;
  /** Keys per checkpointed chunk (default: `FullRun.#chunkKeys`). */
  chunkKeys?: number;
}

/** Collaborators of {@linkcode runFullVerify}. */
export interface FullVerifyDeps {
  target: Pick<RedisTarget, "kind" | "client" | "masters" | "nodeName">;
  checkpoint: VerifyCheckpoint;
  limiter: Pick<RateLimiter, "acquire">;
  report?: ReportFile;
  logger?: Logger;
  signal?: AbortSignal;
}

/** The largest SCAN COUNT (each SCAN's COUNT is sized to the call bound). */
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
  const checks = await openChecks(deps.target, options, deps);
  const { calls } = checks.ctx;
  await logClientClocks(deps.target, (node) => calls.clockOf(node), logger, options.callClock);
  const { state, resumed } = await resumeState({
    params: verifyParams(options),
    resetProgress: options.resetProgress,
    checkpoint: deps.checkpoint,
    report: deps.report,
    logger,
  });
  const run = new FullRun(options, deps, checks, state, logger, started);
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
    resumed,
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
  readonly #batches: SubBatches;
  readonly #identities = new Map<Redis, { id: string; runId: string }>();
  /** Time of the earlier sessions, as loaded (`state.elapsedMs` moves on with each save). */
  readonly #priorMs: number;
  readonly #sessionStart: number;
  #lastProgressLog = performance.now();
  #checkedThisSession = 0;

  constructor(
    readonly options: FullVerifyOptions,
    readonly deps: FullVerifyDeps,
    readonly checks: Checks,
    readonly state: VerifyState,
    readonly logger: Logger,
    sessionStart: number,
  ) {
    this.#priorMs = state.elapsedMs;
    this.#sessionStart = sessionStart;
    this.#batches = checks.batches();
  }

  /** Drops (one HSET) the progress restarts undid ({@linkcode planRescan}), cuts the report. */
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
    // Every master was identified by `rescanRestarted`, which runs first.
    const { id, runId } = this.#identities.get(node)!;
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
      await this.#save(id, node, runId);
    }
    return progress.counts;
  }

  async #phase(node: Redis, id: string, progress: NodeProgress): Promise<void> {
    const jobs = progress.phase === "jobs";
    // SCANs take a place in the master's call window: they share the connection with the calls.
    const scanner = new TimedScan(node, {
      maxCallMs: this.checks.ctx.calls.callBudgetUs / 1000,
      maxCount: SCAN_COUNT,
      callClock: this.options.callClock,
      window: this.checks.ctx.calls.windowFor(node),
    });
    const chunks = scanChunks(scanner, {
      match: jobs
        ? this.options.keys.oldMatch
        : newPopulation(this.options.keys, this.options.workspace).match,
      cursor: progress.cursor,
      chunkKeys: this.#chunkKeys(),
    });
    // The next chunk is scanned while this one is checked, and this one is committed while the
    // next is checked: Redis does not wait for the client's counting and checkpoint between two.
    let committing: Promise<void> = Promise.resolve();
    try {
      for await (const chunk of readAhead(chunks)) {
        const checked = await (jobs ? countJobs : countOrphans)(
          chunk.keys,
          this.checks.ctx,
          this.#batches,
        );
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

  /** Appends a checked chunk's findings, then stores its counts with the cursor; in chunk order. */
  async #commit(
    { node, id, progress }: { node: Redis; id: string; progress: NodeProgress },
    chunk: ScanChunk,
    { counts, findings }: Counted,
  ): Promise<void> {
    counts.scan_duplicates = chunk.duplicates;
    await this.deps.report?.append(findings);
    addCounts(progress.counts, counts);
    progress.cursor = chunk.next;
    if (chunk.next !== "0") await this.#save(id, node, progress.runId);
    this.#logProgress(this.deps.target.nodeName(node), progress, chunk.keys.length);
  }

  /** The `verify_progress` log line: `node`'s running counts, at most every 10 s. */
  #logProgress(node: string, progress: NodeProgress, keys: number): void {
    this.#checkedThisSession += keys;
    const now = performance.now();
    if (now - this.#lastProgressLog < 10_000) return;
    this.#lastProgressLog = now;
    const c = progress.counts;
    this.logger.log(
      "info",
      "verify_progress",
      `${node} ${progress.phase}: ${c.checked} checked, ${c.matched} matched, ${c.orphans} orphans`,
      {
        node,
        phase: progress.phase,
        checked: c.checked,
        matched: c.matched,
        mismatched: mismatched(c),
        orphans: c.orphans,
        scanned_this_session: this.#checkedThisSession,
      },
    );
  }

  /** Keys per chunk: about two seconds of work under `--rps`, so a crash re-checks little. */
  #chunkKeys(): number {
    if (this.options.chunkKeys !== undefined) return this.options.chunkKeys;
    return this.options.rps > 0 ? Math.min(10_000, Math.max(1_000, this.options.rps * 2)) : 10_000;
  }

  /**
   * Stores `id`'s progress, unless its server restarted meanwhile (a reconnect can hide that):
   * its cursor means nothing on the new process.
   *
   * @throws {NodeRestartedError} when `node`'s run_id is no longer `runId`.
   */
  async #save(id: string, node: Redis, runId: string): Promise<void> {
    if (await serverRunId(node) !== runId) {
      throw new NodeRestartedError(this.deps.target.nodeName(node));
    }
    this.state.reportBytes = this.deps.report?.bytes ?? 0;
    this.state.elapsedMs = this.elapsedMs();
    await this.deps.checkpoint.save(this.state, id);
  }

  /** Work time of this verify: the earlier sessions' (as loaded) plus this session's so far. */
  elapsedMs(): number {
    return this.#priorMs + (performance.now() - this.#sessionStart);
  }
}
