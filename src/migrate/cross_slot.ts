/**
 * Redis Cluster strategy. An old key and its new key live in different slots, so the copy is three
 * steps, each atomic on one key's node (scripts in cross_slot_scripts.ts), every key of a sub-batch
 * in flight at once through the routed cluster client (which follows MOVED and ASK):
 *
 * 1. READ the old key: a consistent snapshot (workspace id, fields, absolute expiry).
 * 2. Classify in the client with the same {@linkcode WorkspaceRule} as the standalone path, then
 *    WRITE the new key create-only (HSETNX completion when the application already wrote it).
 * 3. After a copy, check the old key still exists. If the application deleted the job between 1
 *    and 2, UNDO the copy — only while the new key still holds exactly what we wrote — and count
 *    the key `skipped_gone`: a job the application deleted is never re-created by us.
 *
 * Topology errors (MOVED/ASK beyond ioredis's own handling, TRYAGAIN, CLUSTERDOWN, a lost node
 * connection during a failover) are retried here with backoff for up to `retryBudgetMs`, then
 * reported as retryable errors. A READ that still cannot reach the old key's node is thrown as an
 * outage, so the engine waits for the node and re-reads the batch from its checkpoint.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { backoffMs, RECONNECT } from "../async/backoff.ts";
import { pause } from "../async/delay.ts";
import { SafetyRefusal } from "../errors.ts";
import { errorCode, isOutage } from "../redis/errors.ts";
import type { Cluster } from "../redis/ioredis.ts";
import { jobIdOf, newKeyFor, WORKSPACE_FIELD, type WorkspaceRule } from "../schema.ts";
import {
  CrossSlotCode,
  DRY_WRITE_SCRIPT,
  READ_SCRIPT,
  UNDO_SCRIPT,
  WRITE_SCRIPT,
} from "./cross_slot_scripts.ts";
import { redisVersion } from "./in_server.ts";
import {
  type MigrateOptions,
  type MigrationStrategy,
  resultOfCode,
  ScriptCode,
  type StrategyResult,
  TRANSIENT_ERRORS,
} from "./strategy.ts";

/** Errors the engine's one retry may fix: the shared transient ones, plus cluster redirects. */
const TRANSIENT = new Set([...TRANSIENT_ERRORS, "CLUSTERDOWN", "MOVED", "ASK"]);
/** Errors that pass once the cluster settles (not memory or a busy script): retried here. */
const TOPOLOGY = new Set([...TRANSIENT].filter((code) => code !== "OOM" && code !== "BUSY"));

/** Options for {@linkcode CrossSlotCopy}. */
export interface CrossSlotOptions {
  /** How long one step keeps retrying topology errors (default 30 s: a failover's election). */
  retryBudgetMs?: number;
}

/** The script commands defined on the cluster client (Buffer variants: names are bytes). */
interface ScriptClient {
  backfillReadBuffer(key: Buffer, workspace: string, field: string): Promise<unknown[]>;
  backfillWriteBuffer(key: Buffer, expireAt: string, ...fields: Buffer[]): Promise<unknown[]>;
  backfillDryWriteBuffer(key: Buffer, expireAt: string, ...fields: Buffer[]): Promise<unknown[]>;
  backfillUndoBuffer(key: Buffer, ...fields: Buffer[]): Promise<number>;
}

/** A key that passed classification and is to be written. */
interface Copy {
  index: number;
  oldKey: Buffer;
  newKey: Buffer;
  workspace: string;
  expireAt: string;
  fields: Buffer[];
}

type Settled<T> =
  | { ok: true; value: T; tries: number }
  | { ok: false; error: unknown; tries: number };

/** Migrates across slots on a Redis Cluster (Redis ≥ 7.0 on every master). */
export class CrossSlotCopy implements MigrationStrategy {
  /** Checkpoints and copies go through different nodes, with no order between them. */
  readonly checkpointOrdering = "awaited";
  readonly #cluster: Cluster;
  readonly #rule: WorkspaceRule;
  readonly #budget: number;

