/**
 * The metrics flags of every command that serves metrics: a port that cannot be bound is bad
 * input (exit 2), found before Redis is touched.
 *
 * @module
 */
import type { MetricsFlags } from "../cli/args.ts";
import { UsageError } from "../errors.ts";
import { type MetricsOutlet, MetricsServerError } from "../telemetry/server.ts";

/**
 * Runs `start` (which binds the port) with the metrics flags (a run's or a verify's) as the
 * telemetry's export options; a port it cannot use becomes a {@linkcode UsageError}.
 */
export function startMetrics<T>(flags: MetricsFlags, start: (outlet: MetricsOutlet) => T): T {
  try {
    return start({
      metricsPort: flags.metricsPort,
      metricsHost: flags.metricsHost,
      metricsLingerSeconds: flags.metricsLinger,
      pushgatewayUrl: flags.pushgateway,
      pushIntervalSeconds: flags.pushInterval,
    });
  } catch (error) {
    if (error instanceof MetricsServerError) {
      throw new UsageError(`--metrics-port ${flags.metricsPort} cannot be used: ${error.message}`);
    }
    throw error;
  }
}
