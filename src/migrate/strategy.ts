/**
 * A migration strategy classifies and copies one sub-batch of old keys, all from one node, and
 * reports one {@linkcode KeyResult} per key in input order: in one script call on a standalone
 * server (in_server.ts), across slots on a cluster (cluster/copy.ts).
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import { INVALID_REASONS, type InvalidReason, type KeyResult } from "../outcome.ts";
import { classify } from "../redis/errors.ts";

/** Result codes of the standalone copy script; the call records' digits on every topology. */
export const ScriptCode = {
  migrated: 0,
  repaired: 1,
  exists: 2,
  invalid: 3,
  gone: 4,
  filtered: 5,
  error: 6,
  /** A field is not the value the client validated (changed in between). */
  changed: 7,
  /** The values are read; nothing decided yet. */
  probed: 8,
} as const;

/** Redis error codes worth a retry on any topology: the condition passes (memory, a failover). */
export const TRANSIENT_ERRORS: ReadonlySet<string> = new Set([
  "OOM",
  "BUSY",
  "LOADING",
  "TRYAGAIN",
  "READONLY",
  "MASTERDOWN",
]);

/** An `errors` result from the first line of Redis's error text (its code, read by `classify`). */
export function errorResult(
  text: string,
  options: { workspace?: string; transient?: ReadonlySet<string> } = {},
): StrategyResult {
  const message = (text.split(/\r?\n/, 1)[0] ?? "").slice(0, 200);
  const errorCode = classify(new Error(message)).code;
  return {
    outcome: "errors",
    workspace: options.workspace,
    errorCode,
    errorMessage: message,
    retryable: (options.transient ?? TRANSIENT_ERRORS).has(errorCode),
  };
}

/**
 * A `skipped_invalid` result with its reason.
 *
 * @throws {Error} when `reason` is not one of {@linkcode INVALID_REASONS}.
 */
export function invalidResult(reason: string): StrategyResult {
  if (!(INVALID_REASONS as readonly string[]).includes(reason)) {
    throw new Error(
      `migration script returned unknown invalid-key reason ${JSON.stringify(reason)}`,
    );
  }
  return { outcome: "skipped_invalid", invalidReason: reason as InvalidReason };
}

/** What a strategy needs to know about the run. */
export interface MigrateOptions {
  /** Classify only, write nothing. */
  dryRun: boolean;
  /** Only this workspace's jobs are migrated; others are `filtered`. */
  workspace?: string;
  /** A stop signal: waits inside the strategy (topology retries) end at once. */
  signal?: AbortSignal;
}

/** Per-key result of a strategy, with the retry hint the engine needs. */
export interface StrategyResult extends KeyResult {
  /** An `errors` result worth one retry (OOM, a changed value, a moved slot, a lost connection). */
  retryable?: boolean;
  /** Redis's error code for an error result (`OOM`, `READONLY`, ...), never a value. */
  errorCode?: string;
  /** The first line of Redis's error text for an error result (for the log; never a value). */
  errorMessage?: string;
}

/** Migrates sub-batches of old keys. */
export interface MigrationStrategy {
  /** Batches a node may have in flight: the checkpoint window (run/checkpointer.ts); default 1. */
  readonly batchesInFlight?: 1 | 2;
  /** Prepares the strategy (loads scripts, checks server versions, completes left intents). */
  init(): Promise<void>;
  /** Cluster copies an earlier run left unverified that `init` completed (cluster/intents.ts). */
  readonly intentsCompleted?: number;
  /** What the calls whose reply was lost copied, once Redis answers again (call_record.ts). */
  lostCopies?(): Promise<{ keys: Buffer[]; results: StrategyResult[] }[]>;
  /** Keys the next call should carry to hold Redis no longer than `--max-call-ms`. */
  nextCallSize?(): number;
  /** Classifies (and, unless dry-run, migrates) `keys`, all old keys of one node. */
  migrate(keys: readonly Buffer[], options: MigrateOptions): Promise<StrategyResult[]>;
}
