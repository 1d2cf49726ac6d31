/**
 * Errors that carry their exit code: main.ts prints `error: <message>` for these; anything else is
 * a bug and gets a stack trace.
 *
 * @module
 */

/** Exit codes of the CLI (README.md, "Exit codes"). */
export const ExitCode = {
  ok: 0,
  /** Finished with per-key errors, or verify below --min-parity. */
  failed: 1,
  usage: 2,
  redisUnavailable: 3,
  refused: 4,
  /** Stopped by `backfill stop` (checkpoint saved, summary printed); a supervisor should not restart. */
  stopped: 5,
  sigint: 130,
  sigterm: 143,
} as const;

/** Base class: an expected failure with a one-line message and an exit code. */
export class BackfillError extends Error {
  override name = "BackfillError";
  constructor(message: string, readonly exitCode: number, options?: ErrorOptions) {
    super(message, options);
  }
}

/** Bad flags or values: nothing was written. Exit 2. */
export class UsageError extends BackfillError {
  override name = "UsageError";
  constructor(message: string) {
    super(message, ExitCode.usage);
  }
}

/** Redis could not be reached, or was lost for longer than the run waits. Exit 3. */
export class RedisUnavailableError extends BackfillError {
  override name = "RedisUnavailableError";
  constructor(message: string, options?: ErrorOptions) {
    super(message, ExitCode.redisUnavailable, options);
  }
}

/** A safety check refused the run (lock held, memory headroom, foreign checkpoint). Exit 4. */
export class SafetyRefusal extends BackfillError {
  override name = "SafetyRefusal";
  constructor(message: string, options?: ErrorOptions) {
    super(message, ExitCode.refused, options);
  }
}
