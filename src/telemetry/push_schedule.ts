/**
 * When a run pushes: once at its start, every `--push-interval` seconds while it runs, and once at
 * its end, one push at a time and in order. A run that never started (refused, Redis unreachable)
 * pushes nothing, so it cannot replace the last real run's group; a run killed with SIGKILL leaves
 * its last periodic push, which `push_time_seconds` shows getting old.
 *
 * @module
 */
import type { Registry } from "prom-client";
import type { Logger, RunMode } from "../run_events.ts";
import type { TimerClock, TimerHandle } from "../async/clock.ts";
import { pushMetrics } from "./pushgateway.ts";

/** Options of {@linkcode PushSchedule}. */
export interface PushScheduleOptions {
  /** Pushgateway base URL (may hold `user:password@`, never logged). */
  url: string;
  registry: Registry;
  /** The `instance` grouping label (the progress key). */
  instance: string;
  /** Seconds between pushes while the run goes (`0`: only at start and end). */
  intervalSeconds: number;
  /** Timeout of one push in milliseconds (default 10000). */
  timeoutMs?: number;
  logger: Logger;
  clock: TimerClock;
}

/** The pushes of one run. */
export class PushSchedule {
  readonly #options: PushScheduleOptions;
  #mode?: RunMode | "verify";
  #timer?: TimerHandle;
  #queue: Promise<void> = Promise.resolve();
  #lastOk = true;
  #finished = false;

  /** A schedule that has pushed nothing yet. */
  constructor(options: PushScheduleOptions) {
    this.#options = options;
  }

  /** The run (or a verify: `mode` "verify") started: push now and then every interval. */
  start(mode: RunMode | "verify"): void {
    if (this.#mode !== undefined || this.#finished) return;
    this.#mode = mode;
    this.#enqueue(false);
    this.#arm();
  }

  /**
   * The run ended: stop the timer, wait for a push in flight, push the final state. Pushes nothing
   * when the run never started. Never rejects; a second call only waits.
   */
  async finish(): Promise<void> {
    if (!this.#finished) {
      this.#finished = true;
      if (this.#timer !== undefined) this.#options.clock.clearTimeout(this.#timer);
      this.#timer = undefined;
      if (this.#mode !== undefined) this.#enqueue(true);
    }
    await this.#queue;
  }

  #arm(): void {
    const { intervalSeconds, clock } = this.#options;
    if (!(intervalSeconds > 0) || this.#finished) return;
    this.#timer = clock.setTimeout(() => {
      this.#timer = undefined;
      if (this.#finished) return;
      this.#enqueue(false);
      this.#arm();
    }, intervalSeconds * 1000);
  }

  #enqueue(final: boolean): void {
    const { url, registry, instance, timeoutMs } = this.#options;
    const mode = this.#mode;
    this.#queue = this.#queue.then(async () => {
      const ok = await pushMetrics({
        url,
        registry,
        instance,
        mode,
        timeoutMs,
        logger: this.#pushLogger(final),
      });
      this.#lastOk = ok;
    });
  }

  /**
   * The final push logs as usual; the periodic ones log a success at debug and a failure only when
   * the previous push worked, so a Pushgateway down for an hour is one warning, not 120.
   */
  #pushLogger(final: boolean): Logger {
    const logger = this.#options.logger;
    if (final) return logger;
    return {
      log: (level, event, message, fields) => {
        if (event === "push_done") logger.log("debug", event, message, fields);
        else if (this.#lastOk) logger.log(level, event, message, fields);
      },
    };
  }
}
