/**
 * The seam between the engine and telemetry: the engine reports what a run does through these,
 * never knowing who listens.
 *
 * @module
 */
import type { Counters, InvalidReason, KeyResult, Outcome } from "./outcome.ts";

export type RunMode = "dry-run" | "execute";

/** The final summary of a run (also the `--json` object, field for field). */
export interface Summary extends Counters {
  mode: RunMode;
  duration_seconds: number;
  /** The scan reached its end on every node. */
  completed: boolean;
  /** The cursor to resume from ("0" when completed). Cluster: a comma-separated node=cursor list. */
  cursor: string;
  /** What the Redis user may not run that --execute needs; absent: unknown. */
  preflight?: string[];
  /** Cluster copies an earlier run left unverified, completed by this one (cluster/intents.ts). */
  intents_completed?: number;
}

/** Facts known when a run starts. */
export interface RunStart {
  mode: RunMode;
  /** Configured --rps (0 = unlimited). */
  rps: number;
  /** Old keys this run expects to look at: an estimate from DBSIZE, refined as the scan goes. */
  estimatedTotal: number;
  progressKey: string;
  /** Totals of the earlier runs of this migration, so a resumed run's counters continue. */
  carried?: CarriedTotals;
}

/** The workspace under which the checkpoint carries counts of every workspace together. */
export const EARLIER_RUNS = "*";

/** Running totals carried over from earlier runs of the same migration. */
export interface CarriedTotals {
  /** Per outcome, counts by workspace id (`""`: no valid id; {@linkcode EARLIER_RUNS}: all). */
  byOutcome: Partial<Record<Outcome, Readonly<Record<string, number>>>>;
  /** Invalid keys by reason (their sum may be below `skipped_invalid`: reasons came later). */
  invalidByReason?: Partial<Record<InvalidReason, number>>;
}

/** Why the run holds back on purpose. */
export const THROTTLE_REASONS = ["redis_busy", "replica_lag", "memory", "paused"] as const;

export type ThrottleReason = typeof THROTTLE_REASONS[number];

/** The `node` of a rate that applies to the whole run. */
export const ALL_NODES = "_all";

/** The effective rate limit of a master, or of the whole run ({@linkcode ALL_NODES}). */
export interface RateLimitEvent {
  node: string;
  /** Jobs per second (0 = unlimited). */
  rps: number;
}

/** A throttle turned on or off. */
export interface ThrottleEvent {
  reason: ThrottleReason;
  active: boolean;
}

/** How busy a master was over the last interval, as the server reports it (control/pace.ts). */
export interface ServerLoadEvent {
  node: string;
  /** Share of the interval Redis's main thread was on the CPU (0–1). */
  busy: number;
  /** Share of the interval the backfill's own commands ran (0–1). */
  backfill: number;
  /** Another client is active on the master: its calls in flight follow `--max-latency`. */
  shared?: boolean;
}

/** A replica's replication lag behind its master. */
export interface ReplicaLagEvent {
  node: string;
  bytes: number;
}

export interface RedisReplyEvent {
  node: string;
}

export interface RedisDownEvent {
  node: string;
  /** One line, already free of secrets and field values (e.g. an error code). */
  reason: string;
}

/** One fully processed batch. */
export interface BatchReport {
  /** Redacted host:port. */
  node: string;
  results: readonly KeyResult[];
  /** Wall time from the batch leaving the scanner to its last result, in seconds. */
  seconds: number;
  /** Counters of the whole run after this batch. */
  totals: Readonly<Counters>;
  /** See {@linkcode RunStart.estimatedTotal}. */
  estimatedTotal: number;
  /** The node's resume cursor after this batch ("0" when its scan is done). */
  cursor?: string;
}

/** Listener for run events; every method is optional. */
export interface RunObserver {
  onStart?(start: RunStart): void;
  onBatch?(batch: BatchReport): void;
  /** The limiter held the run back for `seconds`. */
  onLimiterWait?(seconds: number): void;
  /** The effective rate limit changed (also once at start). */
  onRateLimit?(event: RateLimitEvent): void;
  onThrottle?(event: ThrottleEvent): void;
  /** About every 200 ms while the pace adapts. */
  onServerLoad?(event: ServerLoadEvent): void;
  onReplicaLag?(event: ReplicaLagEvent): void;
  /** Any reply; must stay cheap. */
  onRedisReply?(event: RedisReplyEvent): void;
  /** An outage began. */
  onRedisDown?(event: RedisDownEvent): void;
  /** The run ended (any way); awaited before the process exits. */
  onEnd?(summary: Summary): void | Promise<void>;
}

/** The events that carry one argument and return nothing (all but `onEnd`). */
export const SYNC_EVENTS = [
  "onStart",
  "onBatch",
  "onLimiterWait",
  "onRateLimit",
  "onThrottle",
  "onServerLoad",
  "onReplicaLag",
  "onRedisReply",
  "onRedisDown",
] as const;

export type SyncEvent = typeof SYNC_EVENTS[number];

export type LogLevel = "debug" | "info" | "warn" | "error";

/**
 * Structured log sink. `event` is a stable name (`lock_acquired`); `fields` hold numbers or
 * sanitised strings only: never a password, never a job's field values.
 */
export interface Logger {
  log(level: LogLevel, event: string, message: string, fields?: Record<string, unknown>): void;
}

/** A logger that drops everything (for library use and tests). */
export const silentLogger: Logger = { log() {} };
