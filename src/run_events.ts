/**
 * What a run tells the outside world while it goes: the seam between the engine and telemetry
 * (metrics, progress, pushgateway). The engine calls these; it never knows who listens.
 *
 * @module
 */
import type { Counters, KeyResult } from "./outcome.ts";

/** Dry-run or execute. */
export type RunMode = "dry-run" | "execute";

/** The final summary of a run (also the `--json` object, field for field). */
export interface Summary extends Counters {
  mode: RunMode;
  duration_seconds: number;
  /** True when the scan reached its end on every node (false when stopped by --max-keys or a signal). */
  completed: boolean;
  /** The cursor to resume from ("0" when completed). Cluster: a comma-separated node=cursor list. */
  cursor: string;
}

/** Facts known when a run starts. */
export interface RunStart {
  mode: RunMode;
  /** Configured --rps (0 = unlimited). */
  rps: number;
  /** Old keys this run expects to look at: an estimate from DBSIZE, refined as the scan goes. */
  estimatedTotal: number;
  /** Progress key prefix (also the Pushgateway `instance` grouping). */
  progressKey: string;
}

/** One fully processed batch. */
export interface BatchReport {
  /** Node the batch came from, as redacted host:port. */
  node: string;
  results: readonly KeyResult[];
  /** Wall time from the batch leaving the scanner to its last result, in seconds. */
  seconds: number;
  /** Counters of the whole run after this batch. */
  totals: Readonly<Counters>;
  /** Current estimate of the old keys in scope (see {@linkcode RunStart.estimatedTotal}). */
  estimatedTotal: number;
}

/** Listener for run events; every method is optional. */
export interface RunObserver {
  onStart?(start: RunStart): void;
  onBatch?(batch: BatchReport): void;
  /** The limiter held the run back for `seconds`. */
  onLimiterWait?(seconds: number): void;
  /** The run ended (any way); awaited before the process exits. */
  onEnd?(summary: Summary): void | Promise<void>;
}

/** Log levels, in increasing severity. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/**
 * Structured log sink. `event` is a stable machine-readable name (`resume`, `lock_acquired`, ...);
 * `fields` hold numbers or already-sanitised strings only: never a password, never a job's field values.
 */
export interface Logger {
  log(level: LogLevel, event: string, message: string, fields?: Record<string, unknown>): void;
}

/** A logger that drops everything (for library use and tests). */
export const silentLogger: Logger = { log() {} };
