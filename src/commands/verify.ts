/**
 * `backfill verify` (sampled, read-only) and `backfill verify --full` (writes only
 * `<P>:verify:lock` and `<P>:verify:state`): telemetry and the `--report` file before Redis is
 * touched, then connect, verify, print the report.
 *
 * @module
 */
import type { VerifyFlags } from "../cli/args.ts";
import { ExitCode, RedisUnavailableError, SafetyRefusal } from "../errors.ts";
import { RunLock } from "../safety/lock.ts";
import { latencyBudget } from "../control/call_window.ts";
import { connectRedis } from "../redis/connect.ts";
import type { RedisTarget } from "../redis/target.ts";
import type { Logger } from "../run_events.ts";
import { errorCode, isOutage } from "../redis/errors.ts";
import { createLogger } from "../telemetry/logger.ts";
import {
  startVerifyTelemetry,
  type VerifyOutcome,
  type VerifyTelemetry,
} from "../telemetry/verify_metrics.ts";
import { startVerifyPace } from "../run/throttled_gate.ts";
import { renderVerifyText } from "../verify/report.ts";
import { runVerify } from "../verify/run.ts";
import { VerifyCheckpoint } from "../verify/full/checkpoint.ts";
import { runFullVerify } from "../verify/full/run.ts";
import { fullJson, type FullReport, renderFullText, ReportFile } from "../verify/full/report.ts";
import { startMetrics } from "./metrics_port.ts";
import type { CommandIo } from "./io.ts";

/** A finished verify: its printed report, and what the metrics show. */
interface Verified {
  json: unknown;
  text: string;
  outcome: VerifyOutcome;
}

interface VerifyContext {
  logger: Logger;
  signal: AbortSignal;
  /** Starts the telemetry's clock and first push. */
  started: (method: "sample" | "full") => void;
  report?: ReportFile;
}

/**
 * Runs verify (or `--full`); returns 0 when parity is reached and there are no orphans, else 1.
 *
 * @throws {UsageError} when `--report` cannot be written or `--metrics-port` cannot be bound.
 * @throws {RedisUnavailableError} when Redis is lost during the verify (exit 3).
 */
export async function verifyCommand(options: VerifyFlags, io: CommandIo): Promise<number> {
  const logger = createLogger({
    format: options.logFormat,
    quiet: options.quiet,
    write: io.stderr,
  });
  // An unwritable report path is a usage error, found before anything is read.
  const report = options.full && options.report !== undefined
    ? await ReportFile.open(options.report)
    : undefined;
  let telemetry: VerifyTelemetry | undefined;
  let outcome: VerifyOutcome | undefined;
  try {
    telemetry = startMetrics(options, (outlet) =>
      startVerifyTelemetry({
        enabled: io.telemetryEnabled,
        ...outlet,
        progressKey: options.progressKey,
        logger,
        signal: io.signal,
      }));
    const started = telemetry.start;
    const target = await connectRedis(options.redisUrls, { tls: options.tls, signal: io.signal });
    try {
      const access = options.full
        ? `read-only except ${options.progressKey}:verify:{lock,state}`
        : "read-only";
      logger.log(
        "info",
        "connected",
        `connected to ${target.redacted} (${target.kind}); ${access}`,
      );
      const ctx: VerifyContext = { logger, signal: io.signal, started, report };
      const verified = options.full
        ? await fullVerify(target, options, ctx)
        : await sampledVerify(target, options, ctx);
      outcome = verified.outcome;
      io.stdout((options.json ? JSON.stringify(verified.json) : verified.text) + "\n");
      return verified.outcome.passed ? ExitCode.ok : ExitCode.failed;
    } finally {
      await target.close();
    }
  } finally {
    await telemetry?.close(outcome);
    report?.close();
  }
}

async function sampledVerify(
  target: RedisTarget,
  options: VerifyFlags,
  ctx: VerifyContext,
): Promise<Verified> {
  ctx.started("sample");
  const report = await runVerify(target, { ...bothVerifies(options), sample: options.sample }, ctx)
    .catch((error: unknown) => {
      throw lostRedis(target, error, "verify");
    });
  return {
    json: report,
    text: renderVerifyText(report),
    outcome: outcomeOf(report, {
      checked: report.sampled,
      // `fields`: the sampled report's one kind for any field difference.
      mismatched: { missing: report.missing, ...report.mismatch_reasons },
      invalid: report.invalid,
      orphans: report.orphans,
    }),
  };
}

