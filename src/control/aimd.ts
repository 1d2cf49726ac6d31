/**
 * The health-aware throttle, as a pure decision: health signals in, effective rate out. AIMD, like
 * TCP congestion control: raise steadily while the store is healthy, cut sharply (halve) within a
 * second of the added latency passing `--max-latency`, and pause outright while a replica lags,
 * memory is short or the operator said so. No I/O and no timers: the caller ticks it (about every
 * 100–250 ms) with fresh signals and an injected clock, and logs each returned change as one line.
 *
 * Rates follow the project's convention: `rps` 0 means unlimited.
 *
 * @module
 */

/** Why the run is held back. `paused` is the operator's `backfill pause`. */
export type ThrottleReason = "latency" | "replica_lag" | "memory" | "paused";

/** Health as seen at one tick. */
export interface HealthSignals {
  /** The probe's added p99 is above `--max-latency` (false when that is off or not yet known). */
  latencyOver: boolean;
  /** Some replica of this master is past `--max-replica-lag`. Pauses. */
  replicaLagOver: boolean;
  /** Memory is above `--max-memory-pct`. Pauses. */
  memoryOver: boolean;
  /** `backfill pause` is in force. Pauses. */
  operatorPaused: boolean;
  /**
   * Jobs per second the run actually pushed through since the last raise, when known. The rate is
   * only raised while the run keeps up with it: a run limited by its own speed (or by SCAN) must not
   * inflate a rate it never uses, or a later cut would halve a fiction and change nothing.
   */
  achievedRps?: number;
}

/** The controller's output. */
export interface RateState {
  /** Jobs per second to admit; 0 = unlimited. Meaningless while {@linkcode paused}. */
  rps: number;
  paused: boolean;
  /** Reasons in force now, pause reasons first. */
  throttled: readonly ThrottleReason[];
}

/** One change of state: exactly one log line (see {@linkcode describeRateChange}) and metrics. */
export interface RateChange {
  /** What changed: a throttle reason that became active or cleared, or the operator's cap. */
  reason: ThrottleReason | "cap";
  /** For a throttle reason: whether it is now in force. */
  active: boolean;
  /** The effective rate after the change (0 = unlimited). */
  rps: number;
  paused: boolean;
}

/** Options of {@linkcode AimdController}; all rates in jobs per second. */
export interface AimdOptions {
  /** `--rps`: the hard cap, 0 = no cap. */
  capRps: number;
  /** `--max-latency` > 0: adapt to latency. Off: the rate is simply the cap (or unlimited). */
  adaptive: boolean;
  /** Milliseconds, monotonic. */
  now: () => number;
  /** Where an adaptive run starts (never above the cap). Default 1000. */
  startRps?: number;
  /** A latency cut never goes below this. Default 20. */
  minRps?: number;
  /** A cut multiplies the rate by this. Default 0.5. */
  decreaseFactor?: number;
  /** At most one cut per this many ms, so one slow second is one cut. Default 1000. */
  cutIntervalMs?: number;
  /**
   * Latency must stay over this many ms before it is acted on: one noisy reading (a scheduler
   * hiccup on either host) is no reason to halve the rate. Default 300.
   */
  confirmMs?: number;
  /** One raise per this many healthy ms. Default 1000. */
  raiseIntervalMs?: number;
  /**
   * Before the first cut, each raise multiplies the rate by this: like TCP's slow start it finds
   * the ceiling in seconds (1000 → 64 000 jobs/s in 6), and the first sign of trouble halves it.
   * Default 2.
   */
  probeGrowth?: number;
  /** After a cut, below half of the best healthy rate, each raise multiplies by this. 1.25. */
  recoveryGrowth?: number;
  /**
   * After a cut, each raise adds this share of the best rate that stayed healthy (additive); below
   * half of that rate it grows by `probeGrowth` instead, so one bad spell does not leave the run
   * crawling back a few jobs per second. Default 0.05.
   */
  additiveShare?: number;
}

const PAUSE_REASONS = ["paused", "memory", "replica_lag"] as const;

/** The AIMD rate controller for one master (or one run). */
export class AimdController {
  readonly #options: Required<AimdOptions>;
  #cap: number;
  /** The adaptive rate (unbounded by the cap; the cap applies on output). */
  #rate: number;
  #throttled = new Set<ThrottleReason>();
  #lastCutAt = -Infinity;
  #lastRaiseAt: number;
  /** The rate when trouble last started, or undefined while still probing for the ceiling. */
  #cutFrom: number | undefined;
  /** Since when latency has been over (while it is). */
  #overSince: number | undefined;
  /** The highest rate that stayed healthy for a whole raise interval. */
  #bestHealthy = 0;

  /** @throws {RangeError} on a negative or non-finite cap. */
  constructor(options: AimdOptions) {
    this.#options = {
      startRps: 1000,
      minRps: 20,
      decreaseFactor: 0.5,
      cutIntervalMs: 1000,
      confirmMs: 300,
      raiseIntervalMs: 1000,
      probeGrowth: 2,
      recoveryGrowth: 1.25,
      additiveShare: 0.05,
      ...options,
    };
    this.#cap = checkedCap(options.capRps);
    this.#rate = this.#cap > 0
      ? Math.min(this.#options.startRps, this.#cap)
      : this.#options.startRps;
    this.#lastRaiseAt = options.now();
  }

