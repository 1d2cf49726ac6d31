/**
 * One observer that forwards every run event to several. Telemetry must never break a run, so an
 * observer that throws is reported and the others still get the event.
 *
 * @module
 */
import {
  type Logger,
  type RunObserver,
  type Summary,
  SYNC_EVENTS,
  type SyncEvent,
} from "../run_events.ts";

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
  const forward = (event: SyncEvent) => (argument: unknown) => {
    for (const o of observers) {
      try {
        (o[event] as ((argument: unknown) => void) | undefined)?.call(o, argument);
      } catch (error: unknown) {
        report(logger, event, error);
      }
    }
  };
  const combined = Object.fromEntries(SYNC_EVENTS.map((event) => [event, forward(event)]));
  return {
    ...combined as Omit<Required<RunObserver>, "onEnd">,
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
