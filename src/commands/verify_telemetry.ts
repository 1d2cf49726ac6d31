/**
 * The metrics of `backfill verify` and `verify --full` (see telemetry/verify_metrics.ts): set up
 * from the flags before Redis is touched, and fed from either verify's report.
 *
 * @module
 */
import type { VerifyFlags } from "../cli/options.ts";
import type { Logger } from "../run_events.ts";
import type { VerifyOutcome } from "../telemetry/verify_metrics.ts";
import { startVerifyTelemetry, type VerifyTelemetry } from "../telemetry/verify_telemetry.ts";
import type { FullReport } from "../verify/full/report.ts";
import type { VerifyReport } from "../verify/report.ts";
import type { CommandIo } from "./io.ts";
import { bindingMetricsPort } from "./metrics_port.ts";

/**
 * The verify's telemetry, before Redis is touched.
 *
 * @throws {UsageError} when `--metrics-port` cannot be bound.
 */
export function openVerifyTelemetry(
  options: VerifyFlags,
  io: CommandIo,
  logger: Logger,
): VerifyTelemetry {
  return bindingMetricsPort(options.metricsPort, () =>
    startVerifyTelemetry({
      enabled: io.telemetryEnabled,
      metricsPort: options.metricsPort,
      metricsHost: options.metricsHost,
      metricsLingerSeconds: options.metricsLinger,
      pushgatewayUrl: options.pushgateway,
      pushIntervalSeconds: options.pushInterval,
      progressKey: options.progressKey,
      logger,
      signal: io.signal,
    }));
}

/** A sampled verify's report as the metrics show it (`fields`: any field difference). */
export function sampleOutcome(report: VerifyReport): VerifyOutcome {
  const reasons = report.mismatch_reasons;
  return {
    checked: report.sampled,
    mismatched: {
      missing: report.missing,
      fields: reasons.fields,
      ttl: reasons.ttl,
      type: reasons.type,
    },
    invalid: report.invalid,
    orphans: report.orphans,
    parity: report.parity,
    durationSeconds: report.duration_seconds,
    completed: true,
    passed: report.passed,
  };
}

/** A full verify's report as the metrics show it. */
export function fullOutcome(report: FullReport): VerifyOutcome {
  const { counts } = report;
  return {
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
    parity: report.parity,
    durationSeconds: report.duration_seconds,
    completed: true,
    passed: report.passed,
  };
}
