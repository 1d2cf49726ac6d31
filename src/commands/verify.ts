/**
 * `backfill verify`: connect, sample, compare, report. Read-only.
 *
 * @module
 */
import type { VerifyFlags } from "../cli/args.ts";
import { ExitCode, RedisUnavailableError } from "../errors.ts";
import { connectRedis } from "../redis/connect.ts";
import { errorCode, isOutage } from "../redis/errors.ts";
import { createLogger } from "../telemetry/logger.ts";
import { renderVerifyText, verifyJson } from "../verify/report.ts";
import { runVerify } from "../verify/run.ts";
import { fullVerifyCommand } from "./verify_full.ts";
import type { CommandIo } from "./io.ts";

/** Runs verify; returns 0 when parity is reached and there are no orphans, else 1. */
export async function verifyCommand(options: VerifyFlags, io: CommandIo): Promise<number> {
  if (options.full) return await fullVerifyCommand(options, io);
  const logger = createLogger({
    format: options.logFormat,
    quiet: options.quiet,
    write: io.stderr,
  });
  const target = await connectRedis(options.redisUrls, { tls: options.tls, signal: io.signal });
  try {
    logger.log("info", "connected", `connected to ${target.redacted} (${target.kind}); read-only`);
    const report = await runVerify(
      { nodes: target.masters(), reader: target.client },
      {
        sample: options.sample,
        workspace: options.workspace,
        rule: options.rule,
        ttlToleranceSeconds: options.ttlTolerance,
        recheck: options.recheck,
        recheckDelayMs: options.recheckDelayMs,
        rps: options.rps,
        minParity: options.minParity,
      },
      { logger, signal: io.signal },
    ).catch((error: unknown) => {
      if (isOutage(error)) {
        throw new RedisUnavailableError(
          `lost Redis at ${target.redacted} during verify (${errorCode(error)})`,
        );
      }
      throw error;
    });
    io.stdout(
      options.json ? JSON.stringify(verifyJson(report)) + "\n" : renderVerifyText(report) + "\n",
    );
    return report.passed ? ExitCode.ok : ExitCode.failed;
  } finally {
    await target.close();
  }
}
