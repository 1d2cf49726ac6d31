/**
 * Builds the run's gate with the health-aware throttle in it: per master a {@linkcode NodeHealth}
 * (latency probe, replica lag, memory), one {@linkcode Throttle} over them, and the run-wide
 * `--rps` cap. Starting it measures each probe's baseline, so it is awaited before the first write.
 *
 * What applies in which mode: `--execute` gets every signal. A dry run writes nothing, so there is
 * no replication stream to lag and no memory to fill, but it reads (one read-only script per
 * sub-batch), and reads slow the application too: the latency throttle and the cap apply to it.
 *
 * @module
 */
import { type ControlTargets } from "./live_control.ts";
import { Gate } from "../control/gate.ts";
import { NodeHealth } from "../control/health_check.ts";
import type { ReplicaLagLimit } from "../control/replica_lag.ts";
import { RetunableLimiter } from "../control/retunable.ts";
import { Throttle } from "../control/throttle.ts";
import type { RedisTarget } from "../redis/target.ts";
import type { Logger, RunMode, RunObserver } from "../run_events.ts";

/** Options of {@linkcode startThrottledGate}. */
export interface ThrottledGateOptions {
  mode: RunMode;
  /** `--rps`: the hard cap, 0 = none. */
  rps: number;
  /** `--max-latency` in ms; 0 = no probe, no adaptation. */
  maxLatencyMs: number;
  maxReplicaLag: ReplicaLagLimit;
  /** `--max-memory-pct`. */
  maxMemoryPct: number;
  logger: Logger;
  observer?: RunObserver;
  /** Aborts the baseline measurement (SIGINT/SIGTERM while starting). */
  signal?: AbortSignal;
  /** PINGs of each probe's baseline (default 200: two seconds). */
  baselineSamples?: number;
}

/** A running throttled gate; {@linkcode ThrottledGate.close} it after the run. */
export interface ThrottledGate {
  gate: Gate;
  throttle: Throttle;
  /** What live control acts on (operator pause, cap, status view). */
  targets: ControlTargets;
  /** Stops the ticks, the probes and the pollers. */
  close(): Promise<void>;
}

/** Starts the health sources of every master and the throttle over them. */
export async function startThrottledGate(
  target: Pick<RedisTarget, "masters" | "nodeName">,
  options: ThrottledGateOptions,
): Promise<ThrottledGate> {
  const halt = new AbortController();
  const onAbort = () => halt.abort();
  options.signal?.addEventListener("abort", onAbort, { once: true });
  const execute = options.mode === "execute";
  const started = await Promise.allSettled(
    target.masters().map((client) =>
      NodeHealth.start({
        node: target.nodeName(client),
        client,
        signal: halt.signal,
        maxLatencyMs: options.maxLatencyMs,
        replicaLag: execute ? options.maxReplicaLag : { kind: "off" },
        maxMemoryPct: execute ? options.maxMemoryPct : undefined,
        observer: options.observer,
        baselineSamples: options.baselineSamples,
      })
    ),
  );
  const nodes = started.flatMap((s) => s.status === "fulfilled" ? [s.value] : []);
  const closeAll = async () => {
    halt.abort();
    options.signal?.removeEventListener("abort", onAbort);
    await Promise.all(nodes.map((node) => node.closed()));
  };
  const failed = started.find((s): s is PromiseRejectedResult => s.status === "rejected");
  if (failed) {
    await closeAll();
    throw failed.reason;
  }
  const throttle = new Throttle({
    nodes,
    capRps: options.rps,
    maxLatencyMs: options.maxLatencyMs,
    logger: options.logger,
    observer: options.observer,
  });
  for (const node of nodes) {
    if (options.maxLatencyMs > 0) {
      options.logger.log(
        "info",
        "probe_baseline",
        `latency baseline of ${node.node}: p99 ${node.baselineMs.toFixed(2)} ms; the rate adapts ` +
          `to keep the added p99 under ${options.maxLatencyMs} ms`,
        { node: node.node },
      );
    }
  }
  const runLimiter = new RetunableLimiter(options.rps);
  const gate = new Gate(runLimiter, [throttle], {
    nodeLimiter: (node) => throttle.limiterFor(node),
  });
  const ticking = throttle.run(halt.signal);
  return {
    gate,
    throttle,
    targets: {
      setPaused: (paused) => throttle.setPaused(paused),
      setCap: (rps) => {
        runLimiter.setRps(rps);
        throttle.setCap(rps);
      },
      view: () => throttle.view(),
    },
    async close() {
      await closeAll();
      await ticking;
    },
  };
}
