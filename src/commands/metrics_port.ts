/**
 * The metrics flags of every command that serves metrics: a port that cannot be bound is bad
 * input (exit 2), found before Redis is touched.
 *
 * @module
 */
import type { MetricsFlags } from "../cli/args.ts";
import { UsageError } from "../errors.ts";
import { type MetricsOutlet, MetricsServerError } from "../telemetry/server.ts";

/** The metrics flags (a run's and a verify's) as the telemetry's export options. */
export function metricsExport(flags: MetricsFlags): MetricsOutlet {
  return {
    metricsPort: flags.metricsPort,
    metricsHost: flags.metricsHost,
    metricsLingerSeconds: flags.metricsLinger,
    pushgatewayUrl: flags.pushgateway,
    pushIntervalSeconds: flags.pushInterval,
  };
}

/** Runs `start` (which binds `port`); a port it cannot use becomes a {@linkcode UsageError}. */
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
