/**
 * The run, per node: scan → admit → migrate → checkpoint → report. Batches come out of the
 * scanner, pass the gate in sub-batches (rate limit, memory pause), are classified and copied by
 * the strategy (with per-key retries, run/retry.ts), and their outcomes flow into the counters and
 * to the observer; the checkpoint moves only after a batch's outcomes are in. A lost Redis is
 * waited for, and the scan goes on from the last checkpoint (or from 0 after a restart).
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import { decideStart } from "../checkpoint/resume.ts";
import { type CheckpointStore, runParams } from "../checkpoint/store.ts";
import type { Gate } from "../control/gate.ts";
import { SafetyRefusal } from "../errors.ts";
import type { MigrationStrategy, StrategyResult } from "../migrate/strategy.ts";
import { countResults, emptyCounters } from "../outcome.ts";
import { serverRunId } from "../redis/availability.ts";
import { classify } from "../redis/errors.ts";
import type { Redis } from "../redis/ioredis.ts";
import { type ScanBatch, scanBatches } from "../redis/scan.ts";
import type { RedisTarget } from "../redis/target.ts";
import type { Logger, RunMode, RunObserver, Summary } from "../run_events.ts";
import { silentLogger } from "../run_events.ts";
import { jobIdOf, OLD_MATCH, type WorkspaceRule } from "../schema.ts";
import { estimateTotal, initialEstimate, scanFraction } from "./estimate.ts";
import { type NodeState, recoverNode } from "./outage.ts";
import { KeyRetry } from "./retry.ts";

/** What the engine needs from the command line. */
export interface BackfillOptions {
  mode: RunMode;
  batch: number;
  cursor?: string;
  maxKeys?: number;
  workspace?: string;
  rule: WorkspaceRule;
  resetProgress: boolean;
  /** Seconds to wait for a lost Redis (or one refusing writes) before giving up. */
  maxOutage: number;
}

/** Collaborators of a run (all injected, so tests and other topologies plug in). */
export interface BackfillDeps {
  target: Pick<RedisTarget, "masters" | "nodeName">;
  strategy: MigrationStrategy;
  checkpoints: Pick<CheckpointStore, "prefix" | "load" | "save" | "clear">;
  /** Every sub-batch passes it: the rate limit and the admission checks (throttle, pauses). */
  gate: Pick<Gate, "rps" | "admit" | "settle"> & Partial<Pick<Gate, "rateFor">>;
  observer?: RunObserver;
  logger?: Logger;
  /** Aborted by SIGINT/SIGTERM: stop at the next sub-batch boundary and save the checkpoint. */
  signal?: AbortSignal;
  /** The node id used in checkpoint keys ("" = standalone). */
  nodeId?: (node: Redis) => Promise<string>;
}

/** Largest sub-batch: a guard only; the strategy sizes calls by Redis time (`--max-call-ms`). */
export const MAX_SUB_BATCH = 100;

/** Runs the backfill to completion, `--max-keys`, or a stop signal, and returns the summary. */
export async function runBackfill(options: BackfillOptions, deps: BackfillDeps): Promise<Summary> {
  return await new Run(options, deps).execute();
}

class Run {
  readonly counters = emptyCounters();
  readonly #options: BackfillOptions;
  readonly #deps: BackfillDeps;
  readonly #log: Logger;
  readonly #params: string;
  readonly #retry: KeyRetry;
  readonly #started = performance.now();
  /** Old keys handed to processing so far (for --max-keys, shared by all nodes). */
  #claimed = 0;
  #estimate = 0;
  #dbsize = 0;
  /** Each node's resume cursor (what its checkpoint says, or would say in dry-run). */
  readonly #cursors = new Map<string, string>();

