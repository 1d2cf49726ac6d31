/**
 * `backfill --dry-run | --execute`: connect, take the lock, run the engine, print the summary.
 *
 * @module
 */
import { runBackfill } from "../backfill.ts";
import { CheckpointStore } from "../checkpoint.ts";
import type { RunOptions } from "../cli/args.ts";
import { BackfillError, ExitCode, SafetyRefusal } from "../errors.ts";
import { RunLock } from "../lock.ts";
import { MemoryGuard } from "../safety/memory.ts";
import { nodeIdFor, strategyFor } from "../migrate/select.ts";
import { SlidingWindowLimiter } from "../rate_limit.ts";
import { connectRedis } from "../redis/connect.ts";
import type { Redis } from "../redis/ioredis.ts";
import type { Logger, Summary } from "../run_events.ts";
import { renderSummary, summaryJson } from "../summary.ts";

/** What a command needs from the process (injected by main.ts). */
export interface CommandIo {
  stdout: (text: string) => void;
  logger: Logger;
  signal: AbortSignal;
}

/** Runs the backfill; returns the exit code (errors that map to codes are thrown). */
export async function runCommand(options: RunOptions, io: CommandIo): Promise<number> {
  const { logger, signal } = io;
  const target = await connectRedis(options.redisUrls, { tls: options.tls, signal });
  let lock: RunLock | undefined;
  const lockLost = new AbortController();
  const stop = AbortSignal.any([signal, lockLost.signal]);
  try {
    logger.log("info", "connected", `connected to ${target.redacted} (${target.kind})`);
    const client = target.client as Redis;
    const checkpoints = new CheckpointStore(client, options.progressKey);
    // Headroom before anything is written (the lock included): refusing must leave Redis untouched.
    const memory = new MemoryGuard(target.masters(), (node) => target.nodeName(node), {
      maxPct: options.maxMemoryPct,
      logger,
    });
    await memory.precheck(options.mode === "execute");
    if (options.mode === "execute") {
      lock = await RunLock.acquire(client, `${options.progressKey}:lock`, {
        onLost: (reason) => {
          logger.log("error", "lock_lost", `stopping: ${reason}`);
          lockLost.abort(
            new SafetyRefusal(`lost the run lock ${options.progressKey}:lock: ${reason}`),
          );
        },
      });
      logger.log(
        "info",
        "lock_acquired",
        `holding ${lock.key} as ${lock.holder.host} pid ${lock.holder.pid}`,
      );
    }
    let summary: Summary;
    try {
      summary = await runBackfill(
        {
          mode: options.mode,
          batch: options.batch,
          cursor: options.cursor,
          maxKeys: options.maxKeys,
          workspace: options.workspace,
          rule: options.rule,
          resetProgress: options.resetProgress,
          maxOutage: options.maxOutage,
        },
        {
          target,
          strategy: strategyFor(target, options.rule),
          nodeId: nodeIdFor(target),
          checkpoints,
          limiter: new SlidingWindowLimiter(options.rps),
          logger,
          signal: stop,
          beforeBatch: options.mode === "execute"
            ? (signal) => memory.waitForHeadroom(signal)
            : undefined,
        },
      );
    } catch (error) {
      // A run that failed part-way still reports what it did before the error.
      const partial = (error as { summary?: Summary }).summary;
      if (partial && error instanceof BackfillError) printSummary(partial, options, io);
      throw error;
    }
    printSummary(summary, options, io);
    if (lockLost.signal.aborted) throw lockLost.signal.reason;
    return summary.errors > 0 ? ExitCode.failed : ExitCode.ok;
  } finally {
    await lock?.release();
    await target.close();
  }
}

function printSummary(summary: Summary, options: RunOptions, io: CommandIo): void {
  io.stdout(options.json ? JSON.stringify(summaryJson(summary)) + "\n" : renderSummary(summary));
}
