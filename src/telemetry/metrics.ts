/**
 * The Prometheus metrics of a run: a dedicated prom-client registry and the observer that feeds it
 * from the engine's events. The seed's names (the outcome counters, the duration histogram, the
 * timestamps, `rps_limit`, `estimated_keys`, `completed`) keep their meaning: dashboards use them.
 * The gauges of the feedback loop (the effective rate, why the run holds back, how busy each
 * master is and how much of that is the backfill, replica lag, whether each node answers) are
 * registered from the start so dashboards and alerts can rely on them.
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

/**
 * Buckets of `relay_backfill_duration_seconds`. A default batch is 500 keys at 100 rps, about 5 s,
 * mostly spent waiting on the limiter; an unlimited batch takes milliseconds. The buckets span both.
 */
const BATCH_DURATION_BUCKETS = [
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
  120,
];

/** A registry that runs a hook once before each read (a scrape or a push), not once per metric. */
class FlushingRegistry extends Registry {
  beforeRead: () => void = () => {};
  override metrics(): Promise<string> {
    this.beforeRead();
    return super.metrics();
  }
}

/** The gauges of the control loop, per master (`node`) but for `throttled` (per `reason`). */
function registerControlGauges(registers: Registry[]) {
  const perNode = (name: string, help: string) =>
    new Gauge({ name, help, labelNames: ["node"] as const, registers });
  const gauges = {
    rateLimit: perNode(
      "relay_backfill_rate_limit",
      'Effective rate limit in jobs per second (0 = unlimited); node="_all" for a run-wide rate.',
    ),
    throttled: new Gauge({
      name: "relay_backfill_throttled",
      help: "1 while the run holds back on purpose for this reason, else 0.",
      labelNames: ["reason"] as const,
      registers,
    }),
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
  };
  for (const reason of THROTTLE_REASONS) gauges.throttled.set({ reason }, 0);
  return gauges;
}

/**
 * Registers the run-level metrics (batch duration, timestamps, rate limit, estimate, completion,
 * mode), then `relay_backfill_build_info` (set once: it never changes).
 * Registration order is the order `/metrics` lists them in, so it is kept as it was.
 */
