/**
 * The pace of one master, as a pure decision over what the server reports; no client timer feeds
 * it (a CPU-starved client would read its own wait as latency).
 *
 * - While another client is active ({@linkcode PaceState.shared}) the call window is
 *   `--max-latency`'s (call_window.ts); alone for {@linkcode ALONE_AFTER_MS}, a round trip's.
 * - Critical load, like gh-ost's `--critical-load`: when the application alone keeps Redis's main
 *   thread {@linkcode PaceOptions.criticalBusy} busy, the backfill yields to
 *   {@linkcode YIELD_SHARE} of Redis's time. A saturated Redis hides the application's demand, so
 *   that is read in short quiet windows (nothing admitted to this master), which back off while
 *   the application's share stays low.
 * - Pauses: the operator's, `--max-memory-pct`, `--max-replica-lag`.
 *
 * `rps` 0 means unlimited.
 *
 * @module
 */
import type { ThrottleReason } from "../run_events.ts";
import type { LoadDelta } from "./server_load.ts";

/** One reading of a master's load: the server's interval (control/server_load.ts), and ours. */
export interface LoadReading extends LoadDelta {
  /** Milliseconds on the caller's monotonic clock when the reading was taken. */
  at: number;
  /** Keys this master admitted in the interval. */
  keys: number;
  /** Nothing of the backfill was admitted to this master in the interval. */
  quiet: boolean;
}

/** The pause signals of one tick. */
export interface PauseSignals {
  replicaLagOver: boolean;
  memoryOver: boolean;
  /** Why memory is over, for the log line (sizes only). */
  memoryDetail?: string;
  operatorPaused: boolean;
}

/** The controller's output. */
export interface PaceState {
  /** This master's own rate, jobs per second; 0 = no limit of its own (the cap still applies). */
  rps: number;
  paused: boolean;
  /** Hold admissions to this master for a quiet window now. */
  quiet: boolean;
  /** Another client may be waiting behind the backfill: keep the latency budget's window. */
  shared: boolean;
  /** Reasons in force now, pause reasons first. */
  throttled: readonly ThrottleReason[];
}

/** One change of state: one log line ({@linkcode describeRateChange}) and metrics. */
export interface RateChange {
  reason: ThrottleReason | "cap" | "shared";
  /** Whether the reason is now in force (for `shared`: shared now; for `cap`: a cap is set). */
  active: boolean;
  /** This master's own rate after the change (0 = none of its own). */
  rps: number;
  paused: boolean;
  /** What the server read, for the log line (critical load and memory). */
  detail?: string;
}

/** Options of {@linkcode PaceController}. */
export interface PaceOptions {
  /** Critical load on (`--max-latency` > 0); off, only the pauses apply. */
  adaptive: boolean;
  /** Redis busy this much by the application alone makes the backfill yield. Default 0.9. */
  criticalBusy?: number;
  /** It stops yielding once the application alone is below this. Default 0.8 (hysteresis). */
  recoverBusy?: number;
}

/** The share of Redis's time the backfill keeps while it yields. */
const YIELD_SHARE = 0.1;
/** Redis's cost beyond the commands' own time (reading calls, writing replies): errs slow. */
const OVERHEAD_FACTOR = 1.25;
/** Milliseconds between quiet windows at first; doubled after each that shows a low share. */
const QUIET_GAP_MS = 1000;
/** The longest gap between quiet windows while Redis stays busy. */
const MAX_QUIET_GAP_MS = 16_000;
/** While yielding, the application's share must stay low this long to recover. */
const RECOVER_MS = 1000;
/** The rate while yielding, before anything is known of a key's cost. */
const COLD_YIELD_RPS = 200;
const MIN_YIELD_RPS = 10;
/** No other client seen this long makes the master alone (a deeper window). */
const ALONE_AFTER_MS = 2000;

const PAUSE_REASONS = ["paused", "memory", "replica_lag"] as const;

