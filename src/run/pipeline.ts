/**
 * Batches in flight and the order of their checkpoints. With an `in-script` strategy a node keeps
 * up to two batches in flight: batch k+1 is sent while batch k's replies are still coming, and the
 * last script call of each batch stores the batch's checkpoint in Redis (checkpoint/in_script.ts
 * explains why that never passes a key still to be retried). The engine finishes batches in order:
 * - the checkpoint landed in the script: nothing to do;
 * - it did not (a key of the batch failed, or an earlier batch's did): once every key of the batch
 *   is final (its retries are done), the engine stores it itself, and finishes every batch still in
 *   flight before sending another one. Those were planned against the checkpoint that failed to
 *   land, so their own would fail too; after the drain the chain starts clean again.
 * So a crash re-reads at most one batch while calls succeed; after a failure, until the engine has
 * stored the failed batch's checkpoint, at most that batch and the one in flight behind it.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import type { BatchPosition } from "../checkpoint/batch_position.ts";
import type { ScriptStep } from "../checkpoint/in_script.ts";
import type { NodeCheckpoint } from "../checkpoint/store.ts";
import type { CheckpointOrdering, StrategyResult } from "../migrate/strategy.ts";
import type { ScanBatch } from "../redis/scan.ts";

/** A batch sent and not yet finished. */
/** A sent batch. */
export interface SentBatch {
  /** Every key's result, in key order, after the retries; rejects with a call's outage. */
  results: Promise<StrategyResult[]>;
  /** False when a stop signal kept part of the batch from being sent. */
  complete: boolean;
}

export interface Flight extends SentBatch {
  batch: ScanBatch;
  /** The keys sent (a `--max-keys` trim may have cut the batch). */
  keys: Buffer[];
  trimmed: boolean;
  steps?: BatchSteps;
  /** performance.now() when it was sent. */
  started: number;
  /** Where a stored position let this (first) batch start inside, if it did. */
  resumedFrom?: BatchPosition;
}

/** Batches a node keeps in flight: two with in-script checkpoints, else one (awaited saves). */
export function batchWindow(ordering: CheckpointOrdering): number {
  return ordering === "in-script" ? 2 : 1;
}

/** The checkpoint keys a step writes. */
export type CheckpointKeys = ScriptStep["keys"];

/** One batch's part of the chain: the steps of its calls, and whether its checkpoint landed. */
export class BatchSteps {
  readonly #keys: CheckpointKeys;
  readonly #prefix: string;
  readonly #expected: string;
  readonly #next?: NodeCheckpoint;
  #calls = 0;
  #stored = false;

  constructor(options: {
    keys: CheckpointKeys;
    prefix: string;
    expected: string;
    next?: NodeCheckpoint;
  }) {
    this.#keys = options.keys;
    this.#prefix = options.prefix;
    this.#expected = options.expected;
    this.#next = options.next;
  }

  /** The step of the batch's next call; `last` when that call ends the batch. */
  step(last: boolean): ScriptStep {
    const call = ++this.#calls;
    const checkpoint = last && this.#next
      ? { expected: this.#expected, next: this.#next }
      : undefined;
    return {
      keys: this.#keys,
      previous: call === 1 ? "" : `${this.#prefix}:${call - 1}`,
      token: `${this.#prefix}:${call}`,
      checkpoint,
      done: (applied) => {
        if (checkpoint) this.#stored = applied;
      },
    };
  }

  /** True once the batch's last call stored its checkpoint. */
  get stored(): boolean {
    return this.#stored;
  }
}

/** One node's chain of in-script checkpoints. */
export class CheckpointChain {
  readonly #keys: CheckpointKeys;
  /** Tells this run's tokens from any earlier run's. */
  readonly #nonce = crypto.randomUUID().slice(0, 8);
  #batches = 0;
  /** The cursor the store holds once every batch sent so far has stored its checkpoint. */
  #planned: string;

  /** `stored` is the cursor the store holds now (the engine has just written it). */
  constructor(options: { keys: CheckpointKeys; stored: string }) {
    this.#keys = options.keys;
    this.#planned = options.stored;
  }

  /** The next batch that moves the cursor; its last call stores `next`. */
  batch(next: NodeCheckpoint): BatchSteps {
    const steps = new BatchSteps({
      keys: this.#keys,
      prefix: `${this.#nonce}:${++this.#batches}`,
      expected: this.#planned,
      next,
    });
    this.#planned = next.cursor;
    return steps;
  }

  /** The engine stored `cursor` itself: later batches expect it. */
  storedByClient(cursor: string): void {
    this.#planned = cursor;
  }
}

/** Where a finished batch leaves its node's scan. */
export interface BatchEnd {
  /** The cursor the node resumes from. */
  resumeAt: string;
  /** The scan is complete. */
  scanDone: boolean;
  /** The engine must store the checkpoint itself (no script did, and one is due). */
  save: boolean;
}

/**
 * Decides where a batch leaves the scan. A batch cut short (a stop, `--max-keys`) is re-read from
 * its start next time (idempotent), so nothing of it is lost; a finished one moves the cursor on.
 * A checkpoint is due after any processed key, or after a second of empty batches.
 */
export function batchEnd(input: {
  flight: Pick<Flight, "batch" | "complete" | "trimmed" | "steps">;
  processed: number;
  msSinceSave: number;
  execute: boolean;
}): BatchEnd {
  const { batch, complete, trimmed, steps } = input.flight;
  const finished = complete && !trimmed;
  const resumeAt = finished ? batch.next : batch.cursor;
  const scanDone = finished && batch.next === "0";
  const due = input.processed > 0 || input.msSinceSave > 1000;
  const save = input.execute && !scanDone && due && !(steps?.stored ?? false);
  return { resumeAt, scanDone, save };
}

/**
 * Finishes the oldest batches, in order, until at most `keep` are in flight. Once the engine had to
 * store a batch's checkpoint itself, every batch in flight is finished too before another is sent:
 * they were planned against the checkpoint that did not land. Resolves to whether the last batch
 * finished completed the scan (undefined when none finished).
 */
export async function settleFlights(
  flights: Flight[],
  keep: number,
  finish: (flight: Flight) => Promise<BatchEnd>,
): Promise<boolean | undefined> {
  let scanDone: boolean | undefined;
  while (flights.length > keep) {
    const end = await finish(flights.shift()!);
    scanDone = end.scanDone;
    if (end.save) keep = 0;
  }
  return scanDone;
}
