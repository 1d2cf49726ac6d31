/**
 * What the command line asks for, as types: the options of each subcommand after
 * {@linkcode parseCommand} (args.ts) validated them. The flags themselves, with their help, are in
 * the flag table (flags.ts).
 *
 * @module
 */
import type { CallClockMode } from "../control/call_clock.ts";
import type { ReplicaLagLimit } from "../control/replica_lag.ts";
import type { TlsOptions } from "../redis/options.ts";
import type { Shard } from "../redis/shard.ts";
import type { KeySchema } from "../schema.ts";
import type { ControlCommandLine } from "./control_args.ts";

/** Options shared by the run and verify. */
export interface CommonOptions {
  /** Seed URLs (one for standalone; several seeds allowed for a cluster). */
  redisUrls: string[];
  tls: TlsOptions;
  json: boolean;
  workspace?: string;
  /** The key mapping and the workspace rule (`--workspace-pattern`). */
  keys: KeySchema;
  /** Jobs per second, 0 = unlimited. */
  rps: number;
  logFormat: "text" | "json";
  quiet: boolean;
}

/** Options of `backfill --dry-run | --execute`. */
export interface RunOptions extends CommonOptions, MetricsFlags {
  mode: "dry-run" | "execute";
  batch: number;
  cursor?: string;
  maxKeys?: number;
  progressKey: string;
  resetProgress: boolean;
  metricsWorkspaceLabel: boolean;
  /** `--health-timeout`: seconds a node may stay silent before /healthz answers 503. */
  healthTimeout: number;
  progressInterval: number;
  maxMemoryPct: number;
  /** Seconds the run waits for a lost Redis before giving up with exit 3. */
  maxOutage: number;
  /** `--max-call-ms`: the Redis time one script call may take (> 0). */
  maxCallMs: number;
  /** `--call-clock`: whose clock times a script call (control/call_clock.ts). */
  callClock: CallClockMode;
  /**
   * `--max-latency`: the most the run may add to an application command's wait, in ms, kept by
   * bounding calls in flight × call time (control/call_window.ts); 0 = raw speed (no bound, no
   * critical-load yield).
   */
  maxLatencyMs: number;
  /** `--critical-load`: Redis busy this share (%) without the backfill makes it yield. */
  criticalLoadPct: number;
  /** `--max-replica-lag`: pause while a replica is further behind. */
  maxReplicaLag: ReplicaLagLimit;
  /** `--wait-lock`: seconds to wait for a held lock to expire before refusing (exit 4). */
  waitLockSeconds: number;
  /** `--shard I/N`: this runner's part of a cluster's masters ({@linkcode WHOLE} without it). */
  shard: Shard;
}

/** The metrics and Pushgateway flags of a run and of `verify`. */
export interface MetricsFlags {
  metricsPort?: number;
  /** Address the metrics server binds (undefined: all interfaces, 0.0.0.0). */
  metricsHost?: string;
  /** Seconds the metrics server stays up after the end, for a last scrape. */
  metricsLinger: number;
  pushgateway?: string;
  /** Seconds between Pushgateway pushes while running (0: only at start and end). */
  pushInterval: number;
}

/** Options of `backfill verify`. */
export interface VerifyFlags extends CommonOptions, MetricsFlags {
  sample: number;
  minParity: number;
  ttlTolerance: number;
  recheck: number;
  /** Pause before each recheck round, in milliseconds (`--recheck-delay`). */
  recheckDelayMs: number;
  /** `--full`: compare every old key (exact) instead of a sample. */
  full: boolean;
  /** `--orphans` (with `--full`): also scan every new key for orphans. */
  orphans: boolean;
  /** `--report FILE` (with `--full`): NDJSON findings. */
  report?: string;
  /** Prefix of the full verify's checkpoint and lock (`<P>:verify:*`). */
  progressKey: string;
  /** `--reset-progress` (with `--full`): ignore a stored full-verify checkpoint. */
  resetProgress: boolean;
  /** `--wait-lock` (with `--full`): seconds to wait for `<P>:verify:lock` before exit 4. */
  waitLockSeconds: number;
  /** `--max-call-ms` (with `--full`): the time budget of one script call, in ms. */
  maxCallMs: number;
  /** `--call-clock` (with `--full`): whose clock times a script call. */
  callClock: CallClockMode;
  /** `--max-latency` (with `--full`): as a run's; 0 = raw speed. */
  maxLatencyMs: number;
  /** `--critical-load` (with `--full`): as a run's. */
  criticalLoadPct: number;
}

/** What the command line asks for. */
export type Command =
  | { kind: "run"; options: RunOptions }
  | { kind: "verify"; options: VerifyFlags }
  | { kind: "control"; options: ControlCommandLine }
  | { kind: "help"; topic: "run" | "verify" | "control" }
  | { kind: "version" };
