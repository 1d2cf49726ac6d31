/**
 * Redis Cluster strategy: grouped, node-local scripts (scripts.ts). Per sub-batch:
 * 1. READ every old key in one call on its master. With the default rule and `--execute`, the
 *    same call copies each job whose new key that master also serves and returns a snapshot only
 *    for the others; otherwise (a JavaScript RegExp rule, or dry-run) it returns every snapshot,
 *    and a job whose keys one master serves is copied there by LOCAL, checked against the values
 *    the client validated (local.ts).
 * 2. The others are written on the new keys' masters with an intent, re-checked against the
 *    snapshot and settled (remote.ts, intents.ts). `--execute` first completes the intents an
 *    earlier run left, and says so.
 * A job whose old key keeps changing is given up after {@linkcode MAX_ATTEMPTS} reads, as a
 * retryable `CHANGED` error.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import { SafetyRefusal } from "../../errors.ts";
import type { Logger } from "../../run_events.ts";
import type { Cluster } from "../../redis/ioredis.ts";
import type { KeySchema } from "../../schema.ts";
import { redisVersion } from "../../redis/availability.ts";
import type { MigrateOptions, MigrationStrategy, StrategyResult } from "../strategy.ts";
import type { Copy, Pending } from "./copies.ts";
import { copyLocal, planCopies } from "./local.ts";
import { readSnapshots } from "./read.ts";
import { completeIntents, type Completion, listIntents } from "./intents.ts";
import { copyRemote } from "./remote.ts";
import { ScriptRunner } from "./runner.ts";
import { UncountedCopies } from "../uncounted_copies.ts";

/** Reads of one job per sub-batch before it is given up as `CHANGED`. */
export const MAX_ATTEMPTS = 4;

/** Options for {@linkcode ClusterCopy}. */
export interface ClusterCopyOptions {
  /** How long one step keeps retrying topology errors (default 30 s: a failover's election). */
  retryBudgetMs?: number;
  /** The progress key: intents and call records live under it (default `ai:backfill`). */
  progressKey?: string;
  /** The run's fence (safety/lock.ts), carried by every script call; absent: unfenced. */
  fence?: { argsFor(key: Uint8Array): string[] };
  /** What `init` does with an earlier run's intents (`--execute`: complete; dry-run: report). */
  leftIntents?: "complete" | "report";
  logger?: Logger;
}

/** Migrates on a Redis Cluster (Redis ≥ 7.0 on every master). */
export class ClusterCopy implements MigrationStrategy {
  readonly #cluster: Cluster;
  readonly #keys: KeySchema;
  readonly #runner: ScriptRunner;
  readonly #options: ClusterCopyOptions;
  readonly #progressKey: string;
  /** Tells this run's intent ids from any other run's. */
  readonly #nonce = crypto.randomUUID();
  #writes = 0;
  /** This run's copies its retries would count `skipped_exists` (lost replies, unverified). */
  readonly #uncounted = new UncountedCopies();
  /** The look-up of lost calls' records in progress (one at a time). */
  #lookUp: Promise<void> = Promise.resolve();
  /** Left intents this run completed (the summary's `intents_completed`), when completing. */
  intentsCompleted?: number;

