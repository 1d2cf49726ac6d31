/**
 * The run: scan → limit → migrate → checkpoint → count, per node. Batches come out of the scanner,
 * pass the limiter in sub-batches, are classified and copied by the strategy, and their outcomes
 * flow into the counters; the checkpoint moves only after a batch's outcomes are in.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import { type CheckpointStore, runParams } from "./checkpoint.ts";
import { RedisUnavailableError, SafetyRefusal } from "./errors.ts";
import { estimateTotal, scanFraction } from "./estimate.ts";
import type { MigrationStrategy, StrategyResult } from "./migrate/strategy.ts";
import { countResults, emptyCounters } from "./outcome.ts";
import type { RateLimiter } from "./rate_limit.ts";
import type { RedisTarget } from "./redis/connect.ts";
import { serverRunId, waitForRedis } from "./redis/availability.ts";
import { errorCode, isOom, isOutage } from "./redis/errors.ts";
import type { Redis } from "./redis/ioredis.ts";
import { scanBatches } from "./redis/scan.ts";
import type { Logger, RunMode, RunObserver, Summary } from "./run_events.ts";
import { silentLogger } from "./run_events.ts";
import { jobIdOf, OLD_MATCH, OLD_PREFIX, type WorkspaceRule } from "./schema.ts";
import { escapeForLog } from "./telemetry/redact.ts";

/** What the engine needs from the command line. */
export interface BackfillOptions {
  mode: RunMode;
  batch: number;
  cursor?: string;
  maxKeys?: number;
  workspace?: string;
  rule: WorkspaceRule;
  resetProgress: boolean;
  /** Seconds to wait for a lost Redis before giving up (exit 3). */
  maxOutage: number;
  /** Keys per script call (default: ~1/10 s of --rps, at most 200). */
  subBatch?: number;
}

/** Collaborators of a run (all injected, so tests and other topologies plug in). */
export interface BackfillDeps {
  target: RedisTarget;
  strategy: MigrationStrategy;
  checkpoints: CheckpointStore;
  limiter: RateLimiter;
  observer?: RunObserver;
  logger?: Logger;
  /** Aborted by SIGINT/SIGTERM: stop at the next sub-batch boundary and save the checkpoint. */
  signal?: AbortSignal;
  /** Awaited before each batch (memory headroom guard); may pause the run. */
  beforeBatch?: (signal?: AbortSignal, force?: boolean) => Promise<void>;
  /** The node id used in checkpoint keys ("" = standalone). */
  nodeId?: (node: Redis) => Promise<string>;
}

/** Largest sub-batch: keeps every script call well under ~2 ms of Redis time. */
export const MAX_SUB_BATCH = 100;

/** Runs the backfill to completion, `--max-keys`, or a stop signal, and returns the summary. */
export async function runBackfill(options: BackfillOptions, deps: BackfillDeps): Promise<Summary> {
  const run = new Run(options, deps);
  return await run.execute();
}

interface NodeOutcome {
  completed: boolean;
  cursor: string;
}

class Run {
  readonly counters = emptyCounters();
  readonly #options: BackfillOptions;
  readonly #deps: BackfillDeps;
  readonly #log: Logger;
  readonly #params: string;
  readonly #subBatch: number;
  readonly #started = performance.now();
  /** Old keys handed to processing so far (for --max-keys, shared by all nodes). */
  #claimed = 0;
  #estimate = 0;
  #dbsize = 0;
  /** Each node's resume cursor (what its checkpoint says, or would say in dry-run). */
  readonly #cursors = new Map<string, string>();

