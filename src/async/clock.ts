/**
 * The one clock: time, sleeps and one-shot timers, injectable so pacing, progress and timestamps
 * are tested with a fake clock. A user asks only for the part it needs ({@linkcode PacingClock},
 * {@linkcode TimerClock}), so a fake implements just that part.
 *
 * @module
 */
import { delay } from "./delay.ts";

/** Opaque handle of a timer started by {@linkcode Clock.setTimeout}. */
export type TimerHandle = unknown;

/** Time and timers. */
export interface Clock {
  /** Milliseconds: monotonic for {@linkcode monotonicClock}, since the epoch for {@linkcode wallClock}. */
  now(): number;
  /** Resolves after `ms`; rejects with `signal.reason` when aborted. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  /** A no-op for a timer that already fired or was cancelled. */
  clearTimeout(handle: TimerHandle): void;
}

/** What pacing needs (the rate limiter). */
export type PacingClock = Pick<Clock, "now" | "sleep">;

/** What telemetry needs (progress, pushes, timestamps). */
export type TimerClock = Pick<Clock, "now" | "setTimeout" | "clearTimeout">;

function timers(): Pick<Clock, "sleep" | "setTimeout" | "clearTimeout"> {
  return {
    sleep: (ms, signal) => delay(ms, { signal }),
    setTimeout(fn, ms) {
      const id = setTimeout(fn, ms);
      // A pending redraw or push must never keep the process alive after the run is over.
      Deno.unrefTimer(id);
      return id;
    },
    clearTimeout(handle) {
      clearTimeout(handle as number);
    },
  };
}

/** `performance.now()`: for intervals and pacing. */
export const monotonicClock: Clock = { now: () => performance.now(), ...timers() };

/** `Date.now()`: for timestamps (epoch milliseconds). */
export const wallClock: Clock = { now: () => Date.now(), ...timers() };
