/**
 * `backfill verify`: connect, sample, compare, report. Read-only.
 *
 * @module
 */
import type { VerifyFlags } from "../cli/options.ts";
import { ExitCode, RedisUnavailableError } from "../errors.ts";
import { connectRedis } from "../redis/connect.ts";
import { errorCode, isOutage } from "../redis/errors.ts";
import { createLogger } from "../telemetry/logger.ts";
import { renderVerifyText, verifyJson } from "../verify/report.ts";
import { runVerify } from "../verify/run.ts";
import type { RedisTarget } from "../redis/target.ts";
import type { Logger } from "../run_events.ts";
import type { VerifyOutcome } from "../telemetry/verify_metrics.ts";
import type { VerifyReport } from "../verify/report.ts";
import { fullVerifyCommand } from "./verify_full.ts";
import { openVerifyTelemetry, sampleOutcome } from "./verify_telemetry.ts";
import type { CommandIo } from "./io.ts";

/** Runs verify; returns 0 when parity is reached and there are no orphans, else 1. */
export async function verifyCommand(options: VerifyFlags, io: CommandIo): Promise<number> {
  if (options.full) return await fullVerifyCommand(options, io);
  const logger = createLogger({
    format: options.logFormat,
    quiet: options.quiet,
    write: io.stderr,
  });
  const telemetry = openVerifyTelemetry(options, io, logger);
  let outcome: VerifyOutcome | undefined;
  try {
    const target = await connectRedis(options.redisUrls, { tls: options.tls, signal: io.signal });
    try {
      logger.log(
        "info",
        "connected",
        `connected to ${target.redacted} (${target.kind}); read-only`,
      );
      telemetry.start("sample");
      const report = await sampledVerify(target, options, { logger, signal: io.signal });
      outcome = sampleOutcome(report);
      io.stdout(
        options.json ? JSON.stringify(verifyJson(report)) + "\n" : renderVerifyText(report) + "\n",
      );
      return report.passed ? ExitCode.ok : ExitCode.failed;
    } finally {
      await target.close();
    }
  } finally {
    await telemetry.close(outcome);
  }
}

/** The sampled verify on a connected target; a lost Redis is exit 3. */
async function sampledVerify(
  target: RedisTarget,
  options: VerifyFlags,
  ctx: { logger: Logger; signal: AbortSignal },
): Promise<VerifyReport> {
  return await runVerify(
    target,
    {
      sample: options.sample,
      workspace: options.workspace,
      keys: options.keys,
      ttlToleranceSeconds: options.ttlTolerance,
      recheck: options.recheck,
      recheckDelayMs: options.recheckDelayMs,
      rps: options.rps,
      minParity: options.minParity,
    },
    ctx,
  ).catch((error: unknown) => {
    if (isOutage(error)) {
      throw new RedisUnavailableError(
        `lost Redis at ${target.redacted} during verify (${errorCode(error)})`,
      );
    }
    throw error;
  });
}