  constructor(options: BackfillOptions, deps: BackfillDeps) {
    this.#options = options;
    this.#deps = deps;
    this.#log = deps.logger ?? silentLogger;
    this.#params = runParams({
      workspace: options.workspace,
      pattern: options.rule.pattern.source,
      match: OLD_MATCH,
    });
    const rps = deps.limiter.rps;
    this.#subBatch = Math.max(
      1,
      Math.min(
        options.subBatch ?? (rps > 0 ? Math.ceil(rps / 10) : MAX_SUB_BATCH),
        options.batch,
        MAX_SUB_BATCH,
      ),
    );
  }

  async execute(): Promise<Summary> {
    const { target, observer } = this.#deps;
    await this.#deps.strategy.init();
    const masters = target.masters();
    const sizes = await Promise.all(masters.map((node) => node.dbsize()));
    this.#dbsize = sizes.reduce((a, b) => a + b, 0);
    this.#estimate = await this.#initialEstimate(masters, sizes);
    observer?.onStart?.({
      mode: this.#options.mode,
      rps: this.#deps.limiter.rps,
      estimatedTotal: this.#estimate,
      progressKey: this.#deps.checkpoints.prefix,
    });
    let outcomes: NodeOutcome[] = [];
    let failure: unknown;
    try {
      outcomes = await Promise.all(masters.map((node) => this.#runNode(node)));
    } catch (error) {
      failure = error;
    }
    const summary: Summary = {
      mode: this.#options.mode,
      ...this.counters,
      duration_seconds: Math.round((performance.now() - this.#started) / 10) / 100,
      completed: failure === undefined && outcomes.every((o) => o.completed),
      cursor: this.#resumeCursor(),
    };
    if (failure !== undefined) {
      (failure as { summary?: Summary }).summary = summary;
      throw failure;
    }
    return summary;
  }

  /** The cursor to resume from: one node's, or `host:port=cursor` per node (also after a failure). */
  #resumeCursor(): string {
    if (this.#cursors.size === 1) return [...this.#cursors.values()][0]!;
    return [...this.#cursors].map(([name, cursor]) => `${name}=${cursor}`).join(",");
  }

  /** DBSIZE × the share of old keys among 64 random keys (read-only, O(1) each). */
  async #initialEstimate(masters: Redis[], sizes: number[]): Promise<number> {
    const guesses = await Promise.all(masters.map(async (node, i) => {
      const size = sizes[i] ?? 0;
      if (size === 0) return 0;
      const pipeline = node.pipeline();
      for (let i = 0; i < 64; i++) pipeline.randomkey();
      const replies = (await pipeline.exec()) ?? [];
      const old = replies.filter(([, key]) => typeof key === "string" && key.startsWith(OLD_PREFIX))
        .length;
      return Math.round((size * old) / Math.max(replies.length, 1));
    }));
    const total = guesses.reduce((a, b) => a + b, 0);
    return this.#options.maxKeys === undefined ? total : Math.min(total, this.#options.maxKeys);
  }

  async #runNode(node: Redis): Promise<NodeOutcome> {
    const { target, checkpoints, signal } = this.#deps;
    const name = target.nodeName(node);
    const nodeId = this.#deps.nodeId ? await this.#deps.nodeId(node) : "";
    const execute = this.#options.mode === "execute";
    let runId = await serverRunId(node);
    let committed = await this.#startCursor(name, nodeId, runId);
    this.#cursors.set(name, committed);
    const startFraction = scanFraction(committed, this.#dbsize);
    let lastSave = 0;
    /** The checkpoint save in flight, if any. */
    let saving: Promise<void> | undefined;
    let lastJob: Buffer | undefined;
    let outageSince: number | undefined;

    for (;;) {
      try {
        const batches = scanBatches(node, {
          match: OLD_MATCH,
          count: this.#options.batch,
          cursor: committed,
        });
        for await (const batch of batches) {
          outageSince = undefined;
          let keys = batch.keys;
          let trimmed = false;
          if (this.#options.maxKeys !== undefined) {
            const left = this.#options.maxKeys - this.#claimed;
            if (keys.length > left) {
              keys = keys.slice(0, Math.max(left, 0));
              trimmed = true;
            }
          }
          this.#claimed += keys.length;
          if (keys.length > 0) await this.#deps.beforeBatch?.(signal);
          const started = performance.now();
          const { results, complete } = await this.#processBatch(keys, name);
          countResults(this.counters, results);
          if (results.length > 0) lastJob = jobIdOf(keys[results.length - 1]!);
          const finished = complete && !trimmed;
          // A batch that was cut short is re-read from its start next time (idempotent), so
          // nothing of it is lost; a finished one moves the cursor on.
          const resumeAt = finished ? batch.next : batch.cursor;
          const scanDone = finished && batch.next === "0";
          if (execute && !scanDone && (results.length > 0 || performance.now() - lastSave > 1000)) {
            // On one server the save goes out now and is awaited only before the next one (or
            // the end): the next batch's scripts follow it on the same connection, so Redis
            // applies this checkpoint before any write of the next batch, and no round trip
            // stalls the scan. A cluster writes checkpoints and copies through different nodes,
            // with no order between them, so there the save is awaited before going on.
            await saving;
            const checkpoint = { cursor: resumeAt, lastJob, runId, params: this.#params };
            saving = this.#untilWritable(name, () => checkpoints.save(nodeId, checkpoint));
            saving.catch(() => {});
            if (target.kind === "cluster") await saving;
            lastSave = performance.now();
          }
          committed = resumeAt;
          this.#cursors.set(name, scanDone ? "0" : committed);
          this.#estimate = estimateTotal({
            initial: this.#estimate,
            seen: this.counters.scanned,
            startFraction,
            fraction: scanDone ? 1 : scanFraction(batch.next, this.#dbsize),
            done: scanDone && this.#deps.target.masters().length === 1,
          });
          if (this.#options.maxKeys !== undefined) {
            this.#estimate = Math.min(this.#estimate, this.#options.maxKeys);
          }
          this.#deps.observer?.onBatch?.({
            node: name,
            results,
            seconds: (performance.now() - started) / 1000,
            totals: { ...this.counters },
            estimatedTotal: this.#estimate,
          });
          if (!finished || signal?.aborted) {
            await saving;
            return { completed: false, cursor: committed };
          }
          if (
            this.#options.maxKeys !== undefined && this.#claimed >= this.#options.maxKeys &&
            !scanDone
          ) {
            await saving;
            return { completed: false, cursor: committed };
          }
        }
        await saving;
        if (execute) await checkpoints.clear(nodeId);
        return { completed: true, cursor: "0" };
      } catch (error) {
        // A save still in flight either landed or failed with the same outage: settle it.
        await saving?.catch(() => {});
        saving = undefined;
        if (signal?.aborted) return { completed: false, cursor: committed };
        if (!isOutage(error)) throw error;
        outageSince ??= performance.now();
        const code = errorCode(error);
        // Named now, not at the start: after a failover the node is another host.
        const where = target.nodeName(node);
        this.#log.log(
          "warn",
          "redis_lost",
          `lost Redis at ${where} (${code}); waiting up to ${this.#options.maxOutage} s`,
          { node: where, code },
        );
        this.#deps.observer?.onRedisDown?.({ node: where, reason: code });
        const back = await waitForRedis(node, {
          name: where,
          deadline: outageSince + this.#options.maxOutage * 1000,
          cursor: committed,
          // A failover can leave us on a replica that answers PING but refuses writes.
          needsPrimary: execute,
          signal,
        });
        if (!back) return { completed: false, cursor: committed };
        if (performance.now() >= outageSince + this.#options.maxOutage * 1000) {
          throw new RedisUnavailableError(
            `Redis at ${where} kept failing (${code}) for longer than --max-outage; ` +
              `the checkpoint is kept at cursor=${committed}`,
          );
        }
        const now = await serverRunId(node);
        const serving = target.nodeName(node);
        if (now !== runId) {
          this.#log.log(
            "warn",
            "redis_restarted",
            `Redis at ${serving} restarted or failed over (new run_id): its SCAN cursor is ` +
              `meaningless, rescanning from cursor 0`,
            { node: serving },
          );
          runId = now;
          committed = "0";
          this.#cursors.set(name, committed);
        } else {
          this.#log.log(
            "info",
            "redis_back",
            `Redis at ${serving} is back; resuming from cursor=${committed}`,
            { node: serving },
          );
          this.#deps.observer?.onRedisReply?.({ node: serving });
        }
      }
    }
  }

  /** Where this node's scan starts, per --cursor, --reset-progress and the stored checkpoint. */
  async #startCursor(name: string, nodeId: string, runId: string): Promise<string> {
    const { checkpoints } = this.#deps;
    const options = this.#options;
    const where = nodeId === "" ? "" : ` on ${name}`;
    if (options.mode === "dry-run") {
      const stored = await checkpoints.load(nodeId);
      if (stored && options.cursor === undefined) {
        this.#log.log(
          "info",
          "checkpoint_ignored",
          `dry-run ignores the stored checkpoint (cursor=${stored.cursor})${where} and scans from cursor 0`,
        );
      }
      return options.cursor ?? "0";
    }
    if (options.resetProgress) {
      await checkpoints.clear(nodeId);
      this.#log.log(
        "info",
        "checkpoint_reset",
        `cleared the stored checkpoint${where}; starting from cursor ${options.cursor ?? "0"}`,
      );
      return options.cursor ?? "0";
    }
    if (options.cursor !== undefined) {
      this.#log.log("info", "cursor_flag", `starting from --cursor ${options.cursor}${where}`);
      return options.cursor;
    }
    const stored = await checkpoints.load(nodeId);
    if (!stored) return "0";
    if (stored.params !== this.#params) {
      throw new SafetyRefusal(
        `the checkpoint under ${checkpoints.prefix} was made with other parameters (${
          stored.params || "unknown"
        }); ` +
          `run with the same --workspace/--workspace-pattern, or --reset-progress to start over`,
      );
    }
    if (stored.runId !== runId) {
      this.#log.log(
        "warn",
        "checkpoint_stale",
        `Redis at ${name} restarted since the checkpoint (run_id changed): its cursor is meaningless, rescanning from cursor 0`,
      );
      return "0";
    }
    const last = stored.lastJob ? escapeForLog(stored.lastJob) : "none";
    this.#log.log(
      "info",
      "resume",
      `Resuming from stored cursor=${stored.cursor}, last_job=${last}${where}`,
      {
        cursor: stored.cursor,
      },
    );
    return stored.cursor;
  }

  /**
   * Sends a batch in sub-batches through the limiter, all in flight at once, in key order.
   * On a stop signal no further sub-batch is sent; the ones in flight finish.
   */
  async #processBatch(
    keys: Buffer[],
    node: string,
  ): Promise<{ results: StrategyResult[]; complete: boolean }> {
    const { limiter, observer, signal } = this.#deps;
    const inFlight: Promise<StrategyResult[]>[] = [];
    let complete = true;
    for (let i = 0; i < keys.length; i += this.#subBatch) {
      const chunk = keys.slice(i, i + this.#subBatch);
      try {
        signal?.throwIfAborted();
        const waited = await limiter.acquire(chunk.length, signal);
        if (waited > 0) observer?.onLimiterWait?.(waited);
      } catch (error) {
        if (!signal?.aborted) throw error;
        complete = false;
        break;
      }
      const work = this.#migrateChunk(chunk, node);
      work.catch(() => {});
      inFlight.push(work);
    }
    const settled = await Promise.allSettled(inFlight);
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
    if (failed) throw failed.reason;
    return {
      results: settled.flatMap((s) => (s as PromiseFulfilledResult<StrategyResult[]>).value),
      complete,
    };
  }

  /** One sub-batch with one retry: of the whole call on a command failure, of keys marked retryable. */
  async #migrateChunk(keys: Buffer[], node: string): Promise<StrategyResult[]> {
    const migrateOptions = {
      dryRun: this.#options.mode === "dry-run",
      workspace: this.#options.workspace,
    };
    const attempt = async (subset: Buffer[]): Promise<StrategyResult[]> => {
      try {
        return await this.#deps.strategy.migrate(subset, migrateOptions);
      } catch (error) {
        if (isOutage(error)) throw error;
        return subset.map(() => ({
          outcome: "errors",
          errorCode: errorCode(error),
          retryable: true,
        }));
      }
    };
    const results = await attempt(keys);
    const failing = (code?: string) =>
      results.flatMap((r, i) =>
        r.outcome === "errors" && r.retryable && (code === undefined || r.errorCode === code)
          ? [i]
          : []
      );
    const retryOnce = failing().filter((i) => results[i]!.errorCode !== "OOM");
    if (retryOnce.length > 0) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      const again = await attempt(retryOnce.map((i) => keys[i]!));
      retryOnce.forEach((index, j) => results[index] = again[j]!);
    }
    await this.#waitOutOom(keys, results, failing, attempt, node);
    results.forEach((result, i) => {
      if (result.outcome !== "errors") return;
      this.#log.log(
        "error",
        "key_error",
        `job ${escapeForLog(jobIdOf(keys[i]!) ?? keys[i]!)} failed after retrying: ${
          result.errorCode ?? "error"
        }`,
        {
          node,
          code: result.errorCode ?? "error",
        },
      );
    });
    return results;
  }

  /**
   * Retries the keys that got OOM until Redis accepts them (see {@linkcode #untilWritable}).
   */
  async #waitOutOom(
    keys: Buffer[],
    results: StrategyResult[],
    failing: (code?: string) => number[],
    attempt: (subset: Buffer[]) => Promise<StrategyResult[]>,
    node: string,
  ): Promise<void> {
    if (failing("OOM").length === 0) return;
    await this.#untilWritable(node, async () => {
      const oom = failing("OOM");
      const again = await attempt(oom.map((i) => keys[i]!));
      oom.forEach((index, j) => results[index] = again[j]!);
      if (failing("OOM").length > 0) throw new Error("OOM: keys still refused");
    }, true);
  }

  /**
   * OOM means Redis refuses writes (the application's too), so it is not a per-key failure: back
   * off, pausing on the memory guard, and try again until the write goes through. Past
   * --max-outage the run stops (exit 4, checkpoint kept) instead of pressing a full Redis.
   */
  async #untilWritable<T>(node: string, write: () => Promise<T>, backOffFirst = false): Promise<T> {
    const { signal } = this.#deps;
    const deadline = performance.now() + this.#options.maxOutage * 1000;
    for (let round = 0;; round++) {
      if (round > 0 || backOffFirst) {
        if (round === 0 || (round === 1 && !backOffFirst)) {
          this.#log.log(
            "warn",
            "redis_oom",
            `Redis at ${node} refused writes (OOM): backing off until it accepts them again`,
            { node },
          );
        }
        if (performance.now() >= deadline) {
          throw new SafetyRefusal(
            `Redis at ${node} kept refusing writes (OOM) for longer than --max-outage; ` +
              `stopped with the checkpoint kept`,
          );
        }
        await this.#deps.beforeBatch?.(signal, true);
        await new Promise((resolve) => setTimeout(resolve, Math.min(250 * 2 ** round, 5000)));
      }
      try {
        return await write();
      } catch (error) {
        if (!isOom(error) || signal?.aborted) throw error;
      }
    }
  }
}