/** The pace controller of one master. */
export class PaceController {
  readonly #options: Required<PaceOptions>;
  #throttled = new Set<ThrottleReason>();
  /** Server µs one key costs (the backfill's commands × overhead), EWMA; undefined until seen. */
  #perKeyMicros: number | undefined;
  #quietRequested = false;
  #lastQuietAt = -Infinity;
  #quietGapMs = QUIET_GAP_MS;
  /** The application's share of Redis in the last quiet window. */
  #appAlone: number | undefined;
  /** While yielding: since when the application's share has been below recovery. */
  #lowSince: number | undefined;
  #yieldRps = 0;
  #shared = true;
  /** When a reading last showed another client active (or could not tell). */
  #othersSeenAt = -Infinity;

  constructor(options: PaceOptions) {
    this.#options = { criticalBusy: 0.9, recoverBusy: 0.8, ...options };
  }

  /** The current output. */
  get state(): PaceState {
    const paused = PAUSE_REASONS.some((reason) => this.#throttled.has(reason));
    const yielding = this.#throttled.has("redis_busy");
    return {
      rps: yielding ? this.#yieldRps : 0,
      paused,
      quiet: !paused && this.#quietRequested,
      shared: this.#shared,
      throttled: [
        ...PAUSE_REASONS.filter((reason) => this.#throttled.has(reason)),
        ...(yielding ? ["redis_busy" as const] : []),
      ],
    };
  }

  /** Applies one tick's pause signals and load reading (if taken); returns the changes. */
  tick(signals: PauseSignals, load?: LoadReading): RateChange[] {
    const changes: RateChange[] = [];
    const flag = (reason: ThrottleReason, on: boolean, detail?: string) => {
      if (on === this.#throttled.has(reason)) return;
      if (on) this.#throttled.add(reason);
      else this.#throttled.delete(reason);
      changes.push({ ...this.#change(reason, on), ...(detail ? { detail } : {}) });
    };
    flag("paused", signals.operatorPaused);
    flag("memory", signals.memoryOver, signals.memoryDetail);
    flag("replica_lag", signals.replicaLagOver);
    if (!this.#options.adaptive || load === undefined) return changes;
    const shared = this.#sharedAfter(load);
    if (shared !== this.#shared) {
      this.#shared = shared;
      changes.push(this.#change("shared", shared));
    }
    // Nothing is admitted while paused: a reading then is the application's alone.
    const { paused } = this.state;
    if (paused || load.quiet) {
      this.#quietRequested = false;
      this.#learnAlone(load);
      if (paused) return changes;
      const app = this.#appAlone!;
      if (app >= this.#options.criticalBusy) {
        this.#yieldRps = this.#yieldRate();
        flag("redis_busy", true, this.#busyDetail(app));
      } else if (!this.#throttled.has("redis_busy")) {
        this.#quietGapMs = Math.min(this.#quietGapMs * 2, MAX_QUIET_GAP_MS);
      }
      return changes;
    }
    this.#learnCost(load);
    const busy = busyShare(load);
    const own = load.elapsedMicros > 0 ? load.ownMicros / load.elapsedMicros : 0;
    const appEstimate = Math.max(0, busy - own * OVERHEAD_FACTOR);
    if (this.#throttled.has("redis_busy")) {
      // At a tenth of Redis's time the backfill cannot keep it busy: what is left is the
      // application's (a saturated Redis reads ~100% here and the run keeps yielding).
      if (appEstimate < this.#options.recoverBusy) this.#lowSince ??= load.at;
      else this.#lowSince = undefined;
      if (this.#lowSince !== undefined && load.at - this.#lowSince >= RECOVER_MS) {
        this.#lowSince = undefined;
        this.#quietGapMs = QUIET_GAP_MS;
        flag("redis_busy", false, this.#freeDetail(appEstimate));
        return changes;
      }
      // Follow the learnt cost, but not every small wobble of it (each change retunes a limiter).
      const rate = this.#yieldRate();
      if (Math.abs(rate - this.#yieldRps) > 0.2 * this.#yieldRps) this.#yieldRps = rate;
      return changes;
    }
    // The application's load rose well past what the last quiet window read: read it again soon.
    if (this.#appAlone !== undefined && appEstimate - this.#appAlone > 0.2) {
      this.#quietGapMs = QUIET_GAP_MS;
    }
    if (
      busy >= this.#options.criticalBusy && load.at - this.#lastQuietAt >= this.#quietGapMs
    ) {
      this.#quietRequested = true;
    }
    return changes;
  }

  /** A quiet window read nothing (the reading failed): let the master go on. */
  cancelQuiet(): void {
    this.#quietRequested = false;
  }

  /** Shared at once when another client shows (or nobody can tell); alone only after a while. */
  #sharedAfter(load: LoadReading): boolean {
    if (load.othersActive !== false) {
      this.#othersSeenAt = load.at;
      return true;
    }
    if (!this.#shared) return false;
    // Never seen: the start's readings decide at once (the run began without any client active).
    if (this.#othersSeenAt === -Infinity) return false;
    return load.at - this.#othersSeenAt < ALONE_AFTER_MS;
  }

  #learnAlone(load: LoadReading): void {
    this.#appAlone = busyShare(load);
    this.#lastQuietAt = load.at;
  }

  #learnCost(load: LoadReading): void {
    // A handful of keys is too little to tell their cost from the noise of the reading.
    if (load.keys < 20 || !(load.ownMicros > 0)) return;
    const sample = (load.ownMicros * OVERHEAD_FACTOR) / load.keys;
    this.#perKeyMicros = this.#perKeyMicros === undefined
      ? sample
      : this.#perKeyMicros + 0.3 * (sample - this.#perKeyMicros);
  }

  #yieldRate(): number {
    const perKey = this.#perKeyMicros;
    if (perKey === undefined || !(perKey > 0)) return COLD_YIELD_RPS;
    return Math.max(MIN_YIELD_RPS, Math.floor((YIELD_SHARE * 1_000_000) / perKey));
  }

  #busyDetail(app: number): string {
    return `Redis is ${pct(app)} busy without the backfill (critical load ${
      pct(this.#options.criticalBusy)
    }): the backfill yields to ${pct(YIELD_SHARE)} of Redis's time`;
  }

  #freeDetail(app: number): string {
    return `the application keeps Redis ${pct(app)} busy, under ${pct(this.#options.recoverBusy)}`;
  }

  #change(reason: RateChange["reason"], active: boolean): RateChange {
    const { rps, paused } = this.state;
    return { reason, active, rps, paused };
  }
}

/** The share of the interval Redis's main thread was busy (0–1). */
export function busyShare(load: Pick<LoadReading, "elapsedMicros" | "busyMicros">): number {
  if (!(load.elapsedMicros > 0)) return 0;
  return Math.min(1, Math.max(0, load.busyMicros / load.elapsedMicros));
}

function pct(share: number): string {
  return `${Math.round(share * 100)}%`;
}

/** The one log line for a change; `rps` is the rate that applies (the master's own under the cap). */
export function describeRateChange(change: RateChange): string {
  const rate = change.paused
    ? "paused"
    : `rate ${change.rps === 0 ? "unlimited" : `${change.rps}/s`}`;
  if (change.reason === "cap") {
    return `operator cap ${change.active ? "set" : "removed"}; ${rate}`;
  }
  if (change.reason === "shared") {
    return change.active
      ? "another client is active on Redis: calls in flight follow --max-latency"
      : "no other client active on Redis: calls in flight cover the round trip";
  }
  const what = {
    redis_busy: change.detail ??
      `Redis ${change.active ? "at" : "back under"} critical load without the backfill`,
    replica_lag: `replica lag ${change.active ? "above" : "back under"} --max-replica-lag`,
    memory: `memory ${change.active ? "above" : "back under"} --max-memory-pct`,
    paused: change.active ? "paused by the operator" : "resumed by the operator",
  }[change.reason];
  const line = `throttle ${change.active ? "on" : "off"}: ${what}; ${rate}`;
  const memory = change.reason === "memory" && change.active && change.detail;
  return memory ? `${line} (${change.detail})` : line;
}