  /** The current output. */
  get state(): RateState {
    const throttled = [
      ...PAUSE_REASONS.filter((reason) => this.#throttled.has(reason)),
      ...(this.#throttled.has("latency") ? ["latency" as const] : []),
    ];
    const paused = PAUSE_REASONS.some((reason) => this.#throttled.has(reason));
    return { rps: this.#effective(), paused, throttled };
  }

  /** Applies one tick of health; returns the changes (each is one log line), usually none. */
  tick(signals: HealthSignals): RateChange[] {
    const now = this.#options.now();
    const changes: RateChange[] = [];
    const flag = (reason: ThrottleReason, on: boolean) => {
      if (on === this.#throttled.has(reason)) return;
      if (on) this.#throttled.add(reason);
      else this.#throttled.delete(reason);
      changes.push(this.#change(reason, on));
    };
    flag("paused", signals.operatorPaused);
    flag("memory", signals.memoryOver);
    flag("replica_lag", signals.replicaLagOver);
    if (this.state.paused) {
      // Nothing is admitted while paused, so nothing is learnt; resume where we were.
      this.#lastRaiseAt = now;
      return changes;
    }
    const latencyOver = this.#options.adaptive && signals.latencyOver;
    if (latencyOver) {
      this.#overSince ??= now;
      this.#lastRaiseAt = now;
      // Not yet confirmed: hold the rate (no raise), but do not cut on one reading.
      if (now - this.#overSince < this.#options.confirmMs) return changes;
      if (now - this.#lastCutAt >= this.#options.cutIntervalMs) this.#cut(now, signals);
      // A cut while already throttled is a change of rate too: one line each, at most 1 per second.
      if (this.#throttled.has("latency") && this.#lastCutAt === now) {
        changes.push(this.#change("latency", true));
      }
      flag("latency", true);
      return changes;
    }
    this.#overSince = undefined;
    flag("latency", false);
    if (this.#options.adaptive && now - this.#lastRaiseAt >= this.#options.raiseIntervalMs) {
      this.#raise(signals);
      this.#lastRaiseAt = now;
    }
    return changes;
  }

  /** Sets the operator's cap (`backfill set-rps N`, 0 = none); returns the change to log. */
  setCap(rps: number): RateChange {
    this.#cap = checkedCap(rps);
    // Lowering the cap below the adaptive rate brings the rate down with it, so a later raise of
    // the cap starts from there instead of jumping straight to a rate the store never proved.
    if (this.#cap > 0) this.#rate = Math.min(this.#rate, this.#cap);
    return this.#change("cap", this.#cap > 0);
  }

  #cut(now: number, signals: HealthSignals): void {
    const base = Math.min(this.#effectiveAdaptive(), signals.achievedRps ?? Infinity);
    this.#cutFrom = base;
    this.#rate = Math.max(this.#options.minRps, base * this.#options.decreaseFactor);
    this.#lastCutAt = now;
  }

  #raise(signals: HealthSignals): void {
    const current = this.#effectiveAdaptive();
    if (this.#cap > 0 && this.#rate >= this.#cap) return;
    // Not keeping up with the rate we have (below 80%): more would only be a number.
    if (signals.achievedRps !== undefined && signals.achievedRps < current * 0.8) return;
    // This rate held for a whole interval without trouble.
    this.#bestHealthy = Math.max(this.#bestHealthy, current);
    if (this.#cutFrom === undefined) this.#rate = current * this.#options.probeGrowth;
    else if (current < this.#bestHealthy / 2) this.#rate = current * this.#options.recoveryGrowth;
    else this.#rate = current + Math.max(1, this.#bestHealthy * this.#options.additiveShare);
    if (this.#cap > 0) this.#rate = Math.min(this.#rate, this.#cap);
  }

  #effectiveAdaptive(): number {
    return this.#cap > 0 ? Math.min(this.#rate, this.#cap) : this.#rate;
  }

  #effective(): number {
    if (!this.#options.adaptive) return this.#cap;
    return Math.max(1, Math.round(this.#effectiveAdaptive()));
  }

  #change(reason: RateChange["reason"], active: boolean): RateChange {
    const { rps, paused } = this.state;
    return { reason, active, rps, paused };
  }
}

/** The one log line for a change, e.g. `throttle on: latency; rate 2500/s`. */
export function describeRateChange(
  change: RateChange,
  limits: { maxLatencyMs?: number } = {},
): string {
  const rate = change.paused
    ? "paused"
    : `rate ${change.rps === 0 ? "unlimited" : `${change.rps}/s`}`;
  if (change.reason === "cap") {
    return `operator cap ${change.active ? "set" : "removed"}; ${rate}`;
  }
  const what = {
    latency: `added p99 latency ${change.active ? "above" : "back under"} ${
      limits.maxLatencyMs ?? "--max-latency"
    } ms`,
    replica_lag: `replica lag ${change.active ? "above" : "back under"} --max-replica-lag`,
    memory: `memory ${change.active ? "above" : "back under"} --max-memory-pct`,
    paused: change.active ? "paused by the operator" : "resumed by the operator",
  }[change.reason];
  return `throttle ${change.active ? "on" : "off"}: ${what}; ${rate}`;
}

function checkedCap(rps: number): number {
  if (!Number.isFinite(rps) || rps < 0) {
    throw new RangeError(`the rate cap must be a non-negative number, got ${rps}`);
  }
  return rps;
}
