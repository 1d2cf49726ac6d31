/**
 * What a run stores for each node as it goes: the checkpoint (saved by the engine, or by the
 * batch's last script call where the strategy stores it in-script) and the migration's running
 * totals that travel with it. The engine decides when; this module knows how, and keeps each
 * node's counts that are not stored yet, so a failed save loses none of them.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import type { CheckpointStore, NodeCheckpoint } from "../checkpoint/store.ts";
import { TotalsDelta } from "../checkpoint/totals.ts";
import type { MigrationStrategy } from "../migrate/strategy.ts";
import type { KeyResult } from "../outcome.ts";
import type { RunMode } from "../run_events.ts";
import type { NodeState } from "./outage.ts";
import { CheckpointChain } from "./pipeline.ts";
import type { KeyRetry } from "./retry.ts";

/** The store operations a run uses. */
export type RunCheckpointStore = Pick<
  CheckpointStore,
  | "prefix"
  | "keys"
  | "load"
  | "save"
  | "finish"
  | "clear"
  | "addTotals"
  | "loadTotals"
  | "resetTotals"
>;

/** Options of {@linkcode NodeCheckpoints}. */
export interface NodeCheckpointsOptions {
  store: RunCheckpointStore;
  strategy: Pick<MigrationStrategy, "checkpointOrdering">;
  mode: RunMode;
  /** The run parameters stored with every checkpoint (a resume with others is refused). */
  params: string;
  /** Waits out OOM while saving (Redis refusing writes is no reason to lose the checkpoint). */
  retry: Pick<KeyRetry, "untilWritable">;
}

/** Checkpoints and running totals of every node of one run. */
export class NodeCheckpoints {
  readonly #options: NodeCheckpointsOptions;
  /** Each node's counts not yet in the stored totals (execute only). */
  readonly #unsaved = new Map<string, TotalsDelta>();

  constructor(options: NodeCheckpointsOptions) {
    this.#options = options;
  }

  /** Counts a batch's results toward the node's totals (stored with its next checkpoint). */
  count(state: NodeState, results: readonly KeyResult[]): void {
    if (this.#options.mode === "execute") this.#unsavedOf(state).add(results);
  }

  /**
   * In-script ordering (execute): the store must hold `state.committed`, the node's run_id and the
   * parameters before the first batch's compare-and-set; written unless it already does.
   */
  async anchor(state: NodeState): Promise<CheckpointChain | undefined> {
    const { store, strategy, mode, params } = this.#options;
    if (strategy.checkpointOrdering !== "in-script" || mode !== "execute") return undefined;
    const stored = await store.load(state.nodeId);
    const held = stored?.cursor === state.committed && stored.runId === state.runId &&
      stored.params === params && !stored.finished;
    if (!held) await this.save(state, state.committed);
    return new CheckpointChain({ keys: store.keys(state.nodeId), stored: state.committed });
  }

  /** The checkpoint a batch's last script call stores, once the batch is done. */
  next(state: NodeState, cursor: string, lastJob: Buffer | undefined): NodeCheckpoint {
    return { cursor, lastJob, runId: state.runId, params: this.#options.params };
  }

  /**
   * Stores the node's checkpoint at `cursor` and waits for it: with `awaited` ordering saves and
   * copies travel through different nodes, so the next batch goes out only after the save; with
   * `in-script` ordering the engine saves only where a script could not (see run/pipeline.ts).
   */
  async save(state: NodeState, cursor: string): Promise<void> {
    const { lastJob, within, runId } = state;
    const checkpoint = { cursor, lastJob, within, runId, params: this.#options.params };
    const unsaved = this.#unsavedOf(state);
    const totals = unsaved.take();
    try {
      await this.#options.retry.untilWritable(
        state.name,
        () => this.#options.store.save(state.nodeId, checkpoint, totals),
      );
    } catch (error) {
      // Counts a failed save did not store go with the next one.
      unsaved.restore(totals);
      throw error;
    }
    state.lastSave = performance.now();
  }

  /**
   * A script stored the batch's checkpoint; its counts follow into the running totals (a crash
   * in between leaves the totals short by the batches in flight, at most two).
   */
  async scriptStored(state: NodeState): Promise<void> {
    state.lastSave = performance.now();
    const unsaved = this.#unsavedOf(state);
    const totals = unsaved.take();
    if (totals.size === 0) return;
    try {
      // Like a save, it waits out OOM: a full Redis is no reason to stop the run here.
      await this.#options.retry.untilWritable(
        state.name,
        () => this.#options.store.addTotals(totals),
      );
    } catch (error) {
      unsaved.restore(totals);
      throw error;
    }
  }

  /**
   * The node's scan completed: it is marked finished in this pass (a later run of the pass does
   * not scan it again), its last counts join the totals.
   */
  async complete(state: NodeState): Promise<void> {
    if (this.#options.mode !== "execute") return;
    const unsaved = this.#unsavedOf(state);
    const totals = unsaved.take();
    const run = { runId: state.runId, params: this.#options.params };
    try {
      await this.#options.retry.untilWritable(
        state.name,
        () => this.#options.store.finish(state.nodeId, run, totals),
      );
    } catch (error) {
      unsaved.restore(totals);
      throw error;
    }
  }

  /** Every node of the run's pass completed: their checkpoints go, the next run starts over. */
  async passComplete(states: readonly NodeState[]): Promise<void> {
    if (this.#options.mode !== "execute") return;
    for (const state of states) {
      await this.#options.retry.untilWritable(
        state.name,
        () => this.#options.store.clear(state.nodeId),
      );
    }
  }

  #unsavedOf(state: NodeState): TotalsDelta {
    let delta = this.#unsaved.get(state.name);
    if (delta === undefined) this.#unsaved.set(state.name, delta = new TotalsDelta());
    return delta;
  }
}
