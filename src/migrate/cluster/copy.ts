/**
 * Redis Cluster strategy: grouped, node-local scripts (scripts.ts). Per sub-batch:
 * 1. READ every old key in one call on its master. With the default rule and `--execute`, the
 *    same call copies each job whose new key that master also serves and returns a snapshot only
 *    for the others; otherwise (a JavaScript RegExp rule, or dry-run) it returns every snapshot,
 *    and a job whose keys one master serves is copied there by LOCAL, checked against the values
 *    the client validated.
 * 2. The others are written on the new keys' masters with an intent, re-checked against the
 *    snapshot and settled (intents.ts). `--execute` first completes the intents an earlier run
 *    left, and says so.
 * A job whose old key keeps changing is given up after {@linkcode MAX_ATTEMPTS} reads, as a
 * retryable `CHANGED` error.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { SafetyRefusal } from "../../errors.ts";
import type { Logger } from "../../run_events.ts";
import { errorCode, errorLine, isOutage } from "../../redis/errors.ts";
import type { Cluster } from "../../redis/ioredis.ts";
import { DEFAULT_WORKSPACE_LUA, type KeySchema } from "../../schema.ts";
import { redisVersion } from "../../redis/availability.ts";
import {
  errorResult,
  invalidResult,
  type MigrateOptions,
  type MigrationStrategy,
  type StrategyResult,
} from "../strategy.ts";
import {
  completeIntents,
  type Completion,
  intentKey,
  listIntents,
  verifyWrites,
} from "./intents.ts";
import { isTopology, type RunnerOptions, ScriptRunner, TRANSIENT } from "./runner.ts";
import { Code, SCRIPTS } from "./scripts.ts";
import { UncountedCopies } from "../uncounted_copies.ts";

/** Reads of one job per sub-batch before it is given up as `CHANGED`. */
export const MAX_ATTEMPTS = 4;

/** An old key of the sub-batch, by its position in the input. */
interface Pending {
  index: number;
  oldKey: Buffer;
}

/** A job whose READ snapshot passed classification. */
interface Copy extends Pending {
  newKey: Buffer;
  workspace: string;
  /** The values of the fields the new key's name reads (`KeySchema.fields`), validated. */
  values: readonly string[];
  /** Absolute expiry in unix ms, -1 for none. */
  expireAt: number;
  /** The fields as read, packed by READ (`cmsgpack.pack`). */
  packed: Buffer;
}

