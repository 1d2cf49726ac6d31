/**
 * The pace of the run, wired: per master a {@linkcode PaceController} fed by its health and the
 * operator's pause, ticked by a loop of its own. Its rate is the master's own limiter in the gate
 * (the `--rps` cap applies on top); while paused or quiet, the gate admits nothing for it.
 *
 * @module
 */
import { delay } from "../async/delay.ts";
import { ALL_NODES, type Logger, type RunObserver, type ThrottleReason } from "../run_events.ts";
import type { AdmissionCheck, AdmitOptions } from "./rate_limit.ts";
import {
  busyShare,
  describeRateChange,
  PaceController,
  type PaceOptions,
  type RateChange,
} from "./pace.ts";
import { SlidingWindowLimiter } from "./rate_limit.ts";
import type { NodeHealth } from "./health_check.ts";

const TICK_MS = 200;
/** A quiet window: the application's load read alone. */
const QUIET_MS = 150;

/** What the throttle needs of one master's health. */
export type HealthSource = Pick<NodeHealth, "node" | "read" | "refreshMemory" | "readLoad">;

/** Options of {@linkcode Throttle}. */
export interface ThrottleOptions {
  /** One per master. */
  nodes: readonly HealthSource[];
  /** `--rps`: the hard cap, 0 = none. */
  capRps: number;
  /** Critical load on (`--max-latency` > 0); off, only the pauses and the cap apply. */
  adaptive: boolean;
  logger: Logger;
  observer?: Pick<RunObserver, "onRateLimit" | "onThrottle" | "onServerLoad">;
  /** Milliseconds, monotonic (default `performance.now`). */
  now?: () => number;
  pace?: Omit<PaceOptions, "adaptive">;
}

/** What the status shows of the throttle. */
export interface ThrottleView {
  /** The whole run's effective rate (0 = unlimited). */
  rps: number;
  capRps: number;
  paused: boolean;
  throttled: ThrottleReason[];
}

interface NodeControl {
  health: HealthSource;
  pace: PaceController;
  limiter: SlidingWindowLimiter;
  /** The limiter's grants at the last load reading. */
  granted: number;
  reported?: number;
}

/** Per-master pace; an admission check of the gate. */
export class Throttle implements AdmissionCheck {
  readonly #options: ThrottleOptions;
  readonly #now: () => number;
  readonly #nodes = new Map<string, NodeControl>();
  #operatorPaused = false;
  #cap: number;
  #active = new Set<ThrottleReason>();

  constructor(options: ThrottleOptions) {
    this.#options = options;
    this.#now = options.now ?? (() => performance.now());
    this.#cap = options.capRps;
    for (const health of options.nodes) {
      const control: NodeControl = {
        health,
        pace: new PaceController({ ...options.pace, adaptive: options.adaptive }),
        limiter: new SlidingWindowLimiter(0),
        granted: 0,
      };
      this.#nodes.set(health.node, control);
      this.#report(control);
    }
  }

  /** The master's own limiter, for the gate. */
  limiterFor(node: string): SlidingWindowLimiter | undefined {
    return this.#nodes.get(node)?.limiter;
  }

  /** Whether another client may wait behind `node`'s calls (unknown masters: yes). */
  shared(node: string): boolean {
    return this.#nodes.get(node)?.pace.state.shared ?? true;
  }

  /** Runs every master's loop until the signal aborts; resolves then. */
  async run(signal: AbortSignal): Promise<void> {
    await Promise.all([...this.#nodes.values()].map((control) => this.#loop(control, signal)));
  }

  async #loop(control: NodeControl, signal: AbortSignal): Promise<void> {
    // A frozen Redis never answers a reading: the loop must still end when the run does.
    const stopped = new Promise<void>((resolve) => {
      if (signal.aborted) resolve();
      signal.addEventListener("abort", () => resolve(), { once: true });
    });
    const sample = (quiet: boolean) =>
      Promise.race([this.sample(control.health.node, quiet).catch(() => {}), stopped]);
    while (!signal.aborted) {
      await sample(false);
      if (control.pace.state.quiet && !signal.aborted) {
        await delay(QUIET_MS, { signal }).catch(() => {});
        await sample(true);
      }
      await delay(TICK_MS, { signal }).catch(() => {});
    }
  }

  /** One tick of `node` with a fresh load reading (`quiet`: nothing admitted since the last). */
  async sample(node: string, quiet: boolean): Promise<void> {
    const control = this.#nodes.get(node);
    if (!control) return;
    const delta = this.#options.adaptive ? await control.health.readLoad() : undefined;
    const granted = control.limiter.granted;
    const keys = granted - control.granted;
    control.granted = granted;
    if (quiet && !delta) control.pace.cancelQuiet();
    const load = delta && { ...delta, at: this.#now(), keys, quiet };
    for (const line of this.#apply(control, control.pace.tick(this.#signals(control), load))) {
      this.#log(line);
    }
    if (delta) {
      this.#options.observer?.onServerLoad?.({
        node,
        busy: busyShare(delta),
        backfill: Math.min(1, delta.ownMicros / delta.elapsedMicros),
        shared: control.pace.state.shared,
      });
    }
    this.#reportReasons();
  }

