/**
 * One observer that forwards every run event to several. Telemetry must never break a run, so an
 * observer that throws is reported and the others still get the event.
 *
 * @module
 */
import type { BatchReport, Logger, RunObserver, RunStart, Summary } from "../run_events.ts";

/**
 * Forwards events to `observers` in order. `onEnd` runs them one after the other and awaits each,
 * so order expresses dependencies (e.g. final metrics before the push that sends them).
 *
 * @example
 * ```ts
 * import { fanOut } from "./fan_out.ts";
 * const seen: number[] = [];
 * const observer = fanOut([{ onLimiterWait: (s) => seen.push(s) }, {}]);
 * observer.onLimiterWait?.(0.5);
 * ```
 */
export function fanOut(observers: readonly RunObserver[], logger?: Logger): Required<RunObserver> {
  const guard = (event: string, call: () => void) => {
    try {
      call();
    } catch (error: unknown) {
      report(logger, event, error);
    }
  };
  return {
    onStart(start: RunStart) {
      for (const o of observers) guard("onStart", () => o.onStart?.(start));
    },
    onBatch(batch: BatchReport) {
      for (const o of observers) guard("onBatch", () => o.onBatch?.(batch));
    },
    onLimiterWait(seconds: number) {
      for (const o of observers) guard("onLimiterWait", () => o.onLimiterWait?.(seconds));
    },
    async onEnd(summary: Summary) {
      for (const o of observers) {
        try {
          await o.onEnd?.(summary);
        } catch (error: unknown) {
          report(logger, "onEnd", error);
        }
      }
    },
  };
}

function report(logger: Logger | undefined, event: string, error: unknown): void {
  logger?.log("warn", "telemetry_failed", `telemetry observer failed in ${event}`, {
    error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
  });
}
