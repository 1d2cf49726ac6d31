/**
 * The run, per node: scan → admit → migrate → checkpoint → report. Batches pass the gate in
 * sub-batches, are copied by the strategy with per-key retries (run/copier.ts), counted, reported
 * and saved once their keys are final (the rule: run/checkpointer.ts). A lost Redis is waited for,
 * and the scan goes on from the last checkpoint (or from 0 after a restart).
 *
 * @module
 */
import {
  inProcessingOrder,
  keysAfter,
  positionAfter,
  withinRange,
} from "../checkpoint/batch_position.ts";
import { decideStart } from "../checkpoint/resume.ts";

import { type CallClockMode, roundTripMs } from "../control/call_clock.ts";
import { CallWindow, callWindowSize, MAX_CALL_WINDOW, runWindow } from "../control/call_window.ts";
import { type ScanBatch, scanBatches, TimedScan } from "../control/scanner.ts";
import type { MigrationStrategy, StrategyResult } from "../migrate/strategy.ts";
import { countResults, emptyCounters } from "../outcome.ts";
import { classify } from "../redis/errors.ts";
import type { Redis } from "../redis/ioredis.ts";
import { serverRunId } from "../redis/availability.ts";
import type { RedisTarget } from "../redis/target.ts";
import type { Logger, RunMode, RunObserver, Summary } from "../run_events.ts";
import { silentLogger } from "../run_events.ts";
import type { KeySchema } from "../schema.ts";
import { estimateTotal, initialEstimate, scanFraction } from "./estimate.ts";
import { ErrorStorm, ErrorStormError } from "./error_storm.ts";
import { type OutageOptions, recoverNode, throughOutages } from "./outage.ts";
import { RedisUnavailableError, SafetyRefusal } from "../errors.ts";
import {
  type BatchEnd,
  batchEnd,
  carriedTotals,
  Checkpointer,
  type Flight,
  type NodeState,
  type RunCheckpointStore,
  runParams,
  settleFlights,
  TotalsDelta,
} from "./checkpointer.ts";
import { callSize, type Gate, KeyRetry, sendBatch, type SendOptions } from "./copier.ts";
import { UncountedCopies } from "../migrate/uncounted_copies.ts";

/** How often each node's loss is checked against --max-outage. */
const WATCHDOG_MS = 250;

/** What the engine needs from the command line. */
export interface BackfillOptions {
  mode: RunMode;
  batch: number;
  cursor?: string;
  maxKeys?: number;
  workspace?: string;
  keys: KeySchema;
  resetProgress: boolean;
  /** Seconds to wait for a lost Redis (or one refusing writes) before giving up. */
  maxOutage: number;
  /** `--max-call-ms` (default 0.25). */
  maxCallMs?: number;
  callClock?: CallClockMode;
  /** Calls in flight per node (see `#openTraffic`). */
  callWindow?: "round-trip" | "deep";
  /** `--max-latency`'s bound, applied while `shared` says another client may wait (default: always). */
  maxCallsInFlight?: number;
  shared?: (node: string) => boolean;
}

