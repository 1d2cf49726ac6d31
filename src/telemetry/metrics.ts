/**
 * The Prometheus metrics of a run: a dedicated prom-client registry and the observer that feeds it
 * from the engine's events. The seed's names (the outcome counters, the duration histogram, the
 * timestamps, `rps_limit`, `estimated_keys`, `completed`) keep their meaning: dashboards use them.
 *
 * @module
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type {
  BatchReport,
  RateLimitEvent,
  RedisDownEvent,
  RedisReplyEvent,
  ReplicaLagEvent,
  RunObserver,
  RunStart,
  ServerLoadEvent,
  Summary,
  ThrottleEvent,
} from "../run_events.ts";
import { type TimerClock, wallClock } from "../async/clock.ts";
import { ControlMetrics } from "./control_metrics.ts";
import { OutcomeMetrics } from "./outcome_metrics.ts";

export {
  ALL_WORKSPACES_LABEL,
  INVALID_WORKSPACE_LABEL,
  UNKNOWN_INVALID_REASON,
} from "./outcome_metrics.ts";

/**
 * Buckets of `relay_backfill_duration_seconds`. A default batch is 500 keys at 100 rps, about 5 s,
 * mostly spent waiting on the limiter; an unlimited batch takes milliseconds. The buckets span both.
 */
export const BATCH_DURATION_BUCKETS: readonly number[] = [
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

/** The run-level metrics: batch duration, timestamps, rate limit, estimate, completion, mode. */
interface RunMetrics {
  readonly duration: Histogram;
  readonly lastSuccess: Gauge;
  readonly lastProgress: Gauge;
  readonly start: Gauge;
  readonly end: Gauge;
  readonly running: Gauge;
  readonly rpsLimit: Gauge;
  readonly limiterWait: Counter;
  readonly estimated: Gauge;
  readonly completed: Gauge;
  readonly runInfo: Gauge<"mode">;
}

/**
 * Registers the run-level metrics, then `relay_backfill_build_info` (set once: it never changes).
 * Registration order is the order `/metrics` lists them in, so it is kept as it was.
 */
function registerRunMetrics(registers: Registry[], version: string): RunMetrics {
  const gauge = (name: string, help: string) => new Gauge({ name, help, registers });
  const metrics: RunMetrics = {
    duration: new Histogram({
      name: "relay_backfill_duration_seconds",
      help: "Wall time per processed batch (non-empty), limiter waits included.",
      buckets: [...BATCH_DURATION_BUCKETS],
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
  readonly #control: ControlMetrics;
  readonly #outcomes: OutcomeMetrics;
  readonly #run: RunMetrics;

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
    this.#control = new ControlMetrics(registry);
    const silentNodes = options.silentNodes;
    registry.beforeRead = () => {
      this.#outcomes.flush();
      if (silentNodes) this.#control.markSilent(silentNodes());
    };
    this.#run = registerRunMetrics(registers, options.version);
  }

  /** Records the run's mode, rate limit, start time, first estimate and carried-over totals. */
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
    this.#control.onStart(start);
  }

  /** Counts every key of the batch under its outcome and workspace, and marks the batch done. */
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
    this.#control.onBatch(batch);
  }

  /** Adds limiter wait time. */
  onLimiterWait(seconds: number): void {
    // prom-client throws on a negative increment; a clock hiccup must not break the run.
    if (Number.isFinite(seconds) && seconds > 0) this.#run.limiterWait.inc(seconds);
  }

  /** See {@linkcode RunObserver.onRateLimit}. */
  onRateLimit(event: RateLimitEvent): void {
    this.#control.onRateLimit(event);
  }

  /** See {@linkcode RunObserver.onThrottle}. */
  onThrottle(event: ThrottleEvent): void {
    this.#control.onThrottle(event);
  }

  /** See {@linkcode RunObserver.onServerLoad}. */
  onServerLoad(event: ServerLoadEvent): void {
    this.#control.onServerLoad(event);
  }

  /** See {@linkcode RunObserver.onReplicaLag}. */
  onReplicaLag(event: ReplicaLagEvent): void {
    this.#control.onReplicaLag(event);
  }

  /** See {@linkcode RunObserver.onRedisReply}. */
  onRedisReply(event: RedisReplyEvent): void {
    this.#control.onRedisReply(event);
  }

  /** See {@linkcode RunObserver.onRedisDown}. */
  onRedisDown(event: RedisDownEvent): void {
    this.#control.onRedisDown(event);
  }

  /** Records the end: every pending count applied, not running, completed or not. */
  onEnd(summary: Summary): void {
    this.#outcomes.flush(true);
    this.#run.completed.set(summary.completed ? 1 : 0);
    this.#run.running.set(0);
    this.#run.end.set(this.#clock.now() / 1000);
    this.#control.onEnd();
  }
}
