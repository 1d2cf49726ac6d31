/**
 * `backfill --dry-run | --execute`: telemetry up, connect, check headroom, take the lock, run the
 * engine, print the summary.
 *
 * @module
 */
import { CheckpointStore } from "../checkpoint/store.ts";
import type { RunOptions } from "../cli/args.ts";
import type { Gate } from "../control/gate.ts";
import { BackfillError, ExitCode, SafetyRefusal, UsageError } from "../errors.ts";
import { nodeIdFor, strategyFor } from "../migrate/select.ts";
import { connectRedis } from "../redis/connect.ts";
import type { Redis } from "../redis/ioredis.ts";
import type { RedisTarget } from "../redis/target.ts";
import { runBackfill } from "../run/engine.ts";
import { LiveControl } from "../run/live_control.ts";
import { startThrottledGate, type ThrottledGate } from "../run/throttled_gate.ts";
import { fanOut } from "../telemetry/fan_out.ts";
import { renderSummary, summaryJson } from "../run/summary.ts";
import type { Logger, RunObserver, Summary } from "../run_events.ts";
import { RunLock } from "../safety/lock.ts";
import { MemoryGuard } from "../safety/memory.ts";
import { createTelemetry, MetricsServerError, type Telemetry } from "../telemetry/mod.ts";
import type { CommandIo } from "./io.ts";

/** Runs the backfill; returns the exit code (errors that map to codes are thrown). */
export async function runCommand(options: RunOptions, io: CommandIo): Promise<number> {
  const telemetry = startTelemetry(options, io);
  /** What the run did, also when it failed part-way (printed in any case). */
  const outcome: { summary?: Summary } = {};
  try {
    const target = await connectRedis(options.redisUrls, { tls: options.tls, signal: io.signal });
    try {
      return await runOn(target, options, { io, telemetry, outcome });
    } finally {
      await target.close();
    }
  } finally {
    // Telemetry ends first (last progress line, final push), then the summary on stdout, then
    // the metrics server lingers for a last scrape.
    await telemetry.end(outcome.summary);
    if (outcome.summary) {
      const { summary } = outcome;
      io.stdout(
        options.json ? JSON.stringify(summaryJson(summary)) + "\n" : renderSummary(summary),
      );
    }
    await telemetry.close();
  }
}

/**
 * Telemetry, before Redis is touched: a metrics port that is taken must fail with nothing written.
 *
 * @throws {UsageError} when `--metrics-port` cannot be bound.
 */
function startTelemetry(options: RunOptions, io: CommandIo): Telemetry {
  try {
    return createTelemetry({
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
}

interface RunContext {
  io: CommandIo;
  telemetry: Telemetry;
  outcome: { summary?: Summary };
}

/** Headroom, lock, engine on a connected target; the exit code. */
async function runOn(target: RedisTarget, options: RunOptions, ctx: RunContext): Promise<number> {
  const logger = ctx.telemetry.logger;
  logger.log("info", "connected", `connected to ${target.redacted} (${target.kind})`);
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
  // The probes' baselines are measured here, before the first write (the lock).
  const throttled = await startThrottledGate(target, {
    ...options,
    logger,
    observer: ctx.telemetry.observer,
    signal: ctx.io.signal,
  });
  const lockLost = new AbortController();
  const stop = new AbortController();
  let lock: RunLock | undefined;
  let live: LiveControl | undefined;
  try {
    lock = options.mode === "execute"
      ? await takeLock(target.client as Redis, options, { logger, lockLost, signal: ctx.io.signal })
      : undefined;
    live = lock && await startLiveControl(target, options, { throttled, lock, logger, stop });
    const layoutBefore = await target.layout?.();
    const signal = AbortSignal.any([ctx.io.signal, lockLost.signal, stop.signal]);
    let summary = await runEngine(target, options, {
      ...ctx,
      gate: throttled.gate,
      signal,
      observer: live ? fanOut([ctx.telemetry.observer, live.observer], logger) : undefined,
    });
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
      ctx.outcome.summary = summary;
    }
    if (lockLost.signal.aborted) throw lockLost.signal.reason;
    if (stop.signal.aborted && !ctx.io.signal.aborted) return ExitCode.stopped;
    return summary.errors > 0 ? ExitCode.failed : ExitCode.ok;
  } finally {
    await live?.finish();
    await throttled.close();
    await lock?.release();
  }
}

/**
 * Live control for an `--execute` run (dry-run writes nothing, so it publishes no status, and the
 * control key belongs to the run that holds the lock).
 */
function startLiveControl(
  target: RedisTarget,
  options: RunOptions,
  ctx: { throttled: ThrottledGate; lock: RunLock; logger: Logger; stop: AbortController },
): Promise<LiveControl> {
  return LiveControl.start({
    client: target.client,
    progressKey: options.progressKey,
    mode: options.mode,
    holder: { host: ctx.lock.holder.host, pid: ctx.lock.holder.pid },
    targets: ctx.throttled.targets,
    logger: ctx.logger,
    stop: ctx.stop,
  });
}

/** Takes the run lock; a lost lock aborts `lockLost`, which stops the run. */
async function takeLock(
  client: Redis,
  options: RunOptions,
  ctx: { logger: Logger; lockLost: AbortController; signal: AbortSignal },
): Promise<RunLock> {
  const { progressKey } = options;
  const { logger, lockLost } = ctx;
  const lock = await RunLock.acquire(client, `${progressKey}:lock`, {
    waitMs: options.waitLockSeconds * 1000,
    onWait: (message) => logger.log("warn", "lock_wait", message),
    signal: ctx.signal,
    onLost: (reason) => {
      logger.log("error", "lock_lost", `stopping: ${reason}`);
      lockLost.abort(new SafetyRefusal(`lost the run lock ${progressKey}:lock: ${reason}`));
    },
  });
  logger.log(
    "info",
    "lock_acquired",
    `holding ${lock.key} as ${lock.holder.host} pid ${lock.holder.pid}`,
  );
  return lock;
}

/** The engine with its collaborators; a partial summary is kept when it fails part-way. */
async function runEngine(
  target: RedisTarget,
  options: RunOptions,
  ctx: RunContext & { gate: Gate; signal: AbortSignal; observer?: RunObserver },
): Promise<Summary> {
  try {
    const summary = await runBackfill(
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
          maxCallMs: options.maxCallMs,
        }),
        nodeId: nodeIdFor(target),
        checkpoints: new CheckpointStore(target.client as Redis, options.progressKey),
        gate: ctx.gate,
        observer: ctx.observer ?? ctx.telemetry.observer,
        logger: ctx.telemetry.logger,
        signal: ctx.signal,
      },
    );
    ctx.outcome.summary = summary;
    return summary;
  } catch (error) {
    // A run that failed part-way still reports what it did before the error.
    const partial = (error as { summary?: Summary }).summary;
    if (partial && error instanceof BackfillError) ctx.outcome.summary = partial;
    throw error;
  }
}
