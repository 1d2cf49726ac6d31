/**
 * Progress on stderr: {@linkcode renderProgress} is a pure function of the run's state and the
 * width, {@linkcode ProgressReporter} a thin shell around it. On a terminal it redraws one line;
 * elsewhere (CI, log files) it writes a plain line per interval, only when something changed.
 *
 * @module
 */
import { type Counters, emptyCounters, outcomeInfo, OUTCOMES } from "../outcome.ts";
import type { BatchReport, RunMode, RunObserver, RunStart, Summary } from "../run_events.ts";
import { type TimerClock, type TimerHandle, wallClock } from "../async/clock.ts";

/** Everything {@linkcode renderProgress} shows. */
export interface ProgressState {
  totals: Readonly<Counters>;
  /** Estimated old keys in scope (0 = unknown). */
  estimatedTotal: number;
  /** Epoch milliseconds. */
  startedAt: number;
  mode?: RunMode;
  /** The run is over: show the elapsed time instead of an ETA. */
  done?: boolean;
  /** With `done`: `false` when the run stopped before the scan's end (--max-keys, a signal). */
  completed?: boolean;
}

interface RenderOptions {
  /** Maximum visible characters; lower-priority parts are dropped to fit. */
  width: number;
  /** Epoch milliseconds. */
  now: number;
  /** Colour the error count red when it is not zero. */
  color?: boolean;
}

/** Parts with the lowest `keep` are dropped first when the line is too wide. */
type Part = { text: string; keep: number; styled?: string };

const SKIPPED = OUTCOMES.filter((outcome) => outcomeInfo(outcome).skipReason !== undefined);

const RED = "\x1b[31m";
const RESET = "\x1b[0m";

/**
 * One progress line, without a newline. The rate is keys per second over the whole run; the ETA is
 * marked `(est.)` because the total it divides is an estimate.
 *
 * @example
 * ```ts
 * import { renderProgress } from "./progress.ts";
 * import { emptyCounters } from "../outcome.ts";
 * const totals = { ...emptyCounters(), scanned: 500, migrated: 450, skipped_exists: 50 };
 * renderProgress({ totals, estimatedTotal: 2000, startedAt: 0 }, { width: 120, now: 5000 });
 * // "scanned 500/~2,000 (25%)  migrated 450  repaired 0  skipped 50  errors 0  100 keys/s  ETA ~15s (est.)"
 * ```
 */
export function renderProgress(state: ProgressState, options: RenderOptions): string {
  const { totals, estimatedTotal } = state;
  const { elapsed, rate, skipped, etaSeconds } = progressStats(state, options.now);

  let scanned = `scanned ${formatCount(totals.scanned)}`;
  if (!state.done && estimatedTotal > totals.scanned) {
    const pct = Math.floor((totals.scanned / estimatedTotal) * 100);
    scanned += `/~${formatCount(estimatedTotal)} (${pct}%)`;
  }
  const errors = `errors ${formatCount(totals.errors)}`;
  const timing = state.done
    ? `${state.completed === false ? "stopped after" : "done in"} ${formatDuration(elapsed)}`
    : etaSeconds !== undefined
    ? `ETA ~${formatDuration(etaSeconds)} (est.)`
    : "ETA unknown";

  const parts: Part[] = [
    ...(state.mode ? [{ text: `[${state.mode}]`, keep: 0 }] : []),
    { text: scanned, keep: 9 },
    { text: `migrated ${formatCount(totals.migrated)}`, keep: 6 },
    { text: `repaired ${formatCount(totals.repaired)}`, keep: 2 },
    { text: `skipped ${formatCount(skipped)}`, keep: 4 },
    ...(totals.filtered > 0 ? [{ text: `filtered ${formatCount(totals.filtered)}`, keep: 1 }] : []),
    {
      text: errors,
      keep: 8,
      styled: options.color && totals.errors > 0 ? `${RED}${errors}${RESET}` : undefined,
    },
    { text: `${rate < 10 ? rate.toFixed(1) : formatCount(rate)} keys/s`, keep: 3 },
    { text: timing, keep: 7 },
  ];

  const width = Math.max(1, Math.floor(options.width));
  const visible = (list: Part[]) =>
    list.reduce((n, p) => n + p.text.length, 0) + 2 * (list.length - 1);
  let shown = parts;
  while (shown.length > 1 && visible(shown) > width) {
    const lowest = Math.min(...shown.map((p) => p.keep));
    shown = shown.filter((p) => p.keep !== lowest);
  }
  if (visible(shown) > width) {
    // Only the scanned part is left and still too wide: cut it rather than wrap the terminal line,
    // which would break the \r redraw.
    return (shown[0]?.text ?? "").slice(0, width);
  }
  return shown.map((p) => p.styled ?? p.text).join("  ");
}