/** Collaborators of a run, injected. */
export interface BackfillDeps {
  target:
    & Pick<RedisTarget, "masters" | "nodeName">
    & Partial<Pick<RedisTarget, "redacted" | "lostSince" | "abandon">>;
  strategy: MigrationStrategy;
  checkpoints: RunCheckpointStore;
  /** Every sub-batch passes it: the rate limit and the admission checks (throttle, pauses). */
  gate: Pick<Gate, "rps" | "admit" | "settle"> & Partial<Pick<Gate, "rateFor">>;
  observer?: RunObserver;
  logger?: Logger;
  /** Aborted by SIGINT/SIGTERM: stop at the next sub-batch boundary and save the checkpoint. */
  signal?: AbortSignal;
  /** The node id used in checkpoint keys ("" = standalone). */
  nodeId?: (node: Redis) => Promise<string>;
}

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
  readonly #storm: ErrorStorm;
  readonly #sending: Omit<SendOptions, "node">;
  readonly #outage: OutageOptions;
  readonly #started = performance.now();
  /** Keys handed out so far: `--max-keys` is shared by every node. */
  #claimed = 0;
  readonly #saves: Checkpointer;
  readonly #uncounted = new UncountedCopies();
  #estimate = 0;
  /** Every node of the run, as opened; their `committed` cursors are the resume cursor. */
  readonly #states: NodeState[] = [];
  /**
   * Aborted by the first failure of any node: it stops the others as a stop signal does (the
   * batches in flight settle, are counted and saved), so the run ends as one, with a summary.
   */
  readonly #halt = new AbortController();
  /** The stop signal (SIGINT/SIGTERM, a lost lock, live control) or a failure of any node. */
  readonly #signal: AbortSignal;
  #failure: { error: unknown } | undefined;

  constructor(options: BackfillOptions, deps: BackfillDeps) {
    this.#options = options;
    this.#deps = deps;
    this.#signal = deps.signal
      ? AbortSignal.any([deps.signal, this.#halt.signal])
      : this.#halt.signal;
    this.#log = deps.logger ?? silentLogger;
    this.#params = runParams({
      workspace: options.workspace,
      ...options.keys.fingerprint,
      match: options.keys.oldMatch,
    });
    this.#retry = new KeyRetry({
      strategy: deps.strategy,
      migrate: {
        dryRun: options.mode === "dry-run",
        workspace: options.workspace,
        signal: this.#signal,
      },
      gate: deps.gate,
      logger: this.#log,
      keys: options.keys,
      maxOutageMs: options.maxOutage * 1000,
      uncounted: this.#uncounted,
    });
    this.#saves = new Checkpointer({
      store: deps.checkpoints,
      mode: options.mode,
      params: this.#params,
      retry: this.#retry,
    });
    this.#sending = {
      gate: deps.gate,
      retry: this.#retry,
      subBatchSize: (node) =>
        callSize(node, { gate: deps.gate, strategy: deps.strategy, batch: options.batch }),
      observer: deps.observer,
      signal: this.#signal,
      uncounted: this.#uncounted,
    };
    this.#outage = {
      target: deps.target,
      logger: this.#log,
      maxOutage: options.maxOutage,
      signal: this.#signal,
    };
    this.#storm = new ErrorStorm(options.batch);
  }

  async execute(): Promise<Summary> {
    const { target, observer } = this.#deps;
    const starting = (what: string) => ({ ...this.#outage, what });
    await throughOutages(() => this.#deps.strategy.init(), starting("loading the scripts"));
    const masters = target.masters();
    const estimate = await throughOutages(
      () => initialEstimate(masters, this.#options.keys.oldPrefix.toString()),
      { ...starting("estimating the keys to scan"), readOnly: true },
    );
    this.#estimate = Math.min(estimate, this.#options.maxKeys ?? Infinity);
    const carried = await throughOutages(
      () => carriedTotals(this.#deps.checkpoints, this.#options),
      { ...starting("reading the stored totals"), readOnly: true },
    );
    observer?.onStart?.({
      mode: this.#options.mode,
      rps: this.#deps.gate.rps,
      estimatedTotal: this.#estimate,
      progressKey: this.#deps.checkpoints.prefix,
      carried,
    });
    // Every node settles before the summary: a failed node halts the others first.
    const settled = await Promise.allSettled(masters.map(async (node) => {
      try {
        return await this.#runNode(node);
      } catch (error) {
        this.#fail(error);
        throw error;
      }
    }));
    const completedAll = settled.every((s) => s.status === "fulfilled" && s.value);
    if (this.#failure === undefined && completedAll) {
      // The pass is complete: the next run starts over (nodes finished earlier were skipped).
      await this.#saves.passComplete(this.#states).catch((error) => this.#fail(error));
    }
    const failure = this.#failure;
    const summary: Summary = {
      mode: this.#options.mode,
      ...this.counters,
      duration_seconds: Math.round((performance.now() - this.#started) / 10) / 100,
      completed: failure === undefined && completedAll,
      cursor: this.#resumeCursor(),
    };
    if (failure !== undefined) {
      (failure.error as { summary?: Summary }).summary = summary;
      throw failure.error;
    }
    return summary;
  }

  #fail(error: unknown): void {
    if (this.#failure !== undefined) return;
    this.#failure = { error };
    this.#halt.abort(error);
  }

  /** One node to its end, a stop, or a failure; true when its scan completed. */
  async #runNode(node: Redis): Promise<boolean> {
    const state = await throughOutages(
      () => this.#openNode(node),
      { ...this.#outage, what: "reading the checkpoint" },
    );
    this.#states.push(state);
    if (state.finished) return true;
    const watchdog = this.#watch(state);
    try {
      for (;;) {
        try {
          return await this.#scanNode(state);
        } catch (error) {
          if (this.#signal.aborted) return false;
          if (!classify(error).outage) throw error;
          const recovery = {
            ...this.#outage,
            needsPrimary: this.#options.mode === "execute",
            observer: this.#deps.observer,
          };
          if (!await recoverNode(state, error, recovery)) return false;
        }
      }
    } finally {
      clearInterval(watchdog);
    }
  }

  /**
   * Ends the run when the node has been lost for --max-outage, whatever its loop waits on (a call a
   * frozen server never answers, a cluster call's own retries): its connections are closed, so what
   * is pending on them fails now.
   */
  #watch(state: NodeState): ReturnType<typeof setInterval> {
    const { target } = this.#deps;
    return setInterval(() => {
      const since = target.lostSince?.(state.node);
      if (since === undefined || this.#signal.aborted) return;
      if (performance.now() - since < this.#options.maxOutage * 1000) return;
      const where = target.nodeName(state.node);
      const message = `lost Redis at ${where} for longer than --max-outage; ` +
        `the checkpoint is kept at cursor=${state.committed}`;
      this.#fail(new RedisUnavailableError(message));
      target.abandon?.(state.node);
    }, WATCHDOG_MS);
  }

  /**
   * Scans from `state.committed`; true when the scan completed. Batches finish (counted, saved) in
   * order as their replies come in, within the checkpoint rule's window (run/checkpointer.ts).
   */
  async #scanNode(state: NodeState): Promise<boolean> {
    // After a lost connection: what its unanswered calls copied is this run's, when re-read.
    for (const lost of await this.#deps.strategy.lostCopies?.() ?? []) {
      this.#uncounted.remember(lost.keys, lost.results);
    }
    const batchesInFlight = this.#deps.strategy.batchesInFlight ?? 1;
    const { batches, calls } = await this.#openTraffic(state);
    const flights: Flight[] = [];
    let finished: Promise<unknown> = Promise.resolve();
    // A failed batch ends the scan: the next one must not wait on (e.g.) a memory pause to send.
    const abandoned = new AbortController();
    let scanDone = false;
    try {
      for await (const batch of batches) {
        state.outageSince = undefined;
        // A stored position holds for every batch inside the range it was taken in.
        const resumedFrom = state.within;
        if (!resumedFrom || !withinRange(batch.next, resumedFrom)) state.within = undefined;
        const unclaimed = keysAfter(inProcessingOrder(batch.keys), batch.next, resumedFrom);
        const { keys, trimmed } = this.#claim(unclaimed);
        const started = performance.now();
        const sent = await sendBatch(keys, {
          ...this.#sending,
          node: state.name,
          window: calls,
          abandon: abandoned.signal,
        });
        sent.results.catch(() => abandoned.abort());
        const flight: Flight = { batch, keys, trimmed, started, resumedFrom, ...sent };
        const end = finished.then(() => this.#finish(state, flight));
        end.catch(() => abandoned.abort());
        flight.end = finished = end;
        flights.push(flight);
        const stop = !sent.complete || trimmed || this.#signal.aborted ||
          (this.#claimed >= (this.#options.maxKeys ?? Infinity) && batch.next !== "0");
        scanDone = await settleFlights(flights, stop ? 0 : batchesInFlight - 1) ?? scanDone;
        if (stop) return false;
      }
      scanDone = await settleFlights(flights, 0) ?? scanDone;
    } catch (error) {
      // Every abandoned batch settles first. After a storm what the batches behind it did is
      // counted and reported, not saved; after an outage they are re-read and count then.
      await Promise.allSettled(flights.map((f) => f.end));
      for (const flight of flights.filter((f) => !f.counted)) {
        const results = await flight.results.catch(() => undefined);
        if (results === undefined) continue;
        if (!(error instanceof ErrorStormError)) {
          this.#uncounted.remember(flight.keys, results);
          continue;
        }
        countResults(this.counters, results);
        this.#report(state, flight, results, false);
      }
      throw error;
    }
    if (!scanDone || this.#signal.aborted) return false;
    await this.#saves.complete(state);
    return true;
  }

  /** A batch's replies are in: count them, and store its checkpoint (run/checkpointer.ts). */
  async #finish(state: NodeState, flight: Flight): Promise<BatchEnd> {
    const results = this.#uncounted.settle(flight.keys, await flight.results);
    // A storm stops the run only after this batch is counted and reported (never saved past).
    const storm = this.#storm.observe(results);
    if (results.length > 0) {
      state.lastJob = this.#options.keys.idOf(flight.keys[results.length - 1]!);
    }
    const end = batchEnd({
      flight,
      processed: results.length,
      msSinceSave: performance.now() - state.lastSave,
      execute: this.#options.mode === "execute",
    });
    if (!flight.complete || flight.trimmed) {
      // Cut short: the next run re-reads it and goes on after its last processed key.
      const done = flight.keys.slice(0, results.length);
      state.within = positionAfter(done, flight.batch, flight.resumedFrom);
    }
    flight.counted = true;
    // An open error streak holds the checkpoint, so a rerun retries the keys it failed.
    if (end.save && !this.#storm.holding) {
      await this.#saves.save(state, end.resumeAt, results).catch((error) => {
        // Lost with the connection: the batch is read again, and its copies count then.
        if (classify(error).outage) this.#uncounted.remember(flight.keys, results);
        else countResults(this.counters, results);
        throw error;
      });
    } else {
      this.#saves.count(state, results);
    }
    countResults(this.counters, results);
    state.committed = end.resumeAt;
    this.#report(state, flight, results, end.scanDone);
    if (storm !== undefined) throw storm;
    return end;
  }

  /** Refines the estimate (never above --max-keys) and tells the observer about the batch. */
  #report(state: NodeState, flight: Flight, results: StrategyResult[], scanDone: boolean): void {
    const estimate = estimateTotal({
      initial: this.#estimate,
      seen: this.counters.scanned,
      startFraction: state.startFraction,
      fraction: scanDone ? 1 : scanFraction(flight.batch.next),
      done: scanDone && this.#deps.target.masters().length === 1,
    });
    this.#estimate = Math.min(estimate, this.#options.maxKeys ?? Infinity);
    this.#deps.observer?.onBatch?.({
      node: state.name,
      results,
      seconds: (performance.now() - flight.started) / 1000,
      totals: { ...this.counters },
      estimatedTotal: this.#estimate,
      cursor: state.committed,
    });
  }

  /**
   * The node's identity, and where its scan starts (checkpoint/resume.ts).
   *
   * @throws {SafetyRefusal} when the stored checkpoint must not be resumed.
   */
  async #openNode(node: Redis): Promise<NodeState & { finished: boolean }> {
    const { target, checkpoints, nodeId: nodeIdOf } = this.#deps;
    const name = target.nodeName(node);
    const nodeId = nodeIdOf ? await nodeIdOf(node) : "";
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
    if (decision.log) {
      const { level, event, message, fields } = decision.log;
      this.#log.log(level, event, message, fields);
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
      startFraction: finished ? 1 : scanFraction(decision.cursor),
      lastSave: 0,
      unsaved: new TotalsDelta(),
    };
  }

  /**
   * A node's call window and SCAN batches from `state.committed`, measured afresh (also after an
   * outage). A `round-trip` window keeps a round trip's worth of calls in flight, and while another
   * client is active no more than `--max-latency` allows; a `deep` one (raw speed) keeps
   * {@linkcode MAX_CALL_WINDOW}, so the client's own pauses (GC, sorting a SCAN reply) never leave
   * Redis idle.
   */
  async #openTraffic(state: NodeState): Promise<{
    batches: AsyncGenerator<ScanBatch>;
    calls: CallWindow;
  }> {
    const { node } = state;
    const options = this.#options;
    const maxCallMs = options.maxCallMs ?? 0.25;
    const calls = options.callWindow === "deep" ? new CallWindow(MAX_CALL_WINDOW) : runWindow({
      roundTrip: callWindowSize(await roundTripMs(node), maxCallMs),
      budget: options.maxCallsInFlight,
      shared: () => options.shared?.(state.name) ?? true,
    });
    const scanner = new TimedScan(node, {
      maxCallMs,
      maxCount: options.batch,
      callClock: options.callClock,
      window: calls,
    });
    const batches = scanBatches(scanner, {
      match: this.#options.keys.oldMatch,
      cursor: state.committed,
      // A batch re-read from a stored position asks for the COUNT it was read with.
      firstCount: state.within?.count,
    });
    return { batches, calls };
  }

  /** The part of `keys` that `--max-keys` still allows; `trimmed` when it cut them. */
  #claim(keys: Buffer[]): { keys: Buffer[]; trimmed: boolean } {
    const left = (this.#options.maxKeys ?? Infinity) - this.#claimed;
    const trimmed = keys.length > left;
    const claimed = trimmed ? keys.slice(0, Math.max(left, 0)) : keys;
    this.#claimed += claimed.length;
    return { keys: claimed, trimmed };
  }

  /** The cursor to resume from: one node's, or `host:port=cursor` per node (also after a failure). */
  #resumeCursor(): string {
    if (this.#states.length === 1) return this.#states[0]!.committed;
    return this.#states.map((state) => `${state.name}=${state.committed}`).join(",");
  }
}