  constructor(cluster: Cluster, keys: KeySchema, options: ClusterCopyOptions = {}) {
    this.#cluster = cluster;
    this.#keys = keys;
    this.#options = options;
    this.#progressKey = options.progressKey ?? "ai:backfill";
    if (options.leftIntents === "complete") this.intentsCompleted = 0;
    this.#runner = new ScriptRunner(cluster, {
      budgetMs: options.retryBudgetMs ?? 30_000,
      fence: options.fence,
      progressKey: this.#progressKey,
    });
  }

  /**
   * Checks the masters' versions; completes (or reports) the left intents before any write.
   *
   * @throws {SafetyRefusal} when a master runs Redis older than 7.0 (no PEXPIRETIME).
   */
  async init(): Promise<void> {
    for (const node of this.#cluster.nodes("master")) {
      const [major, minor] = redisVersion(await node.info("server"));
      if (major < 7) {
        throw new SafetyRefusal(
          `Redis ${major}.${minor} on a cluster node has no PEXPIRETIME; cluster mode needs Redis 7.0 or newer`,
        );
      }
    }
    const left = this.#options.leftIntents;
    if (left !== undefined) await this.#leftIntents(left);
  }

  /**
   * Reports the intents an earlier run left, or completes each, copies again the jobs whose write
   * was taken back, and logs it.
   */
  async #leftIntents(mode: "complete" | "report"): Promise<void> {
    const pending = await listIntents(this.#runner, this.#progressKey);
    if (pending.length === 0) return;
    if (mode === "report") {
      return this.#options.logger?.log(
        "warn",
        "intents_left",
        `${pending.length} cluster copies an earlier run left unverified (stopped between a ` +
          `write and its re-check); --execute completes them before its first copy`,
        { intents: pending.length },
      );
    }
    const done = await completeIntents(this.#runner, this.#progressKey, pending);
    // Completed meanwhile by another runner starting at the same time: its count, not ours.
    const intents = pending.filter((_, i) => done[i] !== "elsewhere");
    const completions = done.filter((c) => c !== "elsewhere");
    if (intents.length === 0) return;
    const count = (kind: Completion) => completions.filter((c) => c === kind).length;
    // Copied again only under the mapping that wrote it: a run with another mapping (about to be
    // refused by its checkpoint) leaves the key to the resumed run, which re-reads its batch.
    const undone = intents.filter((intent, i) =>
      completions[i] === "undone" && this.#keys.isCopyOf(intent.newKey, intent.oldKey)
    ).map((i) => i.oldKey);
    let failed = 0;
    for (let i = 0; i < undone.length; i += 100) {
      const results = await this.migrate(undone.slice(i, i + 100), { dryRun: false });
      failed += results.filter((r) => r.outcome === "errors").length;
    }
    this.intentsCompleted = intents.length - count("left");
    this.#options.logger?.log(
      count("left") > 0 || failed > 0 ? "warn" : "info",
      "intents_completed",
      `completed ${this.intentsCompleted} of ${intents.length} cluster copies an earlier run ` +
        `left unverified (stopped between a write and its re-check): ${count("verified")} ` +
        `verified, ${count("undone")} taken back and copied again from the old key` +
        (failed > 0 ? ` (${failed} failed to copy again: left to a rerun and verify)` : "") +
        `, ${count("removed")} removed (the old key is gone)` +
        (count("left") > 0
          ? `, ${count("left")} left for the next run (a master out of reach)`
          : ""),
      { intents: intents.length, completed: this.intentsCompleted },
    );
  }

  /** Classifies and copies `keys`; a retry that finds this run's own copy counts that copy. */
  async migrate(keys: readonly Buffer[], options: MigrateOptions): Promise<StrategyResult[]> {
    const results = await this.#migrate(keys, options);
    // One look-up at a time: a concurrent one may be reading a record of these keys.
    const lookUp = this.#lookUp.then(async () => {
      for (const lost of await this.#runner.lostCopies()) {
        this.#uncounted.remember(lost.keys, lost.results);
      }
    });
    // A failed look-up loses only a count; it must not fail the calls that wait behind it.
    this.#lookUp = lookUp.catch(() => {});
    await this.#lookUp;
    return this.#uncounted.settle(keys, results);
  }

  async #migrate(keys: readonly Buffer[], options: MigrateOptions): Promise<StrategyResult[]> {
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
    const here = !options.dryRun && this.#keys.isDefaultRule;
    const copies = await readSnapshots(this.#runner, this.#keys, pending, results, {
      ...options,
      here,
    });
    if (copies.length === 0) return [];
    const remote = {
      ...options,
      progressKey: this.#progressKey,
      nextId: () => `${this.#nonce}:${++this.#writes}`,
      uncounted: this.#uncounted,
    };
    if (here) {
      const changed = await copyRemote(this.#runner, copies, results, remote);
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
    const local = await copyLocal(this.#runner, this.#keys.luaSpec, same, results, options);
    const changed = await copyRemote(this.#runner, [...there, ...local.moved], results, remote);
    return [...local.changed, ...changed].map(({ index, oldKey }) => ({ index, oldKey }));
  }
}
