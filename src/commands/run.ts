/**
 * `backfill --dry-run | --execute`: telemetry up, connect, check headroom, take the lock, run the
 * engine, print the summary.
 *
 * @module
 */
import { runBackfill } from "../backfill.ts";
import { CheckpointStore } from "../checkpoint.ts";
import type { RunOptions } from "../cli/args.ts";
import { BackfillError, ExitCode, SafetyRefusal, UsageError } from "../errors.ts";
import { RunLock } from "../lock.ts";
import { nodeIdFor, strategyFor } from "../migrate/select.ts";
import { SlidingWindowLimiter } from "../rate_limit.ts";
import { connectRedis } from "../redis/connect.ts";
import type { Redis } from "../redis/ioredis.ts";
import type { Summary } from "../run_events.ts";
import { MemoryGuard } from "../safety/memory.ts";
import { renderSummary, summaryJson } from "../summary.ts";
import { createTelemetry, MetricsServerError, type Telemetry } from "../telemetry/mod.ts";
import type { CommandIo } from "./io.ts";

/** Runs the backfill; returns the exit code (errors that map to codes are thrown). */
export async function runCommand(options: RunOptions, io: CommandIo): Promise<number> {
  let telemetry: Telemetry;
  try {
    // Before Redis is touched: a taken metrics port must fail with nothing written.
    telemetry = createTelemetry({
      enabled: io.telemetryEnabled,
      metricsPort: options.metricsPort,
      metricsHost: options.metricsHost,
      metricsLingerSeconds: options.metricsLinger,
      pushgatewayUrl: options.pushgateway,
      pushIntervalSeconds: options.pushInterval,
      expectedBatchSeconds: options.rps > 0 ? options.batch / options.rps : 0,
      signal: io.signal,
      progressInterval: options.progressInterval,
      logFormat: options.logFormat,
      quiet: options.quiet,
      workspaceLabel: options.metricsWorkspaceLabel,
      isTty: io.stderrIsTty,
      columns: io.columns,
      color: io.color,
      version: io.version,
      progressKey: options.progressKey,
      write: io.stderr,
    });
  } catch (error) {
    if (error instanceof MetricsServerError) {
      throw new UsageError(
        `--metrics-port ${options.metricsPort} cannot be used: ${error.message}`,
      );
    }
    throw error;
  }
  const logger = telemetry.logger;
  let summary: Summary | undefined;
  try {
    const target = await connectRedis(options.redisUrls, { tls: options.tls, signal: io.signal });
    let lock: RunLock | undefined;
    const lockLost = new AbortController();
    try {
      logger.log("info", "connected", `connected to ${target.redacted} (${target.kind})`);
      const client = target.client as Redis;
      if (target.kind === "cluster" && options.cursor !== undefined) {
        throw new UsageError(
          "--cursor is one SCAN cursor, but a cluster keeps one per master " +
            `({${options.progressKey}}:cursor:<node-id>); use --reset-progress to start over`,
        );
      }
      // Headroom before anything is written (the lock included): a refusal leaves Redis untouched.
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
      const layoutBefore = await target.layout?.();
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
            strategy: strategyFor(target, options.rule, {
              retryBudgetMs: options.maxOutage * 1000,
            }),
            nodeId: nodeIdFor(target),
            checkpoints: new CheckpointStore(client, options.progressKey),
            limiter: new SlidingWindowLimiter(options.rps),
            observer: telemetry.observer,
            logger,
            signal: AbortSignal.any([io.signal, lockLost.signal]),
            beforeBatch: options.mode === "execute"
              ? (signal, force) => memory.waitForHeadroom(signal, force)
              : undefined,
          },
        );
      } catch (error) {
        // A run that failed part-way still reports what it did before the error.
        const partial = (error as { summary?: Summary }).summary;
        if (partial && error instanceof BackfillError) summary = partial;
        throw error;
      }
      if (layoutBefore !== undefined && (await target.layout?.()) !== layoutBefore) {
        // Keys that moved between masters mid-run may have escaped every master's SCAN.
        logger.log(
          "warn",
          "cluster_layout_changed",
          "the cluster's slot layout changed during the run (reshard or failover): keys that " +
            "moved between masters may have escaped this scan; run again (a rerun copies only " +
            "what is missing)",
        );
        summary = { ...summary, completed: false };
      }
      if (lockLost.signal.aborted) throw lockLost.signal.reason;
      return summary.errors > 0 ? ExitCode.failed : ExitCode.ok;
    } finally {
      await lock?.release();
      await target.close();
    }
  } finally {
    // Telemetry ends first (last progress line, final push), then the summary on stdout, then the
    // metrics server lingers for a last scrape.
    await telemetry.end(summary);
    if (summary) {
      io.stdout(
        options.json ? JSON.stringify(summaryJson(summary)) + "\n" : renderSummary(summary),
      );
    }
    await telemetry.close();
  }
}
