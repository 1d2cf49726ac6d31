/**
 * The checkpointer: when a node's checkpoint is saved, and how. The checkpoint rule, in one place:
 *
 * **A batch's checkpoint is saved by the engine, in one fenced script call with the running
 * totals, once every key of the batch is final (its retries done); a node sends no batch while
 * more than {@linkcode batchWindow} − 1 batches sent before it are unsaved.** A node keeps two
 * batches in flight on a standalone server (one on a cluster,
 * {@linkcode MigrationStrategy.batchesInFlight}): batch k+1 is sent while batch k's replies are
 * still coming; batch k's save is sent as soon as its replies are in (between k+1's calls on the
 * connection, so Redis never waits for the client), and batch k+2 goes out once it has landed. So
 * the stored cursor never passes a key still to be retried, and a crash (even `kill -9`) re-reads at
 * most the batches in flight: two on a standalone server, one on a cluster. Copies are idempotent,
 * so a re-read is harmless.
 *
 * The store (checkpoint/store.ts) knows the keys and the fenced write; this module keeps each
 * node's counts that are not stored yet, so a failed save loses none of them.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import type { BatchPosition } from "../checkpoint/batch_position.ts";
import type { CheckpointStore } from "../checkpoint/store.ts";
import { TotalsDelta } from "../checkpoint/store.ts";
import type { MigrationStrategy } from "../migrate/strategy.ts";
import type { KeyResult } from "../outcome.ts";
import type { ScanBatch } from "../redis/scan.ts";
import type { RunMode } from "../run_events.ts";
import type { NodeState } from "./outage.ts";
import type { KeyRetry, SentBatch } from "./copier.ts";

/** A batch sent and not yet finished. */
export interface Flight extends SentBatch {
  batch: ScanBatch;
  /** The keys sent (a `--max-keys` trim may have cut the batch). */
  keys: Buffer[];
  trimmed: boolean;
  /** performance.now() when it was sent. */
  started: number;
  /** Where a stored position let this (first) batch start inside, if it did. */
  resumedFrom?: BatchPosition;
  /** Its finish: counted, checkpoint saved (started as its replies come in, in batch order). */
  end?: Promise<BatchEnd>;
  /** True once its results are counted (or left to its re-read, which counts them). */
  counted?: boolean;
}

/** Batches a node keeps in flight: the rule's window (see the module comment). */
export function batchWindow(strategy: Pick<MigrationStrategy, "batchesInFlight">): number {
  return strategy.batchesInFlight ?? 1;
}

/** Where a finished batch leaves its node's scan. */
export interface BatchEnd {
  /** The cursor the node resumes from. */
  resumeAt: string;
  /** The scan is complete. */
  scanDone: boolean;
  /** The engine stores the checkpoint now. */
  save: boolean;
}

/**
 * Decides where a batch leaves the scan. A batch cut short (a stop, `--max-keys`) is re-read from
 * its start next time (idempotent), so nothing of it is lost; a finished one moves the cursor on.
 * A checkpoint is due after any processed key, or after a second of empty batches.
 */
export function batchEnd(input: {
  flight: Pick<Flight, "batch" | "complete" | "trimmed">;
  processed: number;
  msSinceSave: number;
  execute: boolean;
}): BatchEnd {
  const { batch, complete, trimmed } = input.flight;
  const finished = complete && !trimmed;
  const resumeAt = finished ? batch.next : batch.cursor;
  const scanDone = finished && batch.next === "0";
  const due = input.processed > 0 || input.msSinceSave > 1000;
  return { resumeAt, scanDone, save: input.execute && !scanDone && due };
}

/**
 * Waits for the oldest batches' finishes, in order, until at most `keep` are in flight. Resolves
 * to whether the last batch finished completed the scan (undefined when none finished).
 */
export async function settleFlights(
  flights: Flight[],
  keep: number,
): Promise<boolean | undefined> {
  let scanDone: boolean | undefined;
  while (flights.length > keep) scanDone = (await flights.shift()!.end!).scanDone;
  return scanDone;
}

/** The store operations a run uses. */
export type RunCheckpointStore = Pick<
  CheckpointStore,
  | "prefix"
  | "load"
  | "save"
  | "finish"
  | "clear"
  | "loadTotals"
  | "resetTotals"
>;

/** Options of {@linkcode Checkpointer}. */
export interface CheckpointerOptions {
  store: RunCheckpointStore;
  mode: RunMode;
  /** The run parameters stored with every checkpoint (a resume with others is refused). */
  params: string;
  /** Waits out OOM while saving (Redis refusing writes is no reason to lose the checkpoint). */
  retry: Pick<KeyRetry, "untilWritable">;
}

/** Checkpoints and running totals of every node of one run. */
export class Checkpointer {
  readonly #options: CheckpointerOptions;
  /** Each node's counts not yet in the stored totals (execute only). */
  readonly #unsaved = new Map<string, TotalsDelta>();

  constructor(options: CheckpointerOptions) {
    this.#options = options;
  }

  /** Counts a batch's results toward the node's totals (stored with its next checkpoint). */
  count(state: NodeState, results: readonly KeyResult[]): void {
    if (this.#options.mode === "execute") this.#unsavedOf(state).add(results);
  }

  /**
   * Stores the node's checkpoint at `cursor` with the totals counted since its last save and the
   * `batch` it ends. When the save fails, the batch's counts are not kept: its re-read counts it.
   */
  async save(state: NodeState, cursor: string, batch: readonly KeyResult[] = []): Promise<void> {
    const { lastJob, within, runId } = state;
    const checkpoint = { cursor, lastJob, within, runId, params: this.#options.params };
    const save = (totals: ReadonlyMap<string, number>) =>
      this.#options.store.save(state.nodeId, checkpoint, totals);
    await this.#write(state, save, batch);
    state.lastSave = performance.now();
  }

  /**
   * The node's scan completed: it is marked finished in this pass (a later run of the pass does
   * not scan it again), its last counts join the totals.
   */
  async complete(state: NodeState): Promise<void> {
    if (this.#options.mode !== "execute") return;
    const run = { runId: state.runId, params: this.#options.params };
    await this.#write(state, (totals) => this.#options.store.finish(state.nodeId, run, totals));
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

  /**
   * One write with the node's unsaved counts (and `batch`'s), waiting out OOM; the unsaved counts a
   * failed write did not store go with the next one.
   */
  async #write(
    state: NodeState,
    write: (totals: ReadonlyMap<string, number>) => Promise<void>,
    batch: readonly KeyResult[] = [],
  ): Promise<void> {
    const unsaved = this.#unsavedOf(state);
    const earlier = unsaved.take();
    const totals = new TotalsDelta();
    totals.restore(earlier);
    if (this.#options.mode === "execute") totals.add(batch);
    const counts = totals.take();
    try {
      await this.#options.retry.untilWritable(state.name, () => write(counts));
    } catch (error) {
      unsaved.restore(earlier);
      throw error;
    }
  }

  #unsavedOf(state: NodeState): TotalsDelta {
    let delta = this.#unsaved.get(state.name);
    if (delta === undefined) this.#unsaved.set(state.name, delta = new TotalsDelta());
    return delta;
  }
}
