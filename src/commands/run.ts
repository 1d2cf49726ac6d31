/**
 * `backfill --dry-run | --execute`: telemetry up, connect, check headroom, take the lock, run the
 * engine, print the summary.
 *
 * @module
 */
import { logClientClocks, probeCallClock } from "../control/call_clock.ts";
import { latencyBudget } from "../control/call_window.ts";
import { CheckpointStore } from "../run/checkpointer.ts";
import type { RunOptions } from "../cli/args.ts";
import type { Gate } from "../run/copier.ts";
import { BackfillError, ExitCode, SafetyRefusal, UsageError } from "../errors.ts";
import { nodeIdFor, strategyFor } from "../migrate/select.ts";
import { connectRedis } from "../redis/connect.ts";
import type { Redis } from "../redis/ioredis.ts";
import { scopeToShard, shardLabel, type ShardScope } from "../redis/shard.ts";
import type { RedisTarget } from "../redis/target.ts";
import { runBackfill } from "../run/engine.ts";
import { throughOutages } from "../run/outage.ts";
import { LiveControl } from "../run/live_control.ts";
import { startThrottledGate } from "../run/throttled_gate.ts";
import { renderSummary, summaryJson } from "../run/summary.ts";
import type { Logger, RunObserver, Summary } from "../run_events.ts";
import { acquireLocks, lockKey, type LockSet } from "../safety/lock.ts";
import { emptyCounters } from "../outcome.ts";
import { createTelemetry, fanOut, type Telemetry } from "../telemetry/mod.ts";
import type { CommandIo } from "./io.ts";
import { startMetrics } from "./metrics_port.ts";
import { checkBeforeWriting } from "./run_checks.ts";

/** The shortest silence that counts as a lost server (a `--max-outage 0` run still waits this). */
const MIN_SILENCE_MS = 1_000;