function registerRunMetrics(registers: Registry[], version: string) {
  const gauge = (name: string, help: string) => new Gauge({ name, help, registers });
  const metrics = {
    duration: new Histogram({
      name: "relay_backfill_duration_seconds",
      help: "Wall time per processed batch (non-empty), limiter waits included.",
      buckets: BATCH_DURATION_BUCKETS,
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
    runInfo: new Gauge({
      name: "relay_backfill_run_info",
      help: "Always 1; the mode label says whether this run writes (execute) or not (dry-run).",
      labelNames: ["mode"] as const,
      registers,
    }),
  };
  new Gauge({
    name: "relay_backfill_build_info",
    help: "Always 1; labels carry the backfill version and the Deno runtime version.",
    labelNames: ["version", "deno"] as const,
    registers,
  }).set({ version, deno: Deno.version.deno }, 1);
  return metrics;
}

/** Options of {@linkcode BackfillMetrics}. */
export interface BackfillMetricsOptions {
  /** Version reported by `relay_backfill_build_info`. */
  version: string;
  /**
   * Label every per-key counter with the job's workspace id (default `true`). `false` collapses the
   * label to `_all`, for keyspaces with so many workspaces that one series each is too costly.
   */
  workspaceLabel?: boolean;
  /** Clock for the timestamp gauges (default: the wall clock). */
  clock?: TimerClock;
  /**
   * Nodes silent for too long right now (see `RunHealth.silentNodes`): their
   * `relay_backfill_redis_up` reads 0 at each scrape and push until they answer again.
   */
  silentNodes?: () => readonly string[];
}

/**
 * Prometheus metrics of one run, updated from {@linkcode RunObserver} events.
 *
 * @example
 * ```ts
 * import { BackfillMetrics } from "./metrics.ts";
 * const metrics = new BackfillMetrics({ version: "0.1.0" });
 * metrics.onStart({ mode: "dry-run", rps: 100, estimatedTotal: 10, progressKey: "ai:backfill" });
 * const text: string = await metrics.registry.metrics();
 * ```
 */
export class BackfillMetrics implements RunObserver {
  /** The dedicated registry (no default process metrics: their collectors assume Node internals). */
  readonly registry: Registry;
  readonly #clock: TimerClock;
  readonly #control: ReturnType<typeof registerControlGauges>;
  readonly #outcomes: OutcomeMetrics;
  readonly #run: ReturnType<typeof registerRunMetrics>;
  /** The throttle reported the run-wide rate (`node="_all"`): the start does not overwrite it. */
  #allReported = false;

  /** Registers every metric in a fresh registry. */
  constructor(options: BackfillMetricsOptions) {
    this.#clock = options.clock ?? wallClock;
    const registry = new FlushingRegistry();
    this.registry = registry;
    const registers = [registry];
    this.#outcomes = new OutcomeMetrics({
      registry,
      workspaceLabel: options.workspaceLabel ?? true,
    });
    this.#control = registerControlGauges(registers);
    const silentNodes = options.silentNodes;
    registry.beforeRead = () => {
      this.#outcomes.flush();
      // Nodes silent too long (a frozen Redis sends no error) read down until they answer.
      for (const node of silentNodes?.() ?? []) this.#control.redisUp.set({ node }, 0);
    };
    this.#run = registerRunMetrics(registers, options.version);
  }

  /**
   * Records the run's mode, rate limit, start time, first estimate and carried-over totals. The
   * configured --rps is the run-wide rate, unless the throttle already reported it: with one master
   * the throttle's rate is the run-wide one, and it is reported before the engine starts (a run that
   * starts yielding to a busy Redis must not read "unlimited" until its next change).
   */
  onStart(start: RunStart): void {
    const now = this.#clock.now() / 1000;
    this.#run.runInfo.reset();
    this.#run.runInfo.set({ mode: start.mode }, 1);
    this.#run.rpsLimit.set(start.rps);
    this.#run.estimated.set(start.estimatedTotal);
    this.#run.start.set(now);
    this.#run.lastProgress.set(now);
    this.#run.end.set(0);
    this.#run.running.set(1);
    this.#run.completed.set(0);
    if (start.carried) this.#outcomes.carry(start.carried);
    if (!this.#allReported) this.#control.rateLimit.set({ node: ALL_NODES }, start.rps);
  }

  /**
   * Counts every key of the batch under its outcome and workspace, and marks the batch done (which
   * proves its node answered).
   */
  onBatch(batch: BatchReport): void {
    this.#outcomes.record(batch.results);
    if (batch.results.length > 0 && Number.isFinite(batch.seconds) && batch.seconds >= 0) {
      // Empty SCAN pages would pile up in the lowest bucket and hide the real batch latency.
      this.#run.duration.observe(batch.seconds);
    }
    this.#run.estimated.set(batch.estimatedTotal);
    const now = this.#clock.now() / 1000;
    this.#run.lastSuccess.set(now);
    this.#run.lastProgress.set(now);
    this.#control.redisUp.set({ node: batch.node }, 1);
  }

  /** Adds limiter wait time. */
  onLimiterWait(seconds: number): void {
    // prom-client throws on a negative increment; a clock hiccup must not break the run.
    if (Number.isFinite(seconds) && seconds > 0) this.#run.limiterWait.inc(seconds);
  }

  /** Records an effective rate. */
  onRateLimit(event: RateLimitEvent): void {
    if (Number.isFinite(event.rps) && event.rps >= 0) {
      this.#control.rateLimit.set({ node: event.node }, event.rps);
      if (event.node === ALL_NODES) this.#allReported = true;
    }
  }

  /** Turns a throttle reason on or off. */
  onThrottle(event: ThrottleEvent): void {
    if ((THROTTLE_REASONS as readonly string[]).includes(event.reason)) {
      this.#control.throttled.set({ reason: event.reason }, event.active ? 1 : 0);
    }
  }

  /** Records a master's load. */
  onServerLoad(event: ServerLoadEvent): void {
    const node = { node: event.node };
    if (Number.isFinite(event.busy)) this.#control.redisBusy.set(node, event.busy);
    if (Number.isFinite(event.backfill)) this.#control.redisBackfill.set(node, event.backfill);
    if (event.shared !== undefined) this.#control.redisShared.set(node, event.shared ? 1 : 0);
  }

  /** Records a replica's lag. */
  onReplicaLag(event: ReplicaLagEvent): void {
    if (Number.isFinite(event.bytes)) {
      this.#control.replicaLag.set({ node: event.node }, event.bytes);
    }
  }

  /** The node answers. */
  onRedisReply(event: RedisReplyEvent): void {
    this.#control.redisUp.set({ node: event.node }, 1);
  }

  /** The node stopped answering. */
  onRedisDown(event: RedisDownEvent): void {
    this.#control.redisUp.set({ node: event.node }, 0);
  }

  /** Records the end: every pending count applied, not running, completed or not. */
  onEnd(summary: Summary): void {
    this.#outcomes.flush(true);
    this.#run.completed.set(summary.completed ? 1 : 0);
    this.#run.running.set(0);
    this.#run.end.set(this.#clock.now() / 1000);
    // A run that ended holds nothing back: a last push must not show it throttled forever.
    for (const reason of THROTTLE_REASONS) this.#control.throttled.set({ reason }, 0);
  }
}
