/**
 * What the command line asks for, as types: each subcommand's options after args.ts validated
 * them. The flags themselves, with their help, are in flags.ts.
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
  /** Seed URLs (several allowed for a cluster). */
  redisUrls: string[];
  tls: TlsOptions;
  json: boolean;
  workspace?: string;
  keys: KeySchema;
  /** Jobs (verify: keys) per second, 0 = unlimited. */
  rps: number;
  logFormat: "text" | "json";
  quiet: boolean;
}

/** The flags of a run that `verify --full` takes alike. */
export interface SharedRunFlags {
  /** Prefix of the checkpoint and lock keys (verify: `<P>:verify:*`). */
  progressKey: string;
  resetProgress: boolean;
  /** `--wait-lock`: seconds to wait for a held lock to expire before refusing (exit 4). */
  waitLockSeconds: number;
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
}

/** Options of `backfill --dry-run | --execute`. */
export interface RunOptions extends CommonOptions, MetricsFlags, SharedRunFlags {
  mode: "dry-run" | "execute";
  batch: number;
  cursor?: string;
  maxKeys?: number;
  metricsWorkspaceLabel: boolean;
  /** `--health-timeout`: seconds a node may stay silent before /healthz answers 503. */
  healthTimeout: number;
  progressInterval: number;
  maxMemoryPct: number;
  /** Seconds the run waits for a lost Redis before giving up with exit 3. */
  maxOutage: number;
  maxReplicaLag: ReplicaLagLimit;
  /** `--shard I/N`: this runner's part of a cluster's masters. */
  shard: Shard;
}

/** The metrics and Pushgateway flags of a run and of `verify`. */
export interface MetricsFlags {
  metricsPort?: number;
  /** Undefined: all interfaces. */
  metricsHost?: string;
  /** Seconds the metrics server stays up after the end, for a last scrape. */
  metricsLinger: number;
  pushgateway?: string;
  /** Seconds between pushes while running (0: only at start and end). */
  pushInterval: number;
}

/** Options of `backfill verify` (the {@linkcode SharedRunFlags} apply with `--full`). */
export interface VerifyFlags extends CommonOptions, MetricsFlags, SharedRunFlags {
  sample: number;
  minParity: number;
  ttlTolerance: number;
  recheck: number;
  recheckDelayMs: number;
  full: boolean;
  /** `--orphans`: also scan every new key for orphans. */
  orphans: boolean;
  /** `--report FILE`: NDJSON findings. */
  report?: string;
}

/** What the command line asks for. */
export type Command =
  | { kind: "run"; options: RunOptions }
  | { kind: "verify"; options: VerifyFlags }
  | { kind: "control"; options: ControlCommandLine }
  | { kind: "help"; topic: "run" | "verify" | "control" }
  | { kind: "version" };