  constructor(cluster: Cluster, rule: WorkspaceRule, options: CrossSlotOptions = {}) {
    this.#cluster = cluster;
    this.#rule = rule;
    this.#budget = options.retryBudgetMs ?? 30_000;
  }

  /** @throws {SafetyRefusal} when a master runs Redis older than 7.0 (no PEXPIRETIME). */
  async init(): Promise<void> {
    for (const node of this.#cluster.nodes("master")) {
      const [major, minor] = redisVersion(await node.info("server"));
      if (major < 7) {
        throw new SafetyRefusal(
          `Redis ${major}.${minor} on a cluster node has no PEXPIRETIME; cluster mode needs Redis 7.0 or newer`,
        );
      }
    }
    // ioredis sends EVALSHA and falls back to EVAL per connection (NOSCRIPT after a failover).
    this.#cluster.defineCommand("backfillRead", { numberOfKeys: 1, lua: READ_SCRIPT });
    this.#cluster.defineCommand("backfillWrite", { numberOfKeys: 1, lua: WRITE_SCRIPT });
    this.#cluster.defineCommand("backfillDryWrite", { numberOfKeys: 1, lua: DRY_WRITE_SCRIPT });
    this.#cluster.defineCommand("backfillUndo", { numberOfKeys: 1, lua: UNDO_SCRIPT });
  }

