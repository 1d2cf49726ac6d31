/**
 * A migration strategy classifies and copies one sub-batch of old keys, all from one node, and
 * reports one {@linkcode KeyResult} per key in input order. Strategies differ by topology:
 * standalone Redis copies inside the server in one script call; a cluster copies across slots.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import { INVALID_REASONS, type InvalidReason, type KeyResult, type Outcome } from "../outcome.ts";
import { classify } from "../redis/errors.ts";

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
 * {@linkcode ScriptCode}), the workspace id when it is valid ("" when not) and the detail (the
 * first line of Redis's error text for `error`, the reason for `invalid`). Both strategies decode
 * through here, so one table maps codes to outcomes.
 *
 * @throws {Error} on a code or an invalid-key reason the scripts never send.
 */
export function resultOfCode(
  reply: { code: number; workspace: string; detail: string },
  transient: ReadonlySet<string> = TRANSIENT_ERRORS,
): StrategyResult {
  const { code, detail } = reply;
  const outcome = OUTCOME_OF_CODE[code];
  if (outcome === undefined) throw new Error(`migration script returned unknown code ${code}`);
  const workspace = reply.workspace === "" ? undefined : reply.workspace;
  if (code === ScriptCode.error) return errorResult(detail, { workspace, transient });
  if (code === ScriptCode.changed) {
    return { outcome, workspace, errorCode: "CHANGED", retryable: true };
  }
  if (outcome === "skipped_invalid") return invalidResult(detail);
  if (outcome === "skipped_gone") return { outcome };
  return { outcome, workspace };
}

/**
 * An `errors` result from the first line of Redis's error text: the code is its leading word (read
 * by `classify`), the message is kept for the log. The job's workspace stays on it when valid.
 */
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
  /**
   * Set on `errors` results that are worth one retry (a transient failure: OOM, a changed workspace
   * id, a moved slot, a lost connection). The engine retries such keys once, then counts an error.
   */
  retryable?: boolean;
  /** Redis's error code for an error result (`OOM`, `READONLY`, ...), never a value. */
  errorCode?: string;
  /** The first line of Redis's error text for an error result (for the log; never a value). */
  errorMessage?: string;
}

/** Migrates sub-batches of old keys. */
export interface MigrationStrategy {
  /**
   * Batches a node may have in flight, the checkpoint rule's window (run/checkpointer.ts): 1 when
   * absent. A crash re-reads at most this many batches.
   */
  readonly batchesInFlight?: 1 | 2;
  /** Prepares the strategy (loads scripts, checks server versions, completes left intents). */
  init(): Promise<void>;
  /**
   * Cluster copies an earlier run left unverified that `init` completed (cluster/intents.ts);
   * absent where writes are never left unverified (the standalone copy is one atomic call).
   */
  readonly intentsCompleted?: number;
  /**
   * What the calls that failed without a reply (a lost connection) copied, once Redis answers
   * again: the re-read finds those new keys, which are this run's copies all the same (in_server.ts).
   * Absent where no such record is kept.
   */
  lostCopies?(): Promise<{ keys: Buffer[]; results: StrategyResult[] }[]>;
  /**
   * Keys the next call should carry to hold Redis no longer than `--max-call-ms`, learnt from the
   * calls' own Redis time; absent when the strategy does not size its calls.
   */
  nextCallSize?(): number;
  /** Classifies (and, unless dry-run, migrates) `keys`, all old keys of one node. */
  migrate(keys: readonly Buffer[], options: MigrateOptions): Promise<StrategyResult[]>;
}
