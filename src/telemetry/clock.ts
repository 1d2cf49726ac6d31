/**
 * Time as telemetry sees it: a wall clock plus one-shot timers, injectable so progress throttling
 * and timestamps are tested without sleeping.
 *
 * @module
 */

/** Opaque handle of a timer started by {@linkcode Clock.setTimeout}. */
export type TimerHandle = unknown;

/** A wall clock in milliseconds since the epoch, with one-shot timers. */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
  /** Calls `fn` once after `ms` milliseconds. */
  setTimeout(fn: () => void, ms: number): TimerHandle;
  /** Cancels a timer; a no-op for a timer that already fired or was cancelled. */
  clearTimeout(handle: TimerHandle): void;
}

/**
 * The real clock. Its timers are unref'd: a progress redraw that is still pending must never keep
 * the process alive after the run is over.
 */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout(fn, ms) {
    const id = setTimeout(fn, ms);
    Deno.unrefTimer(id);
    return id;
  },
  clearTimeout(handle) {
    clearTimeout(handle as number);
  },
};
