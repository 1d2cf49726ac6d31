/**
 * Typed errors that carry the process exit code they map to. `main.ts` prints `error: <message>`
 * for these; anything else is a bug and gets a stack trace.
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
  readonly exitCode: number;
  constructor(message: string, exitCode: number, options?: ErrorOptions) {
    super(message, options);
    this.name = "BackfillError";
    this.exitCode = exitCode;
  }
}

/** Bad flags or values: nothing was written. Exit 2. */
export class UsageError extends BackfillError {
  constructor(message: string) {
    super(message, ExitCode.usage);
    this.name = "UsageError";
  }
}

/** Redis could not be reached, or was lost for longer than the run waits. Exit 3. */
export class RedisUnavailableError extends BackfillError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, ExitCode.redisUnavailable, options);
    this.name = "RedisUnavailableError";
  }
}

/** A safety check refused the run (lock held, memory headroom, foreign checkpoint). Exit 4. */
export class SafetyRefusal extends BackfillError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, ExitCode.refused, options);
    this.name = "SafetyRefusal";
  }
}