  constructor(options: BackfillOptions, deps: BackfillDeps) {
    this.#options = options;
    this.#deps = deps;
    this.#log = deps.logger ?? silentLogger;
    this.#params = runParams({
      workspace: options.workspace,
      pattern: options.rule.pattern.source,
      match: OLD_MATCH,
    });
    this.#retry = new KeyRetry({
      strategy: deps.strategy,
      migrate: {
        dryRun: options.mode === "dry-run",
        workspace: options.workspace,
        signal: deps.signal,
      },
      gate: deps.gate,
      logger: this.#log,
      maxOutageMs: options.maxOutage * 1000,
    });
  }

  async execute(): Promise<Summary> {
    const { target, observer } = this.#deps;
    await this.#deps.strategy.init();
    const masters = target.masters();
    const sizes = await Promise.all(masters.map((node) => node.dbsize()));
    this.#dbsize = sizes.reduce((a, b) => a + b, 0);
    this.#estimate = this.#capped(await initialEstimate(masters, sizes));
    observer?.onStart?.({
      mode: this.#options.mode,
      rps: this.#deps.gate.rps,
      estimatedTotal: this.#estimate,
      progressKey: this.#deps.checkpoints.prefix,
    });
    let completed: boolean[] = [];
    let failure: unknown;
    try {
      completed = await Promise.all(masters.map((node) => this.#runNode(node)));
    } catch (error) {
      failure = error;
    }
    const summary: Summary = {
      mode: this.#options.mode,
      ...this.counters,
      duration_seconds: Math.round((performance.now() - this.#started) / 10) / 100,
      completed: failure === undefined && completed.every(Boolean),
      cursor: this.#resumeCursor(),
    };
    if (failure !== undefined) {
      (failure as { summary?: Summary }).summary = summary;
      throw failure;
    }
    return summary;
  }

  /** One node to its end, a stop, or a failure; true when its scan completed. */
  async #runNode(node: Redis): Promise<boolean> {
    const state = await this.#openNode(node);
    for (;;) {
      try {
        return await this.#scanNode(state);
      } catch (error) {
        // A save still in flight either landed or failed with the same outage: settle it.
        await state.saving?.catch(() => {});
        state.saving = undefined;
        if (this.#deps.signal?.aborted) return false;
        if (!classify(error).outage) throw error;
        const recovery = {
          target: this.#deps.target,
          logger: this.#log,
          maxOutage: this.#options.maxOutage,
          needsPrimary: this.#options.mode === "execute",
          observer: this.#deps.observer,
          signal: this.#deps.signal,
        };
        if (!await recoverNode(state, error, recovery)) return false;
        this.#cursors.set(state.name, state.committed);
      }
    }
  }

  /** The node's identity and start cursor (per the resume policy, checkpoint/resume.ts). */
  async #openNode(node: Redis): Promise<NodeState> {
    const { target, checkpoints } = this.#deps;
    const name = target.nodeName(node);
    const nodeId = this.#deps.nodeId ? await this.#deps.nodeId(node) : "";
    const runId = await serverRunId(node);
    const decision = decideStart({
      mode: this.#options.mode,
      cursor: this.#options.cursor,
      resetProgress: this.#options.resetProgress,
      stored: await checkpoints.load(nodeId),
      params: this.#params,
      runId,
      node: name,
      perNode: nodeId !== "",
      prefix: checkpoints.prefix,
    });
    if (decision.kind === "refuse") throw new SafetyRefusal(decision.reason);
    if (decision.clear) await checkpoints.clear(nodeId);
    if (decision.log) {
      const { level, event, message, fields } = decision.log;
      this.#log.log(level, event, message, fields);
    }
    this.#cursors.set(name, decision.cursor);
    return {
      node,
      name,
      nodeId,
      runId,
      committed: decision.cursor,
      startFraction: scanFraction(decision.cursor, this.#dbsize),
      lastSave: 0,
    };
  }

  /** Scans from `state.committed`; true when the scan completed, false when it stopped early. */
  async #scanNode(state: NodeState): Promise<boolean> {
    const execute = this.#options.mode === "execute";
    const batches = scanBatches(state.node, {
      match: OLD_MATCH,
      count: this.#options.batch,
      cursor: state.committed,
    });
    for await (const batch of batches) {
      state.outageSince = undefined;
      const { keys, trimmed } = this.#claim(batch.keys);
      const started = performance.now();
      const { results, complete } = await this.#processBatch(keys, state.name);
      countResults(this.counters, results);
      if (results.length > 0) state.lastJob = jobIdOf(keys[results.length - 1]!);
      const finished = complete && !trimmed;
      // A batch that was cut short is re-read from its start next time (idempotent), so
      // nothing of it is lost; a finished one moves the cursor on.
      const resumeAt = finished ? batch.next : batch.cursor;
      const scanDone = finished && batch.next === "0";
      const due = results.length > 0 || performance.now() - state.lastSave > 1000;
      if (execute && !scanDone && due) await this.#save(state, resumeAt);
      state.committed = resumeAt;
      this.#cursors.set(state.name, scanDone ? "0" : resumeAt);
      this.#report(state, batch, results, started, scanDone);
      if (!finished || this.#deps.signal?.aborted || (this.#quotaUsed() && !scanDone)) {
        await state.saving;
        return false;
      }
    }
    await state.saving;
    if (execute) await this.#deps.checkpoints.clear(state.nodeId);
    return true;
  }

  /** The keys of a batch this run may still process under `--max-keys`. */
  #claim(keys: Buffer[]): { keys: Buffer[]; trimmed: boolean } {
    const left = (this.#options.maxKeys ?? Infinity) - this.#claimed;
    const trimmed = keys.length > left;
    const claimed = trimmed ? keys.slice(0, Math.max(left, 0)) : keys;
    this.#claimed += claimed.length;
    return { keys: claimed, trimmed };
  }

  #quotaUsed(): boolean {
    return this.#options.maxKeys !== undefined && this.#claimed >= this.#options.maxKeys;
  }

  /**
   * Sends a batch in sub-batches through the gate, all in flight at once, in key order.
   * On a stop signal no further sub-batch is sent; the ones in flight finish.
   */
  async #processBatch(
    keys: Buffer[],
    node: string,
  ): Promise<{ results: StrategyResult[]; complete: boolean }> {
    const { gate, observer, signal } = this.#deps;
    const inFlight: Promise<StrategyResult[]>[] = [];
    let complete = true;
    for (let i = 0; i < keys.length;) {
      const chunk = keys.slice(i, i + this.#subBatchSize(node));
      i += chunk.length;
      try {
        const waited = await gate.admit(chunk.length, { signal, node });
        if (waited > 0) observer?.onLimiterWait?.(waited);
      } catch (error) {
        if (!signal?.aborted) throw error;
        complete = false;
        break;
      }
      const work = this.#retry.migrate(chunk, node);
      work.catch(() => {});
      inFlight.push(work);
    }
    const settled = await Promise.allSettled(inFlight);
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
    if (failed) throw failed.reason;
    return {
      results: settled.flatMap((s) => (s as PromiseFulfilledResult<StrategyResult[]>).value),
      complete,
    };
  }

  /**
   * Keys of the next script call for `node`: about a tenth of a second's worth of its rate now,
   * no more than the strategy's time budget fits (`--max-call-ms`), the batch, and the guard.
   */
  #subBatchSize(node: string): number {
    const rps = this.#deps.gate.rateFor?.(node) ?? this.#deps.gate.rps;
    const wanted = rps > 0 ? Math.ceil(rps / 10) : MAX_SUB_BATCH;
    const fits = this.#deps.strategy.nextCallSize?.() ?? MAX_SUB_BATCH;
    return Math.max(1, Math.min(wanted, fits, this.#options.batch, MAX_SUB_BATCH));
  }

  /**
   * Saves the node's checkpoint at `cursor`, ordered against the next batch's writes as the
   * strategy requires: `pipelined` sends it now and awaits it only before the next save (the next
   * batch's scripts follow it on the same connection, so Redis applies it first); `awaited`
   * waits for it here, because saves and copies travel through different nodes.
   */
  async #save(state: NodeState, cursor: string): Promise<void> {
    await state.saving;
    const checkpoint = { cursor, lastJob: state.lastJob, runId: state.runId, params: this.#params };
    const saving = this.#retry.untilWritable(
      state.name,
      () => this.#deps.checkpoints.save(state.nodeId, checkpoint),
    );
    saving.catch(() => {});
    state.saving = saving;
    if (this.#deps.strategy.checkpointOrdering === "awaited") await saving;
    state.lastSave = performance.now();
  }

  /** Refines the estimate and tells the observer about the batch. */
  #report(
    state: NodeState,
    batch: ScanBatch,
    results: StrategyResult[],
    started: number,
    scanDone: boolean,
  ): void {
    this.#estimate = this.#capped(estimateTotal({
      initial: this.#estimate,
      seen: this.counters.scanned,
      startFraction: state.startFraction,
      fraction: scanDone ? 1 : scanFraction(batch.next, this.#dbsize),
      done: scanDone && this.#deps.target.masters().length === 1,
    }));
    this.#deps.observer?.onBatch?.({
      node: state.name,
      results,
      seconds: (performance.now() - started) / 1000,
      totals: { ...this.counters },
      estimatedTotal: this.#estimate,
      cursor: this.#cursors.get(state.name),
    });
  }

  /** The estimate, never above --max-keys. */
  #capped(estimate: number): number {
    const max = this.#options.maxKeys;
    return max === undefined ? estimate : Math.min(estimate, max);
  }

  /** The cursor to resume from: one node's, or `host:port=cursor` per node (also after a failure). */
  #resumeCursor(): string {
    if (this.#cursors.size === 1) return [...this.#cursors.values()][0]!;
    return [...this.#cursors].map(([name, cursor]) => `${name}=${cursor}`).join(",");
  }
}