  /** One tick of every master's pause signals (no load reading): the operator, memory. */
  tick(): void {
    const lines = new Set<string>();
    for (const control of this.#nodes.values()) {
      for (const line of this.#apply(control, control.pace.tick(this.#signals(control)))) {
        lines.add(line);
      }
    }
    for (const line of lines) this.#log(line);
    this.#reportReasons();
  }

  /** The gate's check: waits while this master (or, without one, any master) is held back. */
  async wait(options: AdmitOptions & { fresh?: boolean }): Promise<void> {
    const { signal, node } = options;
    if (options.fresh) {
      await Promise.all([...this.#nodes.values()].map((c) => c.health.refreshMemory()));
      this.tick();
    }
    const own = node === undefined ? undefined : this.#nodes.get(node);
    for (;;) {
      const state = own?.pace.state;
      const quiet = state?.quiet ?? false;
      const held = own === undefined
        ? [...this.#nodes.values()].some((c) => c.pace.state.paused)
        : state!.paused || quiet;
      if (!held) return;
      // A quiet window is short: look again soon, so the run goes on as soon as it ends.
      await delay(quiet ? 10 : 50, { signal });
    }
  }

  /** Waits while any master is paused or quiet, for work not admitted per master. */
  async waitAll(signal?: AbortSignal): Promise<void> {
    const held = () =>
      [...this.#nodes.values()].some((c) => c.pace.state.paused || c.pace.state.quiet);
    while (held()) await delay(10, { signal });
  }

  /** The lowest own rate of any master (0 = none holds back): the whole run's, for `waitAll`. */
  get slowestRps(): number {
    const rates = [...this.#nodes.values()].map((c) => c.pace.state.rps).filter((r) => r > 0);
    return rates.length === 0 ? 0 : Math.min(...rates);
  }

  /** `backfill pause` / `resume`. */
  setPaused(paused: boolean): void {
    this.#operatorPaused = paused;
    this.tick();
  }

  /** `backfill set-rps N` (0 = no cap). */
  setCap(rps: number): void {
    if (!Number.isFinite(rps) || rps < 0) {
      throw new RangeError(`the rate cap must be a non-negative number, got ${rps}`);
    }
    this.#cap = rps;
    for (const control of this.#nodes.values()) this.#report(control);
    const first = this.#nodes.values().next().value as NodeControl | undefined;
    if (!first) return;
    const { paused } = first.pace.state;
    this.#log(describeRateChange({ reason: "cap", active: rps > 0, rps: this.view().rps, paused }));
  }

  view(): ThrottleView {
    const states = [...this.#nodes.values()].map((c) => ({
      paused: c.pace.state.paused,
      rps: this.#effective(c),
    }));
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

  #signals(control: NodeControl) {
    return { ...control.health.read(), operatorPaused: this.#operatorPaused };
  }

  /** Applies a tick's outcome to the limiter and metric; the lines to log. */
  #apply(control: NodeControl, changes: RateChange[]): string[] {
    const { rps } = control.pace.state;
    if (rps !== control.limiter.rps) control.limiter.setRps(rps);
    this.#report(control);
    return changes.map((change) => this.#describe(control, change));
  }

  /** The master's rate under the cap (0 = unlimited). */
  #effective(control: NodeControl): number {
    const own = control.pace.state.rps;
    if (own === 0) return this.#cap;
    return this.#cap === 0 ? own : Math.min(own, this.#cap);
  }

  /** `relay_backfill_rate_limit` of a master whose effective rate changed. */
  #report(control: NodeControl): void {
    const rps = this.#effective(control);
    if (rps === control.reported) return;
    control.reported = rps;
    // `_all` when one master: one rate for the run.
    const node = this.#options.nodes.length > 1 ? control.health.node : ALL_NODES;
    this.#options.observer?.onRateLimit?.({ node, rps });
  }

  #describe(control: NodeControl, change: RateChange): string {
    const line = describeRateChange({ ...change, rps: this.#effective(control) });
    // The operator's pause applies to every master: one line, not one per master.
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
      for (const reason of control.pace.state.throttled) now.add(reason);
    }
    for (const reason of new Set([...now, ...this.#active])) {
      if (now.has(reason) !== this.#active.has(reason)) {
        this.#options.observer?.onThrottle?.({ reason, active: now.has(reason) });
      }
    }
    this.#active = now;
  }
}
