/**
 * The health of one master as the throttle reads it, all from the server: its load (read when the
 * throttle asks), replica lag and memory, each optional.
 *
 * @module
 */
import { pause } from "../async/delay.ts";
import { classify } from "../redis/errors.ts";
import type { Redis } from "../redis/ioredis.ts";
import type { RunObserver } from "../run_events.ts";
import { headroom, mib, parseMemoryInfo } from "../safety/memory.ts";
import type { PauseSignals } from "./pace.ts";
import { type ReplicaLagLimit, type ReplicaLagWatch, watchReplicaLag } from "./replica_lag.ts";
import { type LoadCounters, type LoadDelta, loadDelta, readLoadCounters } from "./server_load.ts";

const MEMORY_EVERY_MS = 1000;

/** Options of {@linkcode NodeHealth.start}. */
export interface NodeHealthOptions {
  /** `host:port` of the master. */
  node: string;
  client: Redis;
  signal: AbortSignal;
  /** `--max-replica-lag`; `off` = no watcher (dry-run writes nothing to replicate). */
  replicaLag: ReplicaLagLimit;
  /** `--max-memory-pct`; undefined = no memory poll (dry-run writes nothing). */
  maxMemoryPct?: number;
  observer?: Pick<RunObserver, "onReplicaLag" | "onRedisReply" | "onRedisDown">;
}

/** The health sources of one master. */
export class NodeHealth {
  readonly node: string;
  readonly #options: NodeHealthOptions;
  readonly #lag: ReplicaLagWatch | undefined;
  #counters: LoadCounters | undefined;
  #down = false;
  #memoryOver = false;
  #memoryDetail = "";
  #memoryLoop: Promise<void> = Promise.resolve();

  private constructor(options: NodeHealthOptions) {
    const { node, observer, signal, replicaLag } = options;
    this.node = node;
    this.#options = options;
    this.#lag = replicaLag.kind === "off" ? undefined : watchReplicaLag(options.client, {
      node,
      limit: replicaLag,
      signal,
      onReplicaLag: (event) => observer?.onReplicaLag?.(event),
    });
  }

  /** Starts the sources: one memory read and nothing else, so the first write follows at once. */
  static async start(options: NodeHealthOptions): Promise<NodeHealth> {
    const health = new NodeHealth(options);
    if (options.maxMemoryPct !== undefined) {
      await health.refreshMemory();
      health.#memoryLoop = health.#pollMemory();
    }
    return health;
  }

  read(): Omit<PauseSignals, "operatorPaused"> {
    return {
      replicaLagOver: this.#lag?.over ?? false,
      memoryOver: this.#memoryOver,
      memoryDetail: this.#memoryDetail,
    };
  }

  /**
   * The interval since the last load reading; undefined for the first, after a failure or across
   * a restart. Tells the observer whether the node answers (also while the run is paused).
   */
  async readLoad(): Promise<LoadDelta | undefined> {
    const { node, observer } = this.#options;
    let counters: LoadCounters | undefined;
    try {
      counters = await readLoadCounters(this.#options.client, this.#counters?.connectedClients);
    } catch (error) {
      this.#counters = undefined;
      // A server that refuses the reading (an ACL, a managed service's renamed INFO) is up: it
      // answered. Only a lost one is reported down.
      const { outage, code } = classify(error);
      if (outage && !this.#down) observer?.onRedisDown?.({ node, reason: code });
      if (!outage) observer?.onRedisReply?.({ node });
      this.#down = outage;
      return undefined;
    }
    this.#down = false;
    observer?.onRedisReply?.({ node });
    const before = this.#counters;
    this.#counters = counters;
    return before && counters ? loadDelta(before, counters) : undefined;
  }

  /** Reads `INFO memory` now (after Redis refused a write). A failed read keeps the last verdict. */
  async refreshMemory(): Promise<void> {
    const pct = this.#options.maxMemoryPct;
    if (pct === undefined) return;
    try {
      const memory = parseMemoryInfo(await this.#options.client.info("memory"));
      // The bound the headroom check applies before the run, with nothing more to copy.
      const { limit, fits } = headroom(memory, 0, pct);
      this.#memoryOver = !fits;
      this.#memoryDetail = `Redis at ${this.node} uses ${mib(memory.used)}, above ${pct}% of ` +
        `maxmemory (${mib(limit)})`;
    } catch {
      // An unreachable master is the engine's outage handling, not a memory signal.
    }
  }

  /** Resolves once every poller stopped. */
  async closed(): Promise<void> {
    await Promise.all([this.#lag?.done, this.#memoryLoop]);
  }

  async #pollMemory(): Promise<void> {
    const { signal } = this.#options;
    while (await pause(MEMORY_EVERY_MS, { signal })) await this.refreshMemory();
  }
}
