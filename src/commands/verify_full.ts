/**
 * `backfill verify --full`: open the report file (before Redis is touched), connect, take the
 * verify lock `<P>:verify:lock`, run the full verify, print the summary. Writes only
 * `<P>:verify:lock` and `<P>:verify:state`.
 *
 * @module
 */
import type { VerifyFlags } from "../cli/options.ts";
import { ExitCode, RedisUnavailableError, SafetyRefusal } from "../errors.ts";
import { RunLock } from "../safety/lock.ts";
import { latencyBudget } from "../control/call_window.ts";
import { connectRedis } from "../redis/connect.ts";
import type { RedisTarget } from "../redis/target.ts";
import type { Logger } from "../run_events.ts";
import { errorCode, isOutage } from "../redis/errors.ts";
import { createLogger } from "../telemetry/logger.ts";
import { VerifyCheckpoint } from "../verify/full/checkpoint.ts";
import { ReportFile } from "../verify/full/report.ts";
import { runFullVerify } from "../verify/full/run.ts";
import { fullJson, type FullReport, renderFullText } from "../verify/full/report.ts";
import type { VerifyOutcome } from "../telemetry/verify_metrics.ts";
import type { VerifyTelemetry } from "../telemetry/verify_telemetry.ts";
import { startVerifyPace } from "../run/throttled_gate.ts";
import type { CommandIo } from "./io.ts";
import { fullOutcome, openVerifyTelemetry } from "./verify_telemetry.ts";

/** Runs a full verify; returns 0 when ready (parity reached, no orphans), else 1. */
export async function fullVerifyCommand(options: VerifyFlags, io: CommandIo): Promise<number> {
  const logger = createLogger({
    format: options.logFormat,
    quiet: options.quiet,
    write: io.stderr,
  });
  // An unwritable report path is a usage error, found before anything is read.
  const report = options.report === undefined ? undefined : await ReportFile.open(options.report);
  let telemetry: VerifyTelemetry | undefined;
  let outcome: VerifyOutcome | undefined;
  try {
    telemetry = openVerifyTelemetry(options, io, logger);
    const target = await connectRedis(options.redisUrls, { tls: options.tls, signal: io.signal });
    try {
      logger.log(
        "info",
        "connected",
        `connected to ${target.redacted} (${target.kind}); ` +
          `read-only except ${options.progressKey}:verify:{lock,state}`,
      );
      const checkpoint = new VerifyCheckpoint(target.client, options.progressKey);
      const lockLost = new AbortController();
      const lock = await takeVerifyLock(target, checkpoint, options, {
        logger,
        lockLost,
        signal: io.signal,
      });
      try {
        telemetry.start("full");
        const result = await verifyOn(target, options, {
          checkpoint,
          report,
          logger,
          lockLost,
          signal: io.signal,
        });
        outcome = fullOutcome(result);
        io.stdout(
          options.json ? JSON.stringify(fullJson(result)) + "\n" : renderFullText(result) + "\n",
        );
        return result.passed ? ExitCode.ok : ExitCode.failed;
      } finally {
        await lock.release();
      }
    } finally {
      await target.close();
    }
  } finally {
    await telemetry?.close(outcome);
    report?.close();
  }
}

/** Takes `<P>:verify:lock`; a lost lock aborts `lockLost` with the refusal the verify ends with. */
function takeVerifyLock(
  target: RedisTarget,
  checkpoint: VerifyCheckpoint,
  options: VerifyFlags,
  ctx: { logger: Logger; lockLost: AbortController; signal: AbortSignal },
): Promise<RunLock> {
  // Like a run: a crashed verify's lock expires within 30 s, so an immediate restart waits.
  return RunLock.acquire(target.client, checkpoint.lockKey, {
    waitMs: options.waitLockSeconds * 1000,
    onWait: (message) => ctx.logger.log("warn", "lock_wait", message),
    signal: ctx.signal,
    onLost: (reason) =>
      ctx.lockLost.abort(
        new SafetyRefusal(`lost the verify lock ${checkpoint.lockKey}: ${reason}`),
      ),
  });
}

/**
 * The full verify under the lock. A lost lock ends it with the lock's refusal, and a lost Redis
 * with a {@linkcode RedisUnavailableError} that says a rerun resumes from the checkpoint.
 */
async function verifyOn(
  target: RedisTarget,
  options: VerifyFlags,
  ctx: {
    checkpoint: VerifyCheckpoint;
    report?: ReportFile;
    logger: Logger;
    lockLost: AbortController;
    signal: AbortSignal;
  },
): Promise<FullReport> {
  const { lockLost } = ctx;
  // `--max-latency` as for a run: calls in flight per master × a call's Redis time, and the
  // critical-load yield (control/pace.ts).
  const budget = latencyBudget(options.maxLatencyMs, options.maxCallMs);
  const pace = await startVerifyPace(target, {
    rps: options.rps,
    maxLatencyMs: options.maxLatencyMs,
    criticalLoadPct: options.criticalLoadPct,
    logger: ctx.logger,
    signal: ctx.signal,
  });
  try {
    return await runFullVerify(
      {
        keys: options.keys,
        workspace: options.workspace,
        ttlToleranceSeconds: options.ttlTolerance,
        recheck: options.recheck,
        recheckDelayMs: options.recheckDelayMs,
        rps: options.rps,
        minParity: options.minParity,
        orphans: options.orphans,
        resetProgress: options.resetProgress,
        callBudgetUs: (budget?.maxCallMs ?? options.maxCallMs) * 1000,
        callClock: options.callClock,
        callsInFlight: budget?.maxCallsInFlight,
        shared: (node) => pace.shared(target.nodeName(node)),
      },
      {
        target,
        checkpoint: ctx.checkpoint,
        limiter: pace.limiter,
        report: ctx.report,
        logger: ctx.logger,
        signal: AbortSignal.any([ctx.signal, lockLost.signal]),
      },
    );
  } catch (error: unknown) {
    if (lockLost.signal.aborted) throw lockLost.signal.reason;
    if (isOutage(error)) {
      throw new RedisUnavailableError(
        `lost Redis at ${target.redacted} during verify --full (${errorCode(error)}); ` +
          "run it again to resume from its checkpoint",
      );
    }
    throw error;
  } finally {
    await pace.close();
  }
}