/**
 * The full verify under `<P>:verify:lock`. A lost lock ends it with the lock's refusal; a lost
 * Redis says a rerun resumes from the checkpoint.
 */
async function fullVerify(
  target: RedisTarget,
  options: VerifyFlags,
  ctx: VerifyContext,
): Promise<Verified> {
  const { logger } = ctx;
  const checkpoint = new VerifyCheckpoint(target.client, options.progressKey);
  const lockLost = new AbortController();
  // Like a run's: a crashed verify's lock expires within 30 s, so an immediate restart waits.
  const lock = await RunLock.acquire(target.client, checkpoint.lockKey, {
    waitMs: options.waitLockSeconds * 1000,
    onWait: (message) => logger.log("warn", "lock_wait", message),
    signal: ctx.signal,
    onLost: (reason) =>
      lockLost.abort(new SafetyRefusal(`lost the verify lock ${checkpoint.lockKey}: ${reason}`)),
  });
  let report: FullReport;
  try {
    ctx.started("full");
    // `--max-latency` as for a run.
    const budget = latencyBudget(options.maxLatencyMs, options.maxCallMs);
    const pace = await startVerifyPace(target, {
      rps: options.rps,
      maxLatencyMs: options.maxLatencyMs,
      criticalLoadPct: options.criticalLoadPct,
      logger,
      signal: ctx.signal,
    });
    try {
      report = await runFullVerify({
        ...bothVerifies(options),
        orphans: options.orphans,
        resetProgress: options.resetProgress,
        callBudgetUs: (budget?.maxCallMs ?? options.maxCallMs) * 1000,
        callClock: options.callClock,
        callsInFlight: budget?.maxCallsInFlight,
        shared: (node) => pace.shared(target.nodeName(node)),
      }, {
        target,
        checkpoint,
        limiter: pace.limiter,
        report: ctx.report,
        logger,
        signal: AbortSignal.any([ctx.signal, lockLost.signal]),
      });
    } catch (error: unknown) {
      if (lockLost.signal.aborted) throw lockLost.signal.reason;
      throw lostRedis(
        target,
        error,
        "verify --full",
        "; run it again to resume from its checkpoint",
      );
    } finally {
      await pace.close();
    }
  } finally {
    await lock.release();
  }
  const { counts } = report;
  return {
    json: fullJson(report),
    text: renderFullText(report),
    outcome: outcomeOf(report, {
      checked: counts.checked,
      mismatched: {
        missing: counts.missing,
        field_missing: counts.field_missing,
        field_differs: counts.field_differs,
        ttl: counts.ttl,
        type: counts.type,
      },
      invalid: counts.invalid,
      orphans: counts.orphans,
    }),
  };
}

function bothVerifies(options: VerifyFlags) {
  return {
    keys: options.keys,
    workspace: options.workspace,
    ttlToleranceSeconds: options.ttlTolerance,
    recheck: options.recheck,
    recheckDelayMs: options.recheckDelayMs,
    rps: options.rps,
    minParity: options.minParity,
  };
}

/** What the metrics show of a finished verify. */
function outcomeOf(
  report: { parity: number; duration_seconds: number; passed: boolean },
  counts: Pick<VerifyOutcome, "checked" | "mismatched" | "invalid" | "orphans">,
): VerifyOutcome {
  return {
    ...counts,
    parity: report.parity,
    durationSeconds: report.duration_seconds,
    passed: report.passed,
  };
}

/** A lost Redis as exit 3 (an outage); any other error as it is. */
function lostRedis(target: RedisTarget, error: unknown, what: string, hint = ""): unknown {
  if (!isOutage(error)) return error;
  return new RedisUnavailableError(
    `lost Redis at ${target.redacted} during ${what} (${errorCode(error)})${hint}`,
  );
}
