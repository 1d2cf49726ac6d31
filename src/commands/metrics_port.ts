/**
 * A metrics port that cannot be bound is bad input (exit 2), found before Redis is touched: the
 * one mapping from the server's typed error to a usage error, for every command that serves
 * metrics.
 *
 * @module
 */
import { UsageError } from "../errors.ts";
import { MetricsServerError } from "../telemetry/server.ts";

/** Runs `start` (which binds `port`); a port that cannot be used becomes a {@linkcode UsageError}. */
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
