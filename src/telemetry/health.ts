/**
 * What `/healthz` answers: a pure state machine fed by the run's events and read with a clock.
 * Healthy while the run progresses or holds back on purpose (throttled, paused); unhealthy, with a
 * one-line reason, when Redis has not answered for too long or no batch finished in time.
 *
 * @module
 */
import type {
  BatchReport,
  RedisDownEvent,
  RedisReplyEvent,
  RunObserver,
  RunStart,
  Summary,
  ThrottleEvent,
  ThrottleReason,
} from "../run_events.ts";

/** Default `--health-timeout`. */
const REDIS_SILENCE_SECONDS = 30;
/** Never call a run stalled before this many seconds without a batch. */
const STALL_MS = 60_000;

export interface RunHealthOptions {
  clock: { now(): number };
  /** `--health-timeout`: a node silent this long is unhealthy, its `redis_up` 0 (default 30). */
  redisSilenceSeconds?: number;
  /** How long one batch should take (`--batch / --rps`; 0 when unlimited); stall = 3× this at least. */
  expectedBatchSeconds?: number;
}

/** One `/healthz` answer (200 if healthy, else 503) with what the run does or what is wrong. */
export interface HealthStatus {
  healthy: boolean;
  reason: string;
}

interface NodeState {
  lastReplyMs: number;
  /** Set by onRedisDown until the next reply. */
  downReason?: string;
  /** The engine reports this node's replies itself (not only through batches). */
  reportsReplies: boolean;
}

/**
 * The health of one run. Redis silence is judged for a node reported down, or whose replies the
 * engine reports (`onRedisReply`, e.g. a probe that runs while the run is throttled). A node seen
 * only through batches is covered by the stall rule, which pauses while the run is throttled.
 */
export class RunHealth implements RunObserver {
  readonly #clock: { now(): number };
  readonly #silenceMs: number;
  #expectedBatchMs: number;
  /** "running", or what `/healthz` says before and after: starting, run completed, run stopped. */
  #phase = "starting";
  #lastProgressMs = 0;
  readonly #nodes = new Map<string, NodeState>();
  readonly #throttles = new Set<ThrottleReason>();

  constructor(options: RunHealthOptions) {
    this.#clock = options.clock;
    this.#silenceMs = (options.redisSilenceSeconds ?? REDIS_SILENCE_SECONDS) * 1000;
    this.#expectedBatchMs = Math.max(0, (options.expectedBatchSeconds ?? 0) * 1000);
  }

  onStart(_start?: RunStart): void {
    this.#phase = "running";
    this.#lastProgressMs = this.#clock.now();
  }

  /** A batch finished: progress, and a reply from its node. */
  onBatch(batch: BatchReport): void {
    const now = this.#clock.now();
    this.#lastProgressMs = now;
    if (Number.isFinite(batch.seconds) && batch.seconds > 0) {
      // A slow batch that still finished says how long batches take here.
      this.#expectedBatchMs = Math.max(this.#expectedBatchMs, batch.seconds * 1000);
    }
    this.#reply(batch.node, now, false);
  }

  onThrottle(event: ThrottleEvent): void {
    if (event.active) this.#throttles.add(event.reason);
    else this.#throttles.delete(event.reason);
  }

  onRedisReply(event: RedisReplyEvent): void {
    this.#reply(event.node, this.#clock.now(), true);
  }

  /** A node stopped answering; its silence counts from its last reply. */
  onRedisDown(event: RedisDownEvent): void {
    const node = this.#nodes.get(event.node) ??
      { lastReplyMs: this.#lastProgressMs || this.#clock.now(), reportsReplies: false };
    node.downReason = event.reason;
    this.#nodes.set(event.node, node);
  }

  /** The run is over: healthy (the metrics server only lingers so the end can be scraped). */
  onEnd(summary: Summary): void {
    this.#phase = summary.completed ? "run completed" : "run stopped";
  }

  status(): HealthStatus {
    if (this.#phase !== "running") return { healthy: true, reason: this.#phase };
    const now = this.#clock.now();
    const [silent] = this.#silent(now);
    if (silent !== undefined) {
      const [name, node] = silent;
      const why = node.downReason === undefined ? "" : ` (${node.downReason})`;
      const silence = seconds(now - node.lastReplyMs);
      return { healthy: false, reason: `Redis at ${name} has not answered for ${silence} s${why}` };
    }
    if (this.#throttles.size > 0) {
      return { healthy: true, reason: `throttled (${[...this.#throttles].sort().join(", ")})` };
    }
    const stallMs = Math.max(STALL_MS, 3 * this.#expectedBatchMs);
    const idleMs = now - this.#lastProgressMs;
    if (idleMs > stallMs) {
      const expected = `expected within ${seconds(stallMs)} s`;
      return { healthy: false, reason: `no batch finished for ${seconds(idleMs)} s (${expected})` };
    }
    return { healthy: true, reason: "progressing" };
  }

  /** Nodes silent for longer than the threshold now (their `redis_up` reads 0). */
  silentNodes(): string[] {
    if (this.#phase !== "running") return [];
    return this.#silent(this.#clock.now()).map(([name]) => name);
  }

  #silent(now: number): [string, NodeState][] {
    return [...this.#nodes].filter(([, node]) =>
      (node.downReason !== undefined || node.reportsReplies) &&
      now - node.lastReplyMs > this.#silenceMs
    );
  }

  /** A reply clears the node's down reason. */
  #reply(name: string, now: number, reported: boolean): void {
    const reportsReplies = reported || this.#nodes.get(name)?.reportsReplies === true;
    this.#nodes.set(name, { lastReplyMs: now, reportsReplies });
  }
}

function seconds(ms: number): number {
  return Math.round(ms / 1000);
}