/** A write to verify: the copy and its intent's id. */
type Written = Copy & { id: string };

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
    const results: StrategyResult[] = new Array(keys.length);
    let pending: Pending[] = keys.map((oldKey, index) => ({ index, oldKey }));
    for (let attempt = 0; attempt < MAX_ATTEMPTS && pending.length > 0; attempt++) {
      pending = await this.#attempt(pending, results, options);
    }
    for (const { index } of pending) {
      results[index] = { outcome: "errors", errorCode: "CHANGED", retryable: true };
    }
    // One look-up at a time: a concurrent one may be reading a record of these keys. A failed
    // look-up loses only a count; it must not fail the calls that wait behind it.
    this.#lookUp = this.#lookUp.then(async () => {
      for (const lost of await this.#runner.lostCopies()) {
        this.#uncounted.remember(lost.keys, lost.results);
      }
    }).catch(() => {});
    await this.#lookUp;
    return this.#uncounted.settle(keys, results);
  }

  /** One read-and-copy round; returns the keys to read again. */
  async #attempt(
    pending: Pending[],
    results: StrategyResult[],
    options: MigrateOptions,
  ): Promise<Pending[]> {
    const here = !options.dryRun && this.#keys.isDefaultRule;
    const copies = await this.#read(pending, results, { ...options, here });
    if (copies.length === 0) return [];
    if (here) return await this.#copyRemote(copies, results, options);
    if (options.dryRun) {
      await this.#plan(copies, results, options);
      return [];
    }
    const same: Copy[] = [];
    const there: Copy[] = [];
    for (const copy of copies) {
      (this.#runner.sameNode(copy.oldKey, copy.newKey) ? same : there).push(copy);
    }
    const local = await this.#copyLocal(same, results, options);
    const changed = await this.#copyRemote([...there, ...local.moved], results, options);
    return [...local.changed, ...changed];
  }

  /**
   * Step 1, READ: sets the result of every key that needs no further copy, returns the others.
   *
   * @throws the connection error when an old key's node stays out of reach (an outage: the engine
   *   waits for it and re-reads the batch from its checkpoint).
   */
  async #read(
    pending: readonly Pending[],
    results: StrategyResult[],
    options: MigrateOptions & { here: boolean },
  ): Promise<Copy[]> {
    const header = [
      options.workspace ?? "",
      options.here ? "1" : "",
      this.#keys.luaSpec,
      DEFAULT_WORKSPACE_LUA.pattern,
      DEFAULT_WORKSPACE_LUA.maxLength,
    ];
    const settled = await this.#runner.run(
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
      const decided = classify(this.#keys, item, read.reply);
      if ("outcome" in decided) results[item.index] = decided;
      else copies.push(decided);
    });
    return copies;
  }

  /** Dry-run: what WRITE would do for each copy, by read-only scripts on the new keys' masters. */
  async #plan(
    copies: readonly Copy[],
    results: StrategyResult[],
    options: MigrateOptions,
  ): Promise<void> {
    const jobs = copies.map((c) => ({ key: c.newKey, args: [c.newKey, c.expireAt, c.packed] }));
    const settled = await this.#runner.run(SCRIPTS.dry, [], jobs, { signal: options.signal });
    settled.forEach((plan, j) => {
      const copy = copies[j]!;
      results[copy.index] = plan.ok
        ? copyResult(plan.reply, copy.workspace)
        : failure(plan.error, copy.workspace);
    });
  }

  /**
   * Copies each job on the master serving both its keys, in one atomic script from the live old
   * key (no re-check needed), if its values are still the validated ones. Returns the copies it
   * could not make: to read again (`changed`), or to copy across nodes (`moved`).
   */
  async #copyLocal(
    copies: readonly Copy[],
    results: StrategyResult[],
    options: MigrateOptions,
  ): Promise<{ changed: Copy[]; moved: Copy[] }> {
    const outcome = { changed: [] as Copy[], moved: [] as Copy[] };
    if (copies.length === 0) return outcome;
    const settled = await this.#runner.run(
      SCRIPTS.local,
      [this.#keys.luaSpec],
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

  /**
   * Steps 2 and 3 across masters, from the READ snapshot: WRITE each new key create-only with its
   * intent, then verify it (intents.ts). Returns the copies to read again.
   */
  async #copyRemote(
    copies: readonly Copy[],
    results: StrategyResult[],
    options: MigrateOptions,
  ): Promise<Copy[]> {
    if (copies.length === 0) return [];
    const { signal } = options;
    const progressKey = this.#progressKey;
    const ids = copies.map(() => `${this.#nonce}:${++this.#writes}`);
    const jobs = copies.map((c, j) => ({
      key: c.newKey,
      oldKey: c.oldKey,
      args: [c.newKey, intentKey(progressKey, c.newKey), ids[j]!, c.oldKey, c.expireAt, c.packed],
    }));
    const settled = await this.#runner.run(SCRIPTS.write, [], jobs, { signal, recorded: true });
    const written: Written[] = [];
    const pending: Copy[] = [];
    settled.forEach((write, j) => {
      const copy = copies[j]!;
      const id = ids[j]!;
      if (!write.ok) {
        // The call may have run before its reply was lost: its intent (if any) says what it wrote.
        results[copy.index] = failure(write.error, copy.workspace);
        written.push({ ...copy, id });
        return;
      }
      if (write.reply[0] === Code.pending) return void pending.push(copy);
      const [outcome, wrote] = decodeWrite(write.reply, copy);
      results[copy.index] = outcome;
      if (wrote) written.push({ ...copy, id });
    });
    const again = await this.#verify(written, results, signal);
    if (pending.length > 0) {
      // An earlier write of these keys was never settled: complete it, then read the jobs again.
      const newKeys = pending.map((c) => c.newKey);
      const intents = await listIntents(this.#runner, progressKey, newKeys, { signal });
      await completeIntents(this.#runner, progressKey, intents, { signal });
      again.push(...pending);
    }
    return again;
  }

  /** Re-checks and settles each write (intents.ts); returns the copies to read again. */
  async #verify(
    written: Written[],
    results: StrategyResult[],
    signal: AbortSignal | undefined,
  ): Promise<Copy[]> {
    const verdicts = await verifyWrites(this.#runner, this.#progressKey, written, { signal });
    const again: Copy[] = [];
    verdicts.forEach((verdict, j) => {
      const w = written[j]!;
      if ("error" in verdict) {
        // The intent stays, and the key's retry completes it: the copy made then counts as ours.
        const wrote = results[w.index];
        if (wrote !== undefined) this.#uncounted.remember([w.oldKey], [wrote]);
        results[w.index] = failure(verdict.error, w.workspace, true);
      } else if (verdict.keep) return;
      else if (verdict.gone) results[w.index] = { outcome: "skipped_gone" };
      else again.push(w);
    });
    return again;
  }
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

/** The outcome of a WRITE reply, and whether it wrote anything (to re-check). */
function decodeWrite(reply: unknown[], copy: Copy): [StrategyResult, boolean] {
  const code = reply[0] as number;
  const error = code === Code.error;
  const ttlSet = reply[error ? 2 : 1] === 1;
  const names = (reply[error ? 3 : 2] as Buffer[] | undefined) ?? [];
  const wrote = code === Code.created || (code !== Code.gone && (names.length > 0 || ttlSet));
  if (code !== Code.completed) return [copyResult(reply, copy.workspace), wrote];
  return [{ outcome: wrote ? "repaired" : "skipped_exists", workspace: copy.workspace }, wrote];
}

/**
 * A failed call as a per-key error, retryable when the condition may pass, or when `unverified`
 * (a write whose intent stays open: the key's retry completes it first, intents.ts).
 */
function failure(
  error: unknown,
  workspace?: string,
  unverified = false,
): StrategyResult {
  const code = errorCode(error);
  return {
    outcome: "errors",
    workspace,
    errorCode: code,
    errorMessage: errorLine(error),
    retryable: unverified || TRANSIENT.has(code) || isOutage(error),
  };
}

const DONE: Record<number, StrategyResult["outcome"]> = {
  [Code.migrated]: "migrated",
  [Code.created]: "migrated",
  [Code.repaired]: "repaired",
  [Code.exists]: "skipped_exists",
};

/** The result of a reply of a script that copies or plans a copy (scripts.ts). */
function copyResult(reply: unknown[], workspace: string): StrategyResult {
  const code = reply[0] as number;
  if (code === Code.gone) return { outcome: "skipped_gone" };
  if (code === Code.error) {
    const text = Buffer.isBuffer(reply[1]) ? reply[1].toString("utf8") : String(reply[1]);
    return errorResult(text, { workspace, transient: TRANSIENT });
  }
  const outcome = DONE[code];
  if (outcome === undefined) throw new Error(`cluster copy script returned unknown code ${code}`);
  return { outcome, workspace };
}
