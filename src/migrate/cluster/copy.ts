/**
 * Redis Cluster strategy: grouped, node-local scripts (see scripts.ts). Per sub-batch:
 *
 * 1. READ every old key in one call on the master that serves them. With the default workspace
 *    rule, the same call copies each job whose new key that master also serves, atomically, and
 *    returns a snapshot (expiry + packed fields) only for the others. With a custom rule (a
 *    JavaScript RegExp Lua cannot run) or in dry-run, it returns every snapshot, and a job whose
 *    new key the same master serves is copied there by a second atomic script (LOCAL), checked
 *    against the id the client validated.
 * 2. The others are written grouped by the new keys' masters, re-checked against the snapshot on
 *    the old keys' master, and taken back and read again where the application changed the job.
 *
 * A job whose old key keeps changing is given up after {@linkcode MAX_ATTEMPTS} reads, as a
 * retryable `CHANGED` error. Redirects fall back per job to the routed client (runner.ts).
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import { SafetyRefusal } from "../../errors.ts";
import type { Cluster } from "../../redis/ioredis.ts";
import type { WorkspaceRule } from "../../schema.ts";
import { redisVersion } from "../in_server.ts";
import type { MigrateOptions, MigrationStrategy, StrategyResult } from "../strategy.ts";
import type { Copy, Pending } from "./copies.ts";
import { copyLocal, planCopies } from "./local.ts";
import { readSnapshots } from "./read.ts";
import { copyRemote } from "./remote.ts";
import { ScriptRunner } from "./runner.ts";

/** Reads of one job per sub-batch before it is given up as `CHANGED`. */
export const MAX_ATTEMPTS = 4;

/** Options for {@linkcode ClusterCopy}. */
export interface ClusterCopyOptions {
  /** How long one step keeps retrying topology errors (default 30 s: a failover's election). */
  retryBudgetMs?: number;
}

/** Migrates on a Redis Cluster (Redis ≥ 7.0 on every master). */
export class ClusterCopy implements MigrationStrategy {
  /** Checkpoints are written through another node than the copies: each save is awaited. */
  readonly checkpointOrdering = "awaited";
  readonly #cluster: Cluster;
  readonly #rule: WorkspaceRule;
  readonly #runner: ScriptRunner;

  constructor(cluster: Cluster, rule: WorkspaceRule, options: ClusterCopyOptions = {}) {
    this.#cluster = cluster;
    this.#rule = rule;
    this.#runner = new ScriptRunner(cluster, { budgetMs: options.retryBudgetMs ?? 30_000 });
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
  }

  async migrate(keys: readonly Buffer[], options: MigrateOptions): Promise<StrategyResult[]> {
    const results: StrategyResult[] = new Array(keys.length);
    let pending: Pending[] = keys.map((oldKey, index) => ({ index, oldKey }));
    for (let attempt = 0; attempt < MAX_ATTEMPTS && pending.length > 0; attempt++) {
      pending = await this.#attempt(pending, results, options);
    }
    for (const { index } of pending) {
      results[index] = { outcome: "errors", errorCode: "CHANGED", retryable: true };
    }
    return results;
  }

  /** One read-and-copy round; returns the keys to read again. */
  async #attempt(
    pending: Pending[],
    results: StrategyResult[],
    options: MigrateOptions,
  ): Promise<Pending[]> {
    const here = !options.dryRun && this.#rule.isDefault;
    const copies = await readSnapshots(this.#runner, this.#rule, pending, results, {
      ...options,
      here,
    });
    if (copies.length === 0) return [];
    if (here) {
      const changed = await copyRemote(this.#runner, copies, results, options);
      return changed.map(({ index, oldKey }) => ({ index, oldKey }));
    }
    if (options.dryRun) {
      await planCopies(this.#runner, copies, results, options);
      return [];
    }
    const same: Copy[] = [];
    const there: Copy[] = [];
    for (const copy of copies) {
      (this.#runner.sameNode(copy.oldKey, copy.newKey) ? same : there).push(copy);
    }
    const local = await copyLocal(this.#runner, same, results, options);
    const changed = await copyRemote(this.#runner, [...there, ...local.moved], results, options);
    return [...local.changed, ...changed].map(({ index, oldKey }) => ({ index, oldKey }));
  }
}
