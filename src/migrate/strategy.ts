/**
 * A migration strategy classifies and copies one sub-batch of old keys, all from one node, and
 * reports one {@linkcode KeyResult} per key in input order. Strategies differ by topology:
 * standalone Redis copies inside the server in one script call; a cluster copies across slots.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import type { KeyResult } from "../outcome.ts";

/**
 * Redis error codes worth a retry on any topology: the condition passes (memory freed, loading
 * done, failover over). The cluster strategy adds its redirects to these.
 */
export const TRANSIENT_ERRORS: ReadonlySet<string> = new Set([
  "OOM",
  "BUSY",
  "LOADING",
  "TRYAGAIN",
  "READONLY",
  "MASTERDOWN",
]);

/** What a strategy needs to know about the run. */
export interface MigrateOptions {
  /** Classify only, write nothing. */
  dryRun: boolean;
  /** Only this workspace's jobs are migrated; others are `filtered`. */
  workspace?: string;
  signal?: AbortSignal;
}

/** Per-key result of a strategy, with the retry hint the engine needs. */
export interface StrategyResult extends KeyResult {
  /**
   * Set on `errors` results that are worth one retry (a transient failure: OOM, a changed workspace
   * id, a moved slot, a lost connection). The engine retries such keys once, then counts an error.
   */
  retryable?: boolean;
  /** Redis's error code for an error result (`OOM`, `READONLY`, ...), never a value. */
  errorCode?: string;
}

/** Migrates sub-batches of old keys. */
export interface MigrationStrategy {
  /** Prepares the strategy (loads scripts, checks server versions). */
  init(): Promise<void>;
  /** Classifies (and, unless dry-run, migrates) `keys`, all old keys of one node. */
  migrate(keys: readonly Buffer[], options: MigrateOptions): Promise<StrategyResult[]>;
}