/** Elapsed seconds, keys/s, skipped sum and ETA (undefined: unknown or done) at `now`. */
function progressStats(state: ProgressState, now: number) {
  const { totals, estimatedTotal } = state;
  const elapsed = Math.max(0, (now - state.startedAt) / 1000);
  const rate = elapsed > 0 ? totals.scanned / elapsed : 0;
  const skipped = SKIPPED.reduce((sum, outcome) => sum + totals[outcome], 0);
  const etaSeconds = !state.done && rate > 0 && estimatedTotal > totals.scanned
    ? (estimatedTotal - totals.scanned) / rate
    : undefined;
  return { elapsed, rate, skipped, etaSeconds };
}

type ProgressFields = Record<string, number | boolean>;

/** The fields of a JSON `progress` log event; the ETA is absent when unknown. */
export function progressFields(state: ProgressState, now: number): ProgressFields {
  const { rate, etaSeconds, elapsed } = progressStats(state, now);
  const { totals } = state;
  const fields: ProgressFields = { scanned: totals.scanned };
  for (const outcome of OUTCOMES) fields[outcome] = totals[outcome];
  fields.estimated_total = state.estimatedTotal;
  fields.elapsed_seconds = round(elapsed, 3);
  fields.keys_per_second = round(rate, 1);
  if (etaSeconds !== undefined) fields.eta_seconds_estimate = Math.round(etaSeconds);
  if (state.done) fields.done = true;
  return fields;
}

function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/** `1234567` as `1,234,567` (fixed grouping, independent of the locale). */
export function formatCount(n: number): string {
  return Math.round(n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/** Seconds as `45s`, `12m`, `3h05m` or `2d04h`: precise enough for an ETA, short enough for a line. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.round(s / 60)}m`;
  const minutes = Math.round(s / 60);
  if (minutes < 24 * 60) {
    return `${Math.floor(minutes / 60)}h${String(minutes % 60).padStart(2, "0")}m`;
  }
  const hours = Math.round(s / 3600);
  return `${Math.floor(hours / 24)}d${String(hours % 24).padStart(2, "0")}h`;
}

export interface ProgressReporterOptions {
  /** Writes to stderr as is; all telemetry output goes there, never to stdout. */
  write: (text: string) => void;
  /** Redraw one line in place, or write plain lines. */
  isTty: boolean;
  /** Seconds between plain lines when not a TTY (default 10; `0` or less: no plain lines). */
  interval?: number;
  /** Terminal width (default 80). */
  columns?: () => number;
  /** Colour the error count on a TTY (default `false`; keep it off when NO_COLOR is set). */
  color?: boolean;
  clock?: TimerClock;
  /** Not a TTY: hands each plain line here instead of writing it (e.g. a JSON `progress` event). */
  emit?: (line: string, state: ProgressState, now: number) => void;
}

const TTY_REDRAWS_PER_SECOND = 10;
/** Carriage return + erase line: the redraw replaces the previous line. */
const CLEAR_LINE = "\r\x1b[2K";
/** Width for plain lines: long enough for every part, short enough for a log viewer. */
const PLAIN_WIDTH = 200;

/**
 * Writes progress for the run it observes, throttled with a leading and a trailing edge: the first
 * change shows at once, later ones at most once per gap, and the last one is never lost (a timer
 * shows it when the gap is over; {@linkcode onEnd} cancels that timer).
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
  /** The line on the terminal (TTY only, else ""), to restore it after a log line. */
  #line = "";
  #timer: TimerHandle | undefined;
  #ended = false;

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

  onStart(start: RunStart): void {
    this.#state = {
      ...this.#state,
      mode: start.mode,
      estimatedTotal: start.estimatedTotal,
      startedAt: this.#clock.now(),
    };
  }

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
      this.#emit(this.#render(), this.#state, this.#clock.now());
    }
  }

  /** Stops without a final line (the run ended without a summary); safe to call more than once. */
  stop(): void {
    this.#ended = true;
    this.#cancelTimer();
    if (this.#line !== "") this.#write(`${CLEAR_LINE}${this.#line}\n`);
    this.#line = "";
  }

  /** Writes whole lines above the progress line (erased, then redrawn), never on its row. */
  writeAbove(text: string): void {
    this.#write(this.#line === "" ? text : `${CLEAR_LINE}${text}${this.#line}`);
  }

  #draw(): void {
    this.#lastDrawAt = this.#clock.now();
    this.#drawnScanned = this.#state.totals.scanned;
    if (!this.#isTty) return this.#emit(this.#render(), this.#state, this.#clock.now());
    this.#line = this.#render();
    this.#write(`${CLEAR_LINE}${this.#line}`);
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
