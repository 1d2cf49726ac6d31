/**
 * Progress on stderr: a thin reporter around the pure renderer (progress_render.ts). On a terminal
 * it redraws one line (at most 10 times a second); elsewhere (CI, log files) it writes one plain
 * line per interval, only when something changed, so logs are not flooded.
 *
 * @module
 */
import { emptyCounters } from "../outcome.ts";
import type { BatchReport, RunObserver, RunStart, Summary } from "../run_events.ts";
import { type TimerClock, type TimerHandle, wallClock } from "../async/clock.ts";
import { type ProgressState, renderProgress } from "./progress_render.ts";

/** Options of {@linkcode ProgressReporter}. */
export interface ProgressReporterOptions {
  /** Writes text to stderr as is (no newline added). */
  write: (text: string) => void;
  /** Redraw one line in place (terminal) or write plain lines (anything else). */
  isTty: boolean;
  /** Seconds between plain lines when not a TTY (default 10; `0` or less: no plain lines). */
  interval?: number;
  /** Terminal width for the redrawn line (default 80 columns). */
  columns?: () => number;
  /** Colour the error count on a TTY (default `false`; pass `false` when NO_COLOR is set). */
  color?: boolean;
  /** Time source and timers (default: the system clock). */
  clock?: TimerClock;
  /**
   * Not a TTY: hands each plain line to this function instead of writing it, e.g. to log it as a
   * JSON `progress` event so a log pipeline never sees a line that is not JSON.
   */
  emit?: (line: string, state: ProgressState, now: number) => void;
}

/** At most this many redraws per second on a terminal. */
const TTY_REDRAWS_PER_SECOND = 10;
/** Carriage return + erase line: the redraw replaces the previous line instead of appending. */
const CLEAR_LINE = "\r\x1b[2K";
/** Width for plain lines: long enough for every part, short enough for a log viewer. */
const PLAIN_WIDTH = 200;

/**
 * Writes progress for the run it observes. Throttled with a leading and a trailing edge: the first
 * change is shown at once, later ones at most once per gap, and the last one is never lost (a timer
 * shows it when the gap is over). {@linkcode onEnd} cancels that timer.
 *
 * @example
 * ```ts ignore
 * import { ProgressReporter } from "./progress.ts";
 * const progress = new ProgressReporter({
 *   write: (text) => Deno.stderr.writeSync(new TextEncoder().encode(text)),
 *   isTty: Deno.stderr.isTerminal(),
 * });
 * ```
 */
export class ProgressReporter implements RunObserver {
  readonly #write: (text: string) => void;
  readonly #isTty: boolean;
  readonly #gapMs: number;
  readonly #columns: () => number;
  readonly #color: boolean;
  readonly #clock: TimerClock;
  readonly #emit: (line: string, state: ProgressState, now: number) => void;
  #state: ProgressState;
  /** Scanned count at the last draw; scanned is the sum of all outcomes, so equal means unchanged. */
  #drawnScanned = -1;
  #lastDrawAt = Number.NEGATIVE_INFINITY;
  /** The line currently on the terminal (TTY only), to restore it after a log line. */
  #line = "";
  #timer: TimerHandle | undefined;
  #ended = false;

  /** Creates a reporter; nothing is written before the first event. */
  constructor(options: ProgressReporterOptions) {
    this.#write = options.write;
    this.#isTty = options.isTty;
    const interval = options.interval ?? 10;
    this.#gapMs = options.isTty
      ? 1000 / TTY_REDRAWS_PER_SECOND
      : interval > 0
      ? interval * 1000
      : Number.POSITIVE_INFINITY;
    this.#columns = options.columns ?? (() => 80);
    this.#color = options.isTty && (options.color ?? false);
    this.#clock = options.clock ?? wallClock;
    this.#emit = options.emit ?? ((line) => this.#write(`${line}\n`));
    this.#state = { totals: emptyCounters(), estimatedTotal: 0, startedAt: this.#clock.now() };
  }

  /** Remembers the start time, mode and estimate. */
  onStart(start: RunStart): void {
    this.#state = {
      ...this.#state,
      mode: start.mode,
      estimatedTotal: start.estimatedTotal,
      startedAt: this.#clock.now(),
    };
  }

  /** Takes the new totals and draws them now or when the throttle gap is over. */
  onBatch(batch: BatchReport): void {
    if (this.#ended) return;
    this.#state = {
      ...this.#state,
      totals: { ...batch.totals },
      estimatedTotal: batch.estimatedTotal,
    };
    if (batch.totals.scanned === this.#drawnScanned || this.#gapMs === Number.POSITIVE_INFINITY) {
      return;
    }
    const wait = this.#lastDrawAt + this.#gapMs - this.#clock.now();
    if (wait <= 0) {
      // A redraw planned earlier would only repeat this line.
      this.#cancelTimer();
      this.#draw();
    } else {
      this.#timer ??= this.#clock.setTimeout(() => {
        this.#timer = undefined;
        if (!this.#ended && this.#state.totals.scanned !== this.#drawnScanned) this.#draw();
      }, wait);
    }
  }

  /** Cancels a pending redraw and writes the final line (TTY: always, ending it with a newline). */
  onEnd(summary: Summary): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#cancelTimer();
    this.#state = {
      ...this.#state,
      totals: { ...summary },
      done: true,
      completed: summary.completed,
    };
    if (this.#isTty) {
      this.#write(`${CLEAR_LINE}${this.#render()}\n`);
      this.#line = "";
    } else if (summary.scanned !== this.#drawnScanned && this.#gapMs !== Number.POSITIVE_INFINITY) {
      this.#emitPlain();
    }
  }

  /** Stops without a final line (the run ended without a summary); safe to call more than once. */
  stop(): void {
    this.#ended = true;
    this.#cancelTimer();
    if (this.#isTty && this.#line !== "") this.#write(`${CLEAR_LINE}${this.#line}\n`);
    this.#line = "";
  }

  /**
   * Writes `text` (whole lines) above the progress line: on a TTY the drawn line is erased first and
   * redrawn after, so log lines and the progress line never end up mixed on one terminal row.
   */
  writeAbove(text: string): void {
    if (this.#isTty && this.#line !== "") {
      this.#write(`${CLEAR_LINE}${text}${this.#line}`);
    } else {
      this.#write(text);
    }
  }

  #draw(): void {
    this.#lastDrawAt = this.#clock.now();
    this.#drawnScanned = this.#state.totals.scanned;
    if (this.#isTty) {
      this.#line = this.#render();
      this.#write(`${CLEAR_LINE}${this.#line}`);
    } else {
      this.#emitPlain();
    }
  }

  #emitPlain(): void {
    const now = this.#clock.now();
    this.#emit(this.#render(), this.#state, now);
  }

  #render(): string {
    // One column less than the terminal: writing into the last column makes some terminals wrap.
    const width = this.#isTty ? Math.max(20, this.#terminalColumns() - 1) : PLAIN_WIDTH;
    return renderProgress(this.#state, { width, now: this.#clock.now(), color: this.#color });
  }

  #terminalColumns(): number {
    try {
      const columns = this.#columns();
      return Number.isFinite(columns) && columns > 0 ? columns : 80;
    } catch {
      // Deno.consoleSize() throws when the terminal went away; keep drawing at a safe width.
      return 80;
    }
  }

  #cancelTimer(): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
