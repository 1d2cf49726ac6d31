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
import { SlidingWindowLimiter } from "../control/rate_limit.ts";
import { connectRedis } from "../redis/connect.ts";
import { errorCode, isOutage } from "../redis/errors.ts";
import { createLogger } from "../telemetry/logger.ts";
import { VerifyCheckpoint } from "../verify/full/checkpoint.ts";
import { ReportFile } from "../verify/full/report_file.ts";
import { runFullVerify } from "../verify/full/run.ts";
import { fullJson, renderFullText } from "../verify/full/summary.ts";
import type { VerifyOutcome } from "../telemetry/verify_metrics.ts";
import type { VerifyTelemetry } from "../telemetry/verify_telemetry.ts";
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
      // Like a run: a crashed verify's lock expires within 30 s, so an immediate restart waits.
      const lock = await RunLock.acquire(target.client, checkpoint.lockKey, {
        waitMs: options.waitLockSeconds * 1000,
        onWait: (message) => logger.log("warn", "lock_wait", message),
        signal: io.signal,
        onLost: (reason) =>
          lockLost.abort(
            new SafetyRefusal(`lost the verify lock ${checkpoint.lockKey}: ${reason}`),
          ),
      });
      try {
        telemetry.start("full");
        const result = await runFullVerify(
          {
            rule: options.rule,
            workspace: options.workspace,
            ttlToleranceSeconds: options.ttlTolerance,
            recheck: options.recheck,
            recheckDelayMs: options.recheckDelayMs,
            rps: options.rps,
            minParity: options.minParity,
            orphans: options.orphans,
            resetProgress: options.resetProgress,
          },
          {
            target,
            checkpoint,
            limiter: new SlidingWindowLimiter(options.rps),
            report,
            logger,
            signal: AbortSignal.any([io.signal, lockLost.signal]),
          },
        ).catch((error: unknown) => {
          if (lockLost.signal.aborted) throw lockLost.signal.reason;
          if (isOutage(error)) {
            throw new RedisUnavailableError(
              `lost Redis at ${target.redacted} during verify --full (${errorCode(error)}); ` +
                "run it again to resume from its checkpoint",
            );
          }
          throw error;
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
