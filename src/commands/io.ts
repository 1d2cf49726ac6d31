/**
 * What a subcommand needs from the process, injected by main.ts so commands never reach for
 * globals (and never call Deno.exit); and the port it may bind for metrics.
 *
 * @module
 */
import { UsageError } from "../errors.ts";
import { MetricsServerError } from "../telemetry/server.ts";

/** Process facilities for a command. */
export interface CommandIo {
  /** Writes to stdout (the summary / report only). */
  stdout: (text: string) => void;
  /** Writes to stderr (progress and logs). */
  stderr: (text: string) => void;
  stderrIsTty: boolean;
  columns: () => number;
  color: boolean;
  /** From TELEMETRY_ENABLED. */
  telemetryEnabled: boolean;
  version: string;
  /** Aborted by SIGINT/SIGTERM. */
  signal: AbortSignal;
}

/**
 * Runs `start` (which binds `port`). A port that cannot be bound is bad input (exit 2), found before Redis is touched: the
 * one mapping from the server's typed error to a usage error, for every command that serves
 * metrics.
 */
export function bindingMetricsPort<T>(port: number | undefined, start: () => T): T {
  try {
    return start();
  } catch (error) {
    if (error instanceof MetricsServerError) {
      throw new UsageError(`--metrics-port ${port} cannot be used: ${error.message}`);
    }
    throw error;
  }
}
