/**
 * A migration strategy classifies and copies one sub-batch of old keys, all from one node, and
 * reports one {@linkcode KeyResult} per key in input order. Strategies differ by topology:
 * standalone Redis copies inside the server in one script call; a cluster copies across slots.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import type { KeyResult, Outcome } from "../outcome.ts";

/** Result codes of the migration scripts (the in-server copy, the cross-slot WRITE). */
export const ScriptCode = {
  migrated: 0,
  repaired: 1,
  exists: 2,
  invalid: 3,
  gone: 4,
  filtered: 5,
  error: 6,
  /** expect mode: the workspace id is not the one the client validated (changed in between). */
  changed: 7,
  /** probe mode: the key is a hash with this workspace id; nothing decided yet. */
  probed: 8,
} as const;

/** The one table from script codes to outcomes. */
const OUTCOME_OF_CODE: Readonly<Record<number, Outcome>> = {
  [ScriptCode.migrated]: "migrated",
  [ScriptCode.repaired]: "repaired",
  [ScriptCode.exists]: "skipped_exists",
  [ScriptCode.invalid]: "skipped_invalid",
  [ScriptCode.gone]: "skipped_gone",
  [ScriptCode.filtered]: "filtered",
  [ScriptCode.error]: "errors",
  [ScriptCode.changed]: "errors",
};

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

/**
 * The result of one key as the migration scripts report it: a script code (see
 * {@linkcode ScriptCode}) and its detail (the workspace id, or an error code for `error`). Both
 * strategies decode through here, so one table maps codes to outcomes.
 */
export function resultOfCode(
  code: number,
  detail: string,
  transient: ReadonlySet<string> = TRANSIENT_ERRORS,
): StrategyResult {
  const outcome = OUTCOME_OF_CODE[code];
  if (outcome === undefined) throw new Error(`migration script returned unknown code ${code}`);
  if (code === ScriptCode.error) {
    return { outcome, errorCode: detail, retryable: transient.has(detail) };
  }
  if (code === ScriptCode.changed) return { outcome, errorCode: "CHANGED", retryable: true };
  if (outcome === "skipped_invalid" || outcome === "skipped_gone") return { outcome };
  return { outcome, workspace: detail };
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
  /**
   * Set on `errors` results that are worth one retry (a transient failure: OOM, a changed workspace
   * id, a moved slot, a lost connection). The engine retries such keys once, then counts an error.
   */
  retryable?: boolean;
  /** Redis's error code for an error result (`OOM`, `READONLY`, ...), never a value. */
  errorCode?: string;
}

/**
 * How a checkpoint save must be ordered against the next batch's writes, so that a crash never
 * re-reads more than one batch:
 * - `pipelined`: the save and the copies share one connection to one server, which applies them
 *   in order; the save goes out and is awaited only before the next save (no round trip stalls).
 * - `awaited`: saves and copies travel through different nodes, with no order between them; each
 *   save is awaited before the next batch is sent.
 */
export type CheckpointOrdering = "pipelined" | "awaited";

/** Migrates sub-batches of old keys. */
export interface MigrationStrategy {
  /** How the engine must order checkpoint saves against this strategy's writes. */
  readonly checkpointOrdering: CheckpointOrdering;
  /** Prepares the strategy (loads scripts, checks server versions). */
  init(): Promise<void>;
  /**
   * Keys the next call should carry to hold Redis no longer than `--max-call-ms`, learnt from the
   * calls' own Redis time; absent when the strategy does not size its calls.
   */
  nextCallSize?(): number;
  /** Classifies (and, unless dry-run, migrates) `keys`, all old keys of one node. */
  migrate(keys: readonly Buffer[], options: MigrateOptions): Promise<StrategyResult[]>;
}
