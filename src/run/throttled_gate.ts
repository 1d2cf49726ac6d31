/**
 * The run's gate with the pace in it: per master a {@linkcode NodeHealth} (load as the server
 * reports it, replica lag, memory), one {@linkcode Throttle} over them, and the `--rps` cap. A dry
 * run writes nothing (no lag, no memory to fill) but its reads load Redis too: the critical-load
 * yield and the cap apply to it.
 *
 * @module
 */
import { Gate } from "./copier.ts";
import { NodeHealth } from "../control/health_check.ts";
import { type RateLimiter, SlidingWindowLimiter } from "../control/rate_limit.ts";
import type { ReplicaLagLimit } from "../control/replica_lag.ts";
import { Throttle } from "../control/throttle.ts";
import type { RedisTarget } from "../redis/target.ts";
import type { Logger, RunMode, RunObserver } from "../run_events.ts";

interface ThrottledGateOptions {
  mode: RunMode;
  /** `--rps`: the hard cap, 0 = none. */
  rps: number;
  /** `--max-latency` in ms; 0 = raw speed: no critical-load yield (the pauses still apply). */
  maxLatencyMs: number;
  /** `--critical-load` in % (default 90). */
  criticalLoadPct?: number;
  maxReplicaLag: ReplicaLagLimit;
  maxMemoryPct: number;
  logger: Logger;
  observer?: RunObserver;
  /** Aborts the start (SIGINT/SIGTERM while starting). */
  signal?: AbortSignal;
}

/** A running throttled gate; {@linkcode ThrottledGate.close} it after the run. */
export interface ThrottledGate {
  gate: Gate;
  throttle: Throttle;
  close(): Promise<void>;
}

/** Starts the health sources of every master and the throttle over them. */
export async function startThrottledGate(
  target: Pick<RedisTarget, "masters" | "nodeName">,
  options: ThrottledGateOptions,
): Promise<ThrottledGate> {
  const halt = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, halt.signal]) : halt.signal;
  const execute = options.mode === "execute";
  const started = await Promise.allSettled(
    target.masters().map((client) =>
      NodeHealth.start({
        node: target.nodeName(client),
        client,
        signal,
        replicaLag: execute ? options.maxReplicaLag : { kind: "off" },
        maxMemoryPct: execute ? options.maxMemoryPct : undefined,
        observer: options.observer,
      })
    ),
  );
  const nodes = started.flatMap((s) => s.status === "fulfilled" ? [s.value] : []);
  const closeAll = async () => {
    halt.abort();
    await Promise.all(nodes.map((node) => node.closed()));
  };
  const failed = started.find((s): s is PromiseRejectedResult => s.status === "rejected");
  if (failed) {
    await closeAll();
    throw failed.reason;
  }
  const criticalBusy = (options.criticalLoadPct ?? 90) / 100;
  const throttle = new Throttle({
    nodes,
    capRps: options.rps,
    adaptive: options.maxLatencyMs > 0,
    // Yield at --critical-load, recover 10 points below.
    pace: { criticalBusy, recoverBusy: Math.max(0, criticalBusy - 0.1) },
    logger: options.logger,
    observer: options.observer,
  });
  const runLimiter = new SlidingWindowLimiter(options.rps);
  const gate = new Gate(runLimiter, throttle);
  const ticking = throttle.run(signal);
  return {
    gate,
    throttle,
    async close() {
      await closeAll();
      await ticking;
    },
  };
}

/** `verify --full`'s limiter with the critical-load yield in it; close it after the verify. */
interface VerifyPace {
  limiter: RateLimiter;
  /** Whether another client is active on a master (control/pace.ts); always with raw speed. */
  shared(node: string): boolean;
  close(): Promise<void>;
}

/**
 * The pace of `verify --full`: a run's controller with no pauses (a verify writes nothing). Its
 * work is not admitted per master, so the master that yields most sets the rate of all.
 */
export async function startVerifyPace(
  target: Pick<RedisTarget, "masters" | "nodeName">,
  options: Omit<ThrottledGateOptions, "mode" | "maxReplicaLag" | "maxMemoryPct">,
): Promise<VerifyPace> {
  const cap = new SlidingWindowLimiter(options.rps);
  if (!(options.maxLatencyMs > 0)) {
    return { limiter: cap, shared: () => true, close: () => Promise.resolve() };
  }
  const gate = await startThrottledGate(target, {
    ...options,
    mode: "dry-run",
    maxReplicaLag: { kind: "off" },
    maxMemoryPct: 100,
  });
  const { throttle } = gate;
  const slowest = new SlidingWindowLimiter(0);
  return {
    limiter: {
      get rps() {
        return options.rps;
      },
      async acquire(n: number, signal?: AbortSignal): Promise<number> {
        const started = performance.now();
        await throttle.waitAll(signal);
        slowest.setRps(throttle.slowestRps);
        await cap.acquire(n, signal);
        await slowest.acquire(n, signal);
        return (performance.now() - started) / 1000;
      },
    },
    shared: (node) => throttle.shared(node),
    close: () => gate.close(),
  };
}
