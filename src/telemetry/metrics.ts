/**
 * The Prometheus metrics of a run: a dedicated registry and the observer that feeds it. Dashboards
 * and alerts rely on these names, and on every control-loop gauge existing from the start.
 *
 * @module
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import {
  ALL_NODES,
  type BatchReport,
  type RateLimitEvent,
  type RedisDownEvent,
  type RedisReplyEvent,
  type ReplicaLagEvent,
  type RunObserver,
  type RunStart,
  type ServerLoadEvent,
  type Summary,
  THROTTLE_REASONS,
  type ThrottleEvent,
} from "../run_events.ts";
import { type TimerClock, wallClock } from "../async/clock.ts";
import { OutcomeMetrics } from "./outcome_metrics.ts";

/** A registry that runs a hook once before each read (a scrape or a push), not once per metric. */
class FlushingRegistry extends Registry {
  beforeRead: () => void = () => {};
  override metrics(): Promise<string> {
    this.beforeRead();
    return super.metrics();
  }
}

/** Control-loop gauges (per master `node`), run metrics, then build_info; in `/metrics` order. */
function registerRunMetrics(registry: Registry, version: string) {
  const registers = [registry];
  const gauge = <L extends string = never>(name: string, help: string, labelNames: L[] = []) =>
    new Gauge<L>({ name, help, labelNames, registers });
  const perNode = (name: string, help: string) => gauge(name, help, ["node"]);
  const metrics = {
    rateLimit: perNode(
      "relay_backfill_rate_limit",
      'Effective rate limit in jobs per second (0 = unlimited); node="_all" for a run-wide rate.',
    ),
    throttled: gauge(
      "relay_backfill_throttled",
      "1 while the run holds back on purpose for this reason, else 0.",
      ["reason"],
    ),
    redisBusy: perNode(
      "relay_backfill_redis_busy_ratio",
      "Share of the last ~200 ms Redis's main thread was on the CPU (INFO cpu), 0-1.",
    ),
    redisBackfill: perNode(
      "relay_backfill_redis_backfill_ratio",
      "Share of the last ~200 ms Redis ran the backfill's own commands (INFO commandstats), 0-1.",
    ),
    redisShared: perNode(
      "relay_backfill_redis_shared",
      "1 while another client is active on the master (calls in flight follow --max-latency), 0 while none is.",
    ),
    replicaLag: perNode(
      "relay_backfill_replica_lag_bytes",
      "Replication lag of a replica behind its master, in bytes.",
    ),
    redisUp: perNode(
      "relay_backfill_redis_up",
      "1 while the node answers, 0 after it stopped answering (until it answers again).",
    ),
    duration: new Histogram({
      name: "relay_backfill_duration_seconds",
      help: "Wall time per processed batch (non-empty), limiter waits included.",
      // A default batch (500 keys at 100 rps) takes ~5 s, an unlimited one milliseconds: span both.
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers,
    }),
    lastSuccess: gauge(
      "relay_backfill_last_success_timestamp_seconds",
      "Unix time the last batch was fully processed (0 before the first).",
    ),
    lastProgress: gauge(
      "relay_backfill_last_progress_timestamp_seconds",
      "Unix time of the last sign of progress: the start, then each processed batch.",
    ),
    start: gauge("relay_backfill_start_timestamp_seconds", "Unix time the run started."),
    end: gauge(
      "relay_backfill_end_timestamp_seconds",
      "Unix time the run ended (0 while it runs).",
    ),
    running: gauge("relay_backfill_running", "1 while the run is going, 0 after it ended."),
    rpsLimit: gauge(
      "relay_backfill_rps_limit",
      "Configured --rps: jobs per second at most (0 = unlimited).",
    ),
    limiterWait: new Counter({
      name: "relay_backfill_limiter_wait_seconds_total",
      help: "Time the rate limiter held the run back.",
      registers,
    }),
    estimated: gauge(
      "relay_backfill_estimated_keys",
      "Estimated old keys in scope for this run (DBSIZE-based, refined as the scan goes).",
    ),
    completed: gauge(
      "relay_backfill_completed",
      "1 once the scan reached its end on every node; 0 while running or when stopped early.",
    ),
    runInfo: gauge(
      "relay_backfill_run_info",
      "Always 1; the mode label says whether this run writes (execute) or not (dry-run).",
      ["mode"],
    ),
  };
  for (const reason of THROTTLE_REASONS) metrics.throttled.set({ reason }, 0);
  gauge(
    "relay_backfill_build_info",
    "Always 1; labels carry the backfill version and the Deno runtime version.",
    ["version", "deno"],
  ).set({ version, deno: Deno.version.deno }, 1);
  return metrics;
}

export interface BackfillMetricsOptions {
  /** For `relay_backfill_build_info`. */
  version: string;
  /** `false` collapses `workspace_id` to `_all`, when one series per workspace costs too much. */
  workspaceLabel?: boolean;
  clock?: TimerClock;
  /** Nodes silent too long now (`RunHealth.silentNodes`): their `redis_up` reads 0. */
  silentNodes?: () => readonly string[];
}

