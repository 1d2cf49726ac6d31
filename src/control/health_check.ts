/**
 * The health of one master as the throttle reads it: the latency probe's added p99, the replica-lag
 * watcher and a memory poll, each optional. Starting it measures the probe's baseline, so it must be
 * awaited before the run's first write. Everything it learns also goes to the observer (metrics,
 * health): probe rounds, replica lag, replies and a node that stopped answering.
 *
 * @module
 */
import { delay } from "../async/delay.ts";
import type { Redis } from "../redis/ioredis.ts";
import type { RunObserver } from "../run_events.ts";
import { mib, parseMemoryInfo } from "../safety/memory.ts";
import { LatencyProbe } from "./probe.ts";
import { type ReplicaLagLimit, type ReplicaLagWatch, watchReplicaLag } from "./replica_lag.ts";

/** Options of {@linkcode NodeHealth.start}. */
export interface NodeHealthOptions {
  /** `host:port` of the master. */
  node: string;
  /** The master. The probe opens its own connection with the same settings. */
  client: Redis;
  /** Stops every poller and closes the probe. */
  signal: AbortSignal;
  /** `--max-latency` in ms; 0 = no probe. */
  maxLatencyMs: number;
  /** `--max-replica-lag`; `off` = no watcher (dry-run writes nothing to replicate). */
  replicaLag: ReplicaLagLimit;
  /** `--max-memory-pct`; undefined = no memory poll (dry-run writes nothing). */
  maxMemoryPct?: number;
  observer?: Pick<RunObserver, "onProbe" | "onReplicaLag" | "onRedisReply" | "onRedisDown">;
  /** Milliseconds between memory reads. Default 1000. */
  memoryEveryMs?: number;
  /** PINGs that make the probe's baseline (default 200: two seconds). */
  baselineSamples?: number;
}

/** What the health of one master says now. */
export interface HealthReading {
  latencyOver: boolean;
  replicaLagOver: boolean;
  memoryOver: boolean;
}

/** The health sources of one master. */
export class NodeHealth {
  readonly node: string;
  readonly #options: NodeHealthOptions;
  readonly #probe: LatencyProbe | undefined;
  readonly #lag: ReplicaLagWatch | undefined;
  #memoryOver = false;
  /** Why memory is over, for the log line (no values, only sizes). */
  #memoryDetail = "";
  #memoryLoop: Promise<void> = Promise.resolve();

  private constructor(
    options: NodeHealthOptions,
    probe: LatencyProbe | undefined,
    lag: ReplicaLagWatch | undefined,
  ) {
    this.node = options.node;
    this.#options = options;
    this.#probe = probe;
    this.#lag = lag;
  }

  /** Starts the sources; resolves once the probe's baseline is measured (about 2 s). */
  static async start(options: NodeHealthOptions): Promise<NodeHealth> {
    const { node, observer, signal } = options;
    const probe = options.maxLatencyMs > 0
      ? await LatencyProbe.start(options.client, {
        node,
        signal,
        baselineSamples: options.baselineSamples,
        onProbe: (reading) => observer?.onProbe?.(reading),
        onRedisReply: (event) => observer?.onRedisReply?.(event),
        onRedisDown: (event) => observer?.onRedisDown?.(event),
      })
      : undefined;
    const lag = options.replicaLag.kind === "off" ? undefined : watchReplicaLag(options.client, {
      node,
      limit: options.replicaLag,
      signal,
      onReplicaLag: (event) => observer?.onReplicaLag?.(event),
    });
    const health = new NodeHealth(options, probe, lag);
    if (options.maxMemoryPct !== undefined) {
      await health.refreshMemory();
      health.#memoryLoop = health.#pollMemory();
    }
    return health;
  }

  /** The probe's baseline p99 in ms (0 without a probe). */
  get baselineMs(): number {
    return this.#probe?.baselineMs ?? 0;
  }

  /** The probe's added p99 in ms now (0 without a probe). */
  get addedMs(): number {
    return this.#probe?.snapshot().addedMs ?? 0;
  }

  /** The memory reading behind a memory pause, e.g. `uses 9.1 MiB, above 90% of 10.0 MiB`. */
  get memoryDetail(): string {
    return this.#memoryDetail;
  }

  /** The signals now. */
  read(): HealthReading {
    return {
      latencyOver: this.#probe !== undefined && this.addedMs > this.#options.maxLatencyMs,
      replicaLagOver: this.#lag?.over ?? false,
      memoryOver: this.#memoryOver,
    };
  }

  /** Reads `INFO memory` now (after Redis refused a write). A failed read keeps the last verdict. */
  async refreshMemory(): Promise<void> {
    const pct = this.#options.maxMemoryPct;
    if (pct === undefined) return;
    try {
      const memory = parseMemoryInfo(await this.#options.client.info("memory"));
      const limit = memory.max * (pct / 100);
      this.#memoryOver = memory.max > 0 && memory.used > limit;
      this.#memoryDetail = `Redis at ${this.node} uses ${mib(memory.used)}, above ${pct}% of ` +
        `maxmemory (${mib(limit)})`;
    } catch {
      // An unreachable master is the engine's outage handling, not a memory signal.
    }
  }

  /** Resolves when every poller has stopped (after the signal aborted). */
  async closed(): Promise<void> {
    await Promise.all([this.#probe?.close(), this.#lag?.done, this.#memoryLoop]);
  }

  async #pollMemory(): Promise<void> {
    const { signal } = this.#options;
    while (!signal.aborted) {
      await delay(this.#options.memoryEveryMs ?? 1000, { signal }).catch(() => {});
      if (!signal.aborted) await this.refreshMemory();
    }
  }
}
