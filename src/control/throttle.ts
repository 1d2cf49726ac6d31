/**
 * The health-aware throttle, wired: per master an {@linkcode AimdController} fed by that master's
 * health (latency probe, replica lag, memory) and the operator's pause, ticked every 200 ms. Its
 * rate becomes the master's own limiter in the gate; while it says `paused`, the gate admits
 * nothing for that master. Each change of state is one log line (with the reason and the new rate)
 * and observer events (metrics, health, status).
 *
 * @module
 */
import { delay } from "../async/delay.ts";
import type { Logger, RunObserver } from "../run_events.ts";
import {
  AimdController,
  describeRateChange,
  type RateChange,
  type ThrottleReason,
} from "./aimd.ts";
import type { AdmissionCheck, AdmitOptions } from "./gate.ts";
import type { HealthReading } from "./health_check.ts";
import { RetunableLimiter } from "./retunable.ts";

/** What the throttle needs of one master's health (see `health_check.ts`). */
export interface HealthSource {
  readonly node: string;
  read(): HealthReading;
  refreshMemory(): Promise<void>;
  /** Why memory is over, for the log line. */
  readonly memoryDetail?: string;
}

/** Options of {@linkcode Throttle}. */
export interface ThrottleOptions {
  /** One per master. */
  nodes: readonly HealthSource[];
  /** `--rps`: the hard cap, 0 = none. */
  capRps: number;
  /** `--max-latency` in ms; 0 = no adaptation (the rate is the cap). */
  maxLatencyMs: number;
  logger: Logger;
  observer?: Pick<RunObserver, "onRateLimit" | "onThrottle">;
  /** Milliseconds between ticks. Default 200. */
  tickMs?: number;
  /** Milliseconds, monotonic (default `performance.now`). */
  now?: () => number;
  /** Where an adaptive rate starts (default: the controller's, 1000/s). */
  startRps?: number;
}

/** What the status shows of the throttle. */
export interface ThrottleView {
  /** The effective rate of the whole run (0 = unlimited). */
  rps: number;
  capRps: number;
  paused: boolean;
  throttled: ThrottleReason[];
}

interface NodeControl {
  health: HealthSource;
  aimd: AimdController;
  limiter: RetunableLimiter;
  /** Permits granted and the time, at the last achieved-rate measurement. */
  mark: { granted: number; at: number };
  achievedRps?: number;
}

/** Per-master AIMD throttle; an admission check of the gate. */
export class Throttle implements AdmissionCheck {
  readonly #options: ThrottleOptions;
  readonly #now: () => number;
  readonly #nodes = new Map<string, NodeControl>();
  #operatorPaused = false;
  #cap: number;
  /** The last line logged per master: a repeated cut at the floor changes nothing, so no line. */
  readonly #lastLine = new Map<string, string>();
  #active = new Set<ThrottleReason>();

  constructor(options: ThrottleOptions) {
    this.#options = options;
    this.#now = options.now ?? (() => performance.now());
    this.#cap = options.capRps;
    for (const health of options.nodes) {
      const aimd = new AimdController({
        capRps: options.capRps,
        adaptive: options.maxLatencyMs > 0,
        now: this.#now,
        ...(options.startRps !== undefined ? { startRps: options.startRps } : {}),
      });
      const limiter = new RetunableLimiter(aimd.state.rps);
      this.#nodes.set(health.node, {
        health,
        aimd,
        limiter,
        mark: { granted: 0, at: this.#now() },
      });
      options.observer?.onRateLimit?.({ node: this.#label(health.node), rps: aimd.state.rps });
    }
  }

  /** The master's own limiter, for the gate. */
  limiterFor(node: string): RetunableLimiter | undefined {
    return this.#nodes.get(node)?.limiter;
  }

  /** Ticks every `tickMs` until the signal aborts; resolves then. */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      this.tick();
      await delay(this.#options.tickMs ?? 200, { signal }).catch(() => {});
    }
  }