/** Prometheus metrics of one run, updated from {@linkcode RunObserver} events. */
export class BackfillMetrics implements RunObserver {
  /** No default process metrics: their collectors assume Node internals. */
  readonly registry: Registry;
  readonly #clock: TimerClock;
  readonly #outcomes: OutcomeMetrics;
  readonly #metrics: ReturnType<typeof registerRunMetrics>;
  /** The throttle reported the run-wide rate (`node="_all"`): the start does not overwrite it. */
  #allReported = false;

  constructor(options: BackfillMetricsOptions) {
    this.#clock = options.clock ?? wallClock;
    const registry = new FlushingRegistry();
    this.registry = registry;
    const workspaceLabel = options.workspaceLabel ?? true;
    this.#outcomes = new OutcomeMetrics({ registry, workspaceLabel });
    this.#metrics = registerRunMetrics(registry, options.version);
    registry.beforeRead = () => {
      this.#outcomes.flush();
      // Nodes silent too long (a frozen Redis sends no error) read down until they answer.
      for (const node of options.silentNodes?.() ?? []) this.#metrics.redisUp.set({ node }, 0);
    };
  }

  /**
   * The configured --rps is the run-wide rate unless the throttle already reported it (with one
   * master it does, before the engine starts: a run yielding to a busy Redis must not read
   * "unlimited" until its next change).
   */
  onStart(start: RunStart): void {
    const now = this.#clock.now() / 1000;
    this.#metrics.runInfo.reset();
    this.#metrics.runInfo.set({ mode: start.mode }, 1);
    this.#metrics.rpsLimit.set(start.rps);
    this.#metrics.estimated.set(start.estimatedTotal);
    this.#metrics.start.set(now);
    this.#metrics.lastProgress.set(now);
    this.#metrics.end.set(0);
    this.#metrics.running.set(1);
    this.#metrics.completed.set(0);
    if (start.carried) this.#outcomes.carry(start.carried);
    if (!this.#allReported) this.#metrics.rateLimit.set({ node: ALL_NODES }, start.rps);
  }

  /** Counts the batch's keys; a batch done also proves its node answered. */
  onBatch(batch: BatchReport): void {
    this.#outcomes.record(batch.results);
    if (batch.results.length > 0 && Number.isFinite(batch.seconds) && batch.seconds >= 0) {
      // Empty SCAN pages would pile up in the lowest bucket and hide the real batch latency.
      this.#metrics.duration.observe(batch.seconds);
    }
    this.#metrics.estimated.set(batch.estimatedTotal);
    const now = this.#clock.now() / 1000;
    this.#metrics.lastSuccess.set(now);
    this.#metrics.lastProgress.set(now);
    this.#metrics.redisUp.set({ node: batch.node }, 1);
  }

  onLimiterWait(seconds: number): void {
    // prom-client throws on a negative increment; a clock hiccup must not break the run.
    if (Number.isFinite(seconds) && seconds > 0) this.#metrics.limiterWait.inc(seconds);
  }

  onRateLimit(event: RateLimitEvent): void {
    if (Number.isFinite(event.rps) && event.rps >= 0) {
      this.#metrics.rateLimit.set({ node: event.node }, event.rps);
      if (event.node === ALL_NODES) this.#allReported = true;
    }
  }

  onThrottle(event: ThrottleEvent): void {
    this.#metrics.throttled.set({ reason: event.reason }, event.active ? 1 : 0);
  }

  onServerLoad(event: ServerLoadEvent): void {
    const node = { node: event.node };
    if (Number.isFinite(event.busy)) this.#metrics.redisBusy.set(node, event.busy);
    if (Number.isFinite(event.backfill)) this.#metrics.redisBackfill.set(node, event.backfill);
    if (event.shared !== undefined) this.#metrics.redisShared.set(node, event.shared ? 1 : 0);
  }

  onReplicaLag(event: ReplicaLagEvent): void {
    if (Number.isFinite(event.bytes)) {
      this.#metrics.replicaLag.set({ node: event.node }, event.bytes);
    }
  }

  onRedisReply(event: RedisReplyEvent): void {
    this.#metrics.redisUp.set({ node: event.node }, 1);
  }

  onRedisDown(event: RedisDownEvent): void {
    this.#metrics.redisUp.set({ node: event.node }, 0);
  }

  onEnd(summary: Summary): void {
    this.#outcomes.flush(true);
    this.#metrics.completed.set(summary.completed ? 1 : 0);
    this.#metrics.running.set(0);
    this.#metrics.end.set(this.#clock.now() / 1000);
    // A run that ended holds nothing back: a last push must not show it throttled forever.
    for (const reason of THROTTLE_REASONS) this.#metrics.throttled.set({ reason }, 0);
  }
}