  get #scripts(): ScriptClient {
    return this.#cluster as unknown as ScriptClient;
  }

  async migrate(keys: readonly Buffer[], options: MigrateOptions): Promise<StrategyResult[]> {
    const results: StrategyResult[] = new Array(keys.length);
    const only = options.workspace ?? "";
    const retrying = <T>(tasks: (() => Promise<T>)[]) => this.#retrying(tasks, options.signal);
    const reads = await retrying(
      keys.map((key) => () => this.#scripts.backfillReadBuffer(key, only, WORKSPACE_FIELD)),
    );
    const copies: Copy[] = [];
    for (const [index, read] of reads.entries()) {
      if (!read.ok) {
        // The old key's node is out of reach: let the engine wait for it and re-read the batch.
        if (isOutage(read.error)) throw read.error;
        results[index] = failure(read.error);
        continue;
      }
      const oldKey = keys[index]!;
      const decided = this.#classify(oldKey, read.value);
      if ("outcome" in decided) results[index] = decided;
      else copies.push({ index, oldKey, ...decided });
    }
    if (copies.length === 0) return results;

    const write = options.dryRun
      ? (c: Copy) => this.#scripts.backfillDryWriteBuffer(c.newKey, c.expireAt, ...c.fields)
      : (c: Copy) => this.#scripts.backfillWriteBuffer(c.newKey, c.expireAt, ...c.fields);
    const writes = await retrying(copies.map((copy) => () => write(copy)));
    const check: Copy[] = [];
    writes.forEach((written, j) => {
      const copy = copies[j]!;
      const result = written.ok
        ? decodeWrite(written.value, copy.workspace)
        : failure(written.error);
      results[copy.index] = result;
      // A retried write may have created the key on an attempt whose reply was lost: check it too.
      const ours = result.outcome === "migrated" ||
        (written.tries > 1 && result.outcome === "skipped_exists");
      if (!options.dryRun && ours) check.push(copy);
    });
    if (check.length > 0) await this.#undoOrphans(check, results, options.signal);
    return results;
  }

  /** Outcome of a READ reply, or what to write. */
  #classify(
    oldKey: Buffer,
    reply: unknown[],
  ): StrategyResult | Omit<Copy, "index" | "oldKey"> {
    const code = reply[0] as number;
    if (code === CrossSlotCode.gone) return { outcome: "skipped_gone" };
    const jobId = jobIdOf(oldKey);
    const workspace = code === CrossSlotCode.invalid
      ? undefined
      : this.#rule.check(reply[1] as Buffer);
    if (jobId === undefined || jobId.length === 0 || workspace === undefined) {
      return { outcome: "skipped_invalid" };
    }
    if (code === CrossSlotCode.filtered) return { outcome: "filtered", workspace };
    const expireAt = reply[2] as number;
    return {
      newKey: newKeyFor(workspace, jobId),
      workspace,
      expireAt: String(expireAt > 0 ? expireAt : -1),
      fields: reply[3] as Buffer[],
    };
  }

  /**
   * Step 3: for each copy whose old key is gone now, delete the new key while it is still exactly
   * our copy, and count the job `skipped_gone` (it vanished before it could be copied).
   */
  async #undoOrphans(
    copies: Copy[],
    results: StrategyResult[],
    signal?: AbortSignal,
  ): Promise<void> {
    const exists = await this.#retrying(
      copies.map((c) => () => this.#cluster.exists(c.oldKey)),
      signal,
    );
    const gone: Copy[] = [];
    exists.forEach((found, j) => {
      const copy = copies[j]!;
      if (!found.ok) results[copy.index] = unverified(found.error);
      else if (found.value === 0) gone.push(copy);
    });
    const undone = await this.#retrying(
      gone.map((c) => () => this.#scripts.backfillUndoBuffer(c.newKey, ...c.fields)),
    );
    undone.forEach((settled, j) => {
      const copy = gone[j]!;
      results[copy.index] = settled.ok ? { outcome: "skipped_gone" } : unverified(settled.error);
    });
  }

  /**
   * Runs every task; re-runs those that failed with a topology error, with backoff, within the
   * budget (a stop signal ends the waiting: what still fails is reported as it is).
   */
  async #retrying<T>(tasks: (() => Promise<T>)[], signal?: AbortSignal): Promise<Settled<T>[]> {
    const out: Settled<T>[] = new Array(tasks.length);
    const tries = new Array<number>(tasks.length).fill(0);
    const deadline = Date.now() + this.#budget;
    let pending = tasks.map((_, i) => i);
    for (let attempt = 0;; attempt++) {
      const settled = await Promise.allSettled(pending.map((i) => tasks[i]!()));
      const again: number[] = [];
      settled.forEach((s, j) => {
        const i = pending[j]!;
        tries[i]!++;
        if (s.status === "fulfilled") out[i] = { ok: true, value: s.value, tries: tries[i]! };
        else if (Date.now() < deadline && !signal?.aborted && isTopology(s.reason)) again.push(i);
        else out[i] = { ok: false, error: s.reason, tries: tries[i]! };
      });
      if (again.length === 0) return out;
      // A stop signal ends the wait; the next round then reports what still fails.
      await pause(backoffMs(attempt, RECONNECT), { signal });
      pending = again;
    }
  }
}

function decodeWrite(reply: unknown[], workspace: string): StrategyResult {
  const code = reply[0] as number;
  const detail = code === ScriptCode.error
    ? Buffer.from(reply[1] as Buffer).toString("latin1")
    : workspace;
  return resultOfCode(code, detail, TRANSIENT);
}

/** A failed command as a per-key error (retryable when the condition may pass). */
function failure(error: unknown): StrategyResult {
  const code = errorCode(error);
  return { outcome: "errors", errorCode: code, retryable: TRANSIENT.has(code) || isOutage(error) };
}

/**
 * We copied, but could not learn whether the application deleted the job meanwhile. A retry would
 * read the old key again and could not undo this copy, so the key is an error for the operator
 * (the log names the job); the copy stays.
 */
function unverified(error: unknown): StrategyResult {
  return { outcome: "errors", errorCode: errorCode(error), retryable: false };
}

function isTopology(error: unknown): boolean {
  return isOutage(error) || TOPOLOGY.has(errorCode(error));
}