  /** One tick of every master's controller: log and report each change, apply each rate. */
  tick(): void {
    const now = this.#now();
    const lines = new Set<string>();
    for (const control of this.#nodes.values()) {
      this.#measure(control, now);
      const changes = control.aimd.tick({
        ...control.health.read(),
        operatorPaused: this.#operatorPaused,
        achievedRps: control.achievedRps,
      });
      for (const change of changes) {
        const line = this.#describe(control, change);
        if (this.#lastLine.get(control.health.node) !== line) lines.add(line);
        this.#lastLine.set(control.health.node, line);
      }
      this.#apply(control);
    }
    for (const line of lines) this.#log(line);
    this.#reportReasons();
  }

  /** The gate's check: waits while this master (or, without one, any master) is paused. */
  async wait(options: AdmitOptions & { fresh?: boolean }): Promise<void> {
    const { signal, node } = options;
    if (options.fresh) {
      await Promise.all([...this.#nodes.values()].map((c) => c.health.refreshMemory()));
      this.tick();
    }
    const held = () =>
      node === undefined || !this.#nodes.has(node)
        ? [...this.#nodes.values()].some((c) => c.aimd.state.paused)
        : this.#nodes.get(node)!.aimd.state.paused;
    while (held()) await delay(50, { signal });
  }

  /** `backfill pause` / `resume`: applies at once (one log line). */
  setPaused(paused: boolean): void {
    this.#operatorPaused = paused;
    this.tick();
  }

  /** `backfill set-rps N` (0 = no cap): the new hard cap for every master (one log line). */
  setCap(rps: number): void {
    this.#cap = rps;
    let line = "";
    for (const control of this.#nodes.values()) {
      line = describeRateChange(control.aimd.setCap(rps), this.#limits());
      this.#apply(control);
    }
    if (line !== "") this.#log(line);
  }

  /** The state for the status: the run's rate, cap and reasons. */
  view(): ThrottleView {
    const states = [...this.#nodes.values()].map((c) => c.aimd.state);
    const unlimited = states.some((s) => !s.paused && s.rps === 0);
    const sum = states.reduce((total, s) => total + (s.paused ? 0 : s.rps), 0);
    const rps = unlimited ? this.#cap : this.#cap > 0 ? Math.min(sum, this.#cap) : sum;
    return {
      rps,
      capRps: this.#cap,
      paused: states.length > 0 && states.every((s) => s.paused),
      throttled: [...this.#active],
    };
  }

  /** The rate each master pushed through over the last second or more. */
  #measure(control: NodeControl, now: number): void {
    const elapsed = now - control.mark.at;
    if (elapsed < 1000) return;
    const granted = control.limiter.granted;
    control.achievedRps = ((granted - control.mark.granted) * 1000) / elapsed;
    control.mark = { granted, at: now };
  }

  #apply(control: NodeControl): void {
    const { rps, paused } = control.aimd.state;
    if (paused || rps === control.limiter.rps) return;
    control.limiter.setRps(rps);
    this.#options.observer?.onRateLimit?.({ node: this.#label(control.health.node), rps });
  }

  #describe(control: NodeControl, change: RateChange): string {
    let line = describeRateChange(change, this.#limits());
    if (change.reason === "memory" && change.active && control.health.memoryDetail) {
      line += ` (${control.health.memoryDetail})`;
    }
    // The operator's pause and cap apply to every master: one line, not one per master.
    const runWide = change.reason === "paused" || change.reason === "cap";
    return this.#nodes.size > 1 && !runWide ? `${control.health.node}: ${line}` : line;
  }

  #log(line: string): void {
    const on = line.includes("throttle on");
    this.#options.logger.log(on ? "warn" : "info", "throttle", line);
  }

  /** `relay_backfill_throttled{reason}`: a reason is on while any master has it. */
  #reportReasons(): void {
    const now = new Set<ThrottleReason>();
    for (const control of this.#nodes.values()) {
      for (const reason of control.aimd.state.throttled) now.add(reason);
    }
    for (const reason of new Set([...now, ...this.#active])) {
      if (now.has(reason) !== this.#active.has(reason)) {
        this.#options.observer?.onThrottle?.({ reason, active: now.has(reason) });
      }
    }
    this.#active = now;
  }

  #limits(): { maxLatencyMs: number } {
    return { maxLatencyMs: this.#options.maxLatencyMs };
  }

  /** `_all` when one master (one rate for the run), else the master. */
  #label(node: string): string {
    return this.#nodes.size > 1 || this.#options.nodes.length > 1 ? node : "_all";
  }
}
