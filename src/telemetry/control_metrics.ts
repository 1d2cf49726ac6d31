/**
 * The metrics of the run's feedback loop: the effective rate, why the run holds back, how busy each
 * master is and how much of that is the backfill, replica lag and whether each Redis node answers. Registered from the start so dashboards
 * and alerts can rely on them; fed by the optional {@linkcode RunObserver} hooks, and until the
 * engine emits those, by what it already reports (batches, outages).
 *
 * @module
 */
import { Gauge, type Registry } from "prom-client";
import {
  type BatchReport,
  type RateLimitEvent,
  type RedisDownEvent,
  type RedisReplyEvent,
  type ReplicaLagEvent,
  type RunObserver,
  type RunStart,
  type ServerLoadEvent,
  THROTTLE_REASONS,
  type ThrottleEvent,
} from "../run_events.ts";

/** `node` label of a rate that applies to the whole run. */
export const ALL_NODES_LABEL = "_all";

/** Gauges of the control loop, updated from observer hooks. */
export class ControlMetrics implements RunObserver {
  readonly #rateLimit: Gauge<"node">;
  readonly #throttled: Gauge<"reason">;
  readonly #redisBusy: Gauge<"node">;
  readonly #redisBackfill: Gauge<"node">;
  readonly #redisShared: Gauge<"node">;
  readonly #replicaLag: Gauge<"node">;
  readonly #redisUp: Gauge<"node">;
  /** The throttle reported the run-wide rate (`node="_all"`): the start does not overwrite it. */
  #allReported = false;

  /** Registers the gauges in `registry`; every throttle reason starts at 0. */
  constructor(registry: Registry) {
    const registers = [registry];
    const perNode = (name: string, help: string) =>
      new Gauge({ name, help, labelNames: ["node"] as const, registers });
    this.#rateLimit = perNode(
      "relay_backfill_rate_limit",
      'Effective rate limit in jobs per second (0 = unlimited); node="_all" for a run-wide rate.',
    );
    this.#throttled = new Gauge({
      name: "relay_backfill_throttled",
      help: "1 while the run holds back on purpose for this reason, else 0.",
      labelNames: ["reason"] as const,
      registers,
    });
    for (const reason of THROTTLE_REASONS) this.#throttled.set({ reason }, 0);
    this.#redisBusy = perNode(
      "relay_backfill_redis_busy_ratio",
      "Share of the last ~200 ms Redis's main thread was on the CPU (INFO cpu), 0-1.",
    );
    this.#redisBackfill = perNode(
      "relay_backfill_redis_backfill_ratio",
      "Share of the last ~200 ms Redis ran the backfill's own commands (INFO commandstats), 0-1.",
    );
    this.#redisShared = perNode(
      "relay_backfill_redis_shared",
      "1 while another client is active on the master (calls in flight follow --max-latency), 0 while none is.",
    );
    this.#replicaLag = perNode(
      "relay_backfill_replica_lag_bytes",
      "Replication lag of a replica behind its master, in bytes.",
    );
    this.#redisUp = perNode(
      "relay_backfill_redis_up",
      "1 while the node answers, 0 after it stopped answering (until it answers again).",
    );
  }

  /**
   * The configured --rps is the run-wide rate, unless the throttle already reported it: with one
   * master the throttle's rate is the run-wide one, and it is reported before the engine starts
   * (a run that starts yielding to a busy Redis must not read "unlimited" until its next change).
   */
  onStart(start: RunStart): void {
    if (this.#allReported) return;
    this.#rateLimit.set({ node: ALL_NODES_LABEL }, start.rps);
  }

  /** A finished batch proves its node answered. */
  onBatch(batch: BatchReport): void {
    this.#redisUp.set({ node: batch.node }, 1);
  }

  /** Records an effective rate. */
  onRateLimit(event: RateLimitEvent): void {
    if (Number.isFinite(event.rps) && event.rps >= 0) {
      this.#rateLimit.set({ node: event.node }, event.rps);
      if (event.node === ALL_NODES_LABEL) this.#allReported = true;
    }
  }

  /** Turns a throttle reason on or off. */
  onThrottle(event: ThrottleEvent): void {
    if ((THROTTLE_REASONS as readonly string[]).includes(event.reason)) {
      this.#throttled.set({ reason: event.reason }, event.active ? 1 : 0);
    }
  }

  /** Records a master's load. */
  onServerLoad(event: ServerLoadEvent): void {
    if (Number.isFinite(event.busy)) this.#redisBusy.set({ node: event.node }, event.busy);
    if (Number.isFinite(event.backfill)) {
      this.#redisBackfill.set({ node: event.node }, event.backfill);
    }
    if (event.shared !== undefined) {
      this.#redisShared.set({ node: event.node }, event.shared ? 1 : 0);
    }
  }

  /** Records a replica's lag. */
  onReplicaLag(event: ReplicaLagEvent): void {
    if (Number.isFinite(event.bytes)) this.#replicaLag.set({ node: event.node }, event.bytes);
  }

  /** The node answers. */
  onRedisReply(event: RedisReplyEvent): void {
    this.#redisUp.set({ node: event.node }, 1);
  }

  /** These nodes have been silent too long (a frozen Redis sends no error): down until a reply. */
  markSilent(nodes: readonly string[]): void {
    for (const node of nodes) this.#redisUp.set({ node }, 0);
  }

  /** The node stopped answering. */
  onRedisDown(event: RedisDownEvent): void {
    this.#redisUp.set({ node: event.node }, 0);
  }

  /** A run that ended holds nothing back: a last push must not show it throttled forever. */
  onEnd(): void {
    for (const reason of THROTTLE_REASONS) this.#throttled.set({ reason }, 0);
  }
}
