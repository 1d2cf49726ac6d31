/**
 * Redis Cluster strategy: grouped, node-local scripts (scripts.ts). Per sub-batch:
 * 1. READ every old key in one call on its master. With the default rule and `--execute`, the
 *    same call copies each job whose new key that master also serves and returns a snapshot only
 *    for the others; otherwise (a JavaScript RegExp rule, or dry-run) it returns every snapshot,
 *    and a job whose keys one master serves is copied there by LOCAL, checked against the values
 *    the client validated.
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
import { isOutage } from "../../redis/errors.ts";
import type { Cluster } from "../../redis/ioredis.ts";
import { DEFAULT_WORKSPACE_LUA, type KeySchema } from "../../schema.ts";
import { redisVersion } from "../../redis/availability.ts";
import {
  invalidResult,
  type MigrateOptions,
  type MigrationStrategy,
  type StrategyResult,
} from "../strategy.ts";
import { type Copy, copyResult, failure, type Pending } from "./copies.ts";
import { completeIntents, type Completion, listIntents } from "./intents.ts";
import { copyRemote } from "./remote.ts";
import { isTopology, type RunnerOptions, ScriptRunner } from "./runner.ts";
import { Code, SCRIPTS } from "./scripts.ts";
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
  fence?: RunnerOptions["fence"];
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
    if (here) return await copyRemote(this.#runner, copies, results, remote);
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
    return [...local.changed, ...changed];
  }
}

/**
 * Step 1, READ: sets the result of every key that needs no further copy, returns the others.
 *
 * @throws the connection error when an old key's node stays out of reach (an outage: the engine
 *   waits for it and re-reads the batch from its checkpoint).
 */
async function readSnapshots(
  runner: ScriptRunner,
  keys: KeySchema,
  pending: readonly Pending[],
  results: StrategyResult[],
  options: MigrateOptions & { here: boolean },
): Promise<Copy[]> {
  const header = [
    options.workspace ?? "",
    options.here ? "1" : "",
    keys.luaSpec,
    DEFAULT_WORKSPACE_LUA.pattern,
    DEFAULT_WORKSPACE_LUA.maxLength,
  ];
  const settled = await runner.run(
    options.here ? SCRIPTS.readHere : SCRIPTS.read,
    header,
    pending.map((p) => ({ key: p.oldKey, args: [p.oldKey] })),
    { signal: options.signal, recorded: options.here },
  );
  const copies: Copy[] = [];
  settled.forEach((read, j) => {
    const item = pending[j]!;
    if (!read.ok) {
      if (isOutage(read.error)) throw read.error;
      results[item.index] = failure(read.error);
      return;
    }
    const decided = classify(keys, item, read.reply);
    if ("outcome" in decided) results[item.index] = decided;
    else copies.push(decided);
  });
  return copies;
}

/** Codes of a job READ copied on its own node (`here`); the workspace id is the last entry. */
const COPIED_HERE: ReadonlySet<number> = new Set([
  Code.migrated,
  Code.repaired,
  Code.exists,
  Code.error,
]);

/** The outcome of a READ reply, or the copy to make. */
function classify(keys: KeySchema, item: Pending, reply: unknown[]): StrategyResult | Copy {
  const code = reply[0] as number;
  if (code === Code.gone) return { outcome: "skipped_gone" };
  if (COPIED_HERE.has(code)) return copyResult(reply, (reply.at(-1) as Buffer).toString("latin1"));
  if (code === Code.invalid) return invalidResult(String(reply[1]));
  if (keys.oldParts(item.oldKey) === undefined) return invalidResult("empty_job_id");
  // The workspace, then the other fields the new name reads (after the snapshot for a copy).
  const others = code === Code.filtered ? 2 : 4;
  const rest = reply.slice(others, others + keys.fields.length - 1) as Buffer[];
  const values = keys.checkValues([reply[1] as Buffer, ...rest]);
  if (values === undefined) return invalidResult("invalid_workspace_id");
  const workspace = values[0]!;
  if (code === Code.filtered) return { outcome: "filtered", workspace };
  const newKey = keys.newKeyOf(item.oldKey, values);
  if (newKey === undefined) return invalidResult("invalid_workspace_id");
  return {
    ...item,
    newKey,
    workspace,
    values,
    expireAt: reply[2] as number,
    packed: reply[3] as Buffer,
  };
}

/** Dry-run: what WRITE would do for each copy, by read-only scripts on the new keys' masters. */
async function planCopies(
  runner: ScriptRunner,
  copies: readonly Copy[],
  results: StrategyResult[],
  options: MigrateOptions,
): Promise<void> {
  const jobs = copies.map((c) => ({ key: c.newKey, args: [c.newKey, c.expireAt, c.packed] }));
  const settled = await runner.run(SCRIPTS.dry, [], jobs, { signal: options.signal });
  settled.forEach((plan, j) => {
    const copy = copies[j]!;
    results[copy.index] = plan.ok
      ? copyResult(plan.reply, copy.workspace)
      : failure(plan.error, copy.workspace);
  });
}

/** The copies the node-local script could not make: to read again, or to copy across nodes. */
interface LocalOutcome {
  changed: Copy[];
  moved: Copy[];
}

/**
 * Copies each job on the master serving both its keys, in one atomic script from the live old key
 * (so no re-check is needed), if its values are still the validated ones.
 */
async function copyLocal(
  runner: ScriptRunner,
  luaSpec: Buffer,
  copies: readonly Copy[],
  results: StrategyResult[],
  options: MigrateOptions,
): Promise<LocalOutcome> {
  const outcome: LocalOutcome = { changed: [], moved: [] };
  if (copies.length === 0) return outcome;
  const settled = await runner.run(
    SCRIPTS.local,
    [luaSpec],
    copies.map((c) => ({ key: c.oldKey, args: [c.oldKey, c.newKey, ...c.values] })),
    { routed: false, recorded: true, signal: options.signal },
  );
  settled.forEach((copied, j) => {
    const copy = copies[j]!;
    if (!copied.ok) {
      if (isTopology(copied.error)) outcome.moved.push(copy);
      else results[copy.index] = failure(copied.error, copy.workspace);
    } else if (copied.reply[0] === Code.moved) outcome.moved.push(copy);
    else if (copied.reply[0] === Code.changed) outcome.changed.push(copy);
    else results[copy.index] = copyResult(copied.reply, copy.workspace);
  });
  return outcome;
}