/** Runs the backfill; returns the exit code (errors that map to codes are thrown). */
export async function runCommand(options: RunOptions, io: CommandIo): Promise<number> {
  // Telemetry before Redis is touched: a metrics port that is taken fails with nothing written.
  const telemetry = startMetrics(options, (outlet) =>
    createTelemetry({
      enabled: io.telemetryEnabled,
      ...outlet,
      expectedBatchSeconds: options.rps > 0 ? options.batch / options.rps : 0,
      redisSilenceSeconds: options.healthTimeout,
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
    }));
  const outcome: Outcome = {};
  try {
    const target = await connectRedis(options.redisUrls, {
      tls: options.tls,
      // A connection silent this long with commands pending has lost its server (a frozen one
      // answers nothing): the run's outage bound, counted from the silence's start.
      silenceMs: Math.max(options.maxOutage * 1000, MIN_SILENCE_MS),
      signal: io.signal,
    });
    const { logger } = telemetry;
    try {
      logger.log("info", "connected", `connected to ${target.redacted} (${target.kind})`);
      return await startAndRun(target, options, { io, telemetry, outcome });
    } catch (error) {
      if (io.signal.aborted && error === io.signal.reason && outcome.summary === undefined) {
        logger.log(
          "info",
          "stopped",
          `stopped by ${String(io.signal.reason)} before the first batch`,
        );
      }
      throw error;
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

/** What the run did, also when it failed part-way (printed in any case). */
type Outcome = { summary?: Summary };

/**
 * Start-up (shard, checks, throttle, locks, live control; each step through outages), the engine,
 * then the exit code: a lost lock throws its refusal, a stop from live control is `stopped`, and a
 * run whose slot layout changed is not complete.
 */
async function startAndRun(
  connected: RedisTarget,
  options: RunOptions,
  { io, telemetry, outcome }: { io: CommandIo; telemetry: Telemetry; outcome: Outcome },
): Promise<number> {
  const { logger } = telemetry;
  const step = <T>(
    what: string,
    run: () => Promise<T>,
    { readOnly = false, target = connected, signal = io.signal } = {},
  ) =>
    throughOutages(run, { what, readOnly, target, logger, maxOutage: options.maxOutage, signal });
  if (connected.kind === "cluster" && options.cursor !== undefined) {
    throw new UsageError(
      "--cursor is one SCAN cursor, but a cluster keeps one per master " +
        `({${options.progressKey}}:cursor:<node-id>); use --reset-progress to start over`,
    );
  }
  const scope = await step(
    "reading the cluster's masters",
    () => scopeToShard(connected, options.shard),
    { readOnly: true },
  );
  logShard(scope, options, logger);
  if (scope.nodeIds.length === 0) {
    outcome.summary = idleShard(options, logger);
    return ExitCode.ok;
  }
  const target = scope.target;
  const preflight = await step(
    "checking before writing",
    () => checkBeforeWriting(target, options, { logger, signal: io.signal }),
    { readOnly: true },
  );
  const throttled = await step("starting the throttle", () =>
    startThrottledGate(target, {
      ...options,
      logger,
      observer: telemetry.observer,
      signal: io.signal,
    }));
  const lockLost = new AbortController();
  const stop = new AbortController();
  let lock: LockSet | undefined;
  let live: LiveControl | undefined;
  try {
    if (options.mode === "execute") {
      lock = await step(
        "taking the run lock",
        () =>
          takeLocks(target.client as Redis, scope.nodeIds, options, {
            logger,
            lockLost,
            signal: io.signal,
          }),
      );
      // Only an execute run publishes status and obeys control: dry-run writes nothing.
      const holder = lock.locks[0]!.holder;
      live = await step("starting live control", () =>
        LiveControl.start({
          client: target.client,
          progressKey: options.progressKey,
          mode: options.mode,
          holder: { host: holder.host, pid: holder.pid },
          throttle: throttled.throttle,
          gate: throttled.gate,
          logger,
          stop,
          shard: options.shard,
          mapping: options.keys.fingerprint.mapping,
        }));
    }
    const layoutBefore = await step(
      "reading the cluster's slot layout",
      () => target.layout?.() ?? Promise.resolve(undefined),
      { readOnly: true, target },
    );
    const signal = AbortSignal.any([io.signal, lockLost.signal, stop.signal]);
    const clock = options.callClock;
    await step(
      "reading the servers' clocks",
      () => logClientClocks(target, (node) => probeCallClock(node, clock), logger, clock),
      { readOnly: true, target, signal },
    );
    const summary = await runEngine(target, options, {
      logger,
      outcome,
      gate: throttled.gate,
      shared: (node) => throttled.throttle.shared(node),
      lock,
      observer: live ? fanOut([telemetry.observer, live.observer], logger) : telemetry.observer,
      signal,
    });
    outcome.summary = { ...summary, preflight };
    if (layoutBefore !== undefined && (await target.layout?.()) !== layoutBefore) {
      // Keys that moved between masters mid-run may have escaped every master's SCAN.
      logger.log(
        "warn",
        "cluster_layout_changed",
        "the cluster's slot layout changed during the run (reshard or failover): keys that " +
          "moved between masters may have escaped this scan; run again (a rerun copies only " +
          "what is missing)",
      );
      outcome.summary = { ...outcome.summary, completed: false };
    }
    if (lockLost.signal.aborted) throw lockLost.signal.reason;
    if (stop.signal.aborted && !io.signal.aborted) return ExitCode.stopped;
    return outcome.summary.errors > 0 ? ExitCode.failed : ExitCode.ok;
  } finally {
    await live?.finish();
    await throttled.close();
    await lock?.release();
  }
}

/** Takes the run lock of every node of the scope; a lost lock aborts `lockLost` (the run stops). */
async function takeLocks(
  client: Redis,
  nodeIds: string[],
  options: RunOptions,
  ctx: { logger: Logger; lockLost: AbortController; signal: AbortSignal },
): Promise<LockSet> {
  const { logger, lockLost } = ctx;
  const keys = nodeIds.map((nodeId) => lockKey(options.progressKey, nodeId));
  const set = await acquireLocks(client, keys, {
    fence: options.progressKey,
    waitMs: options.waitLockSeconds * 1000,
    onWait: (message) => logger.log("warn", "lock_wait", message),
    signal: ctx.signal,
    onLost: (reason) => {
      logger.log("error", "lock_lost", `stopping: ${reason}`);
      lockLost.abort(new SafetyRefusal(`lost a run lock of ${options.progressKey}: ${reason}`));
    },
  });
  const { holder } = set.locks[0]!;
  logger.log(
    "info",
    "lock_acquired",
    `holding ${keys.join(", ")} as ${holder.host} pid ${holder.pid}`,
  );
  return set;
}

/** Says which masters a sharded run took (nothing for a run over the whole deployment). */
function logShard(scope: ShardScope, options: RunOptions, logger: Logger): void {
  if (options.shard.count === 1) return;
  const { target, nodeIds } = scope;
  const names = target.masters().map((node, i) => `${target.nodeName(node)} (${nodeIds[i]})`);
  logger.log(
    "info",
    "shard",
    `shard ${shardLabel(options.shard)}: ${names.length} of ${scope.allMasters} masters` +
      (names.length > 0 ? `: ${names.join(", ")}` : ""),
    { shard: shardLabel(options.shard), masters: names.length },
  );
}

/** A shard with no master (more runners than masters): nothing to do, exit 0. */
function idleShard(options: RunOptions, logger: Logger): Summary {
  logger.log(
    "info",
    "shard_empty",
    `shard ${shardLabel(options.shard)} has no master (more runners than masters): nothing to do`,
  );
  return {
    mode: options.mode,
    ...emptyCounters(),
    duration_seconds: 0,
    completed: true,
    cursor: "0",
  };
}

/** The engine with its collaborators; a partial summary is kept in `outcome` when it fails. */
async function runEngine(
  target: RedisTarget,
  options: RunOptions,
  ctx: {
    logger: Logger;
    outcome: Outcome;
    gate: Gate;
    /** Whether another client may wait behind a master's calls (control/pace.ts). */
    shared: (node: string) => boolean;
    lock?: LockSet;
    observer: RunObserver;
    signal: AbortSignal;
  },
): Promise<Summary> {
  // `--max-latency` by construction: each call's Redis time and the calls in flight per master.
  const budget = latencyBudget(options.maxLatencyMs, options.maxCallMs);
  const maxCallMs = budget?.maxCallMs ?? options.maxCallMs;
  const cluster = target.kind === "cluster";
  // Every checkpoint and totals write is fenced by the run's locks (in the store's own slot).
  const checkpoints = new CheckpointStore(target.client as Redis, options.progressKey, {
    cluster,
    locks: ctx.lock?.locks,
  });
  const strategy = strategyFor(target, options.keys, {
    retryBudgetMs: options.maxOutage * 1000,
    maxCallMs,
    callClock: options.callClock,
    progressKey: options.progressKey,
    fence: ctx.lock?.fence,
    // Standalone and Sentinel: the lock is on the server the copy script runs on.
    lock: cluster ? undefined : ctx.lock?.locks[0],
    callRecord: cluster || options.mode !== "execute" ? undefined : checkpoints.keys("").calls,
    leftIntents: options.mode === "execute" ? "complete" : "report",
    logger: ctx.logger,
  });
  // Cluster copies an earlier run left unverified, completed before this run's first copy.
  const withIntents = (summary: Summary): Summary => {
    const completed = strategy.intentsCompleted;
    return completed === undefined ? summary : { ...summary, intents_completed: completed };
  };
  try {
    const summary = await runBackfill(
      {
        ...options,
        maxCallMs,
        // With `--max-latency 0` the operator asked for raw speed: pipeline deep.
        callWindow: budget ? "round-trip" : "deep",
        maxCallsInFlight: budget?.maxCallsInFlight,
        shared: ctx.shared,
      },
      {
        target,
        strategy,
        nodeId: nodeIdFor(target),
        checkpoints,
        gate: ctx.gate,
        observer: ctx.observer,
        logger: ctx.logger,
        signal: ctx.signal,
      },
    );
    return withIntents(summary);
  } catch (error) {
    // A run that failed part-way still reports what it did before the error.
    const partial = (error as { summary?: Summary }).summary;
    if (partial && error instanceof BackfillError) ctx.outcome.summary = withIntents(partial);
    throw error;
  }
}
