/**
 * Defaults shared by the command line (cli/flags.ts shows them, cli/args.ts applies them) and the
 * code that runs with them; here, below both, so neither imports the other for a number.
 *
 * @module
 */

/** CLI defaults of a run (`--dry-run | --execute`); `verify --full` shares the pace ones. */
export const RUN_DEFAULTS = {
  rps: 100,
  batch: 500,
  /** Prefix of the checkpoint, lock, control and status keys (every command). */
  progressKey: "ai:backfill",
  /** Without `--redis-url` and `REDIS_URL` (every command). */
  redisUrl: "redis://127.0.0.1:6379",
  logFormat: "text",
  progressInterval: 10,
  maxMemoryPct: 90,
  maxOutage: 60,
  metricsLinger: 15,
  pushInterval: 30,
  healthTimeout: 30,
  metricsWorkspaceLabel: "true",
  maxCallMs: 0.25,
  callClock: "auto",
  /** No application command waits longer than this behind the run's work. */
  maxLatencyMs: 0.5,
  /** Redis 90% busy without the backfill: the store is saturated by its application. */
  criticalLoadPct: 90,
  /** Above a second of a busy master, far below the 64 MB output buffer that forces a resync. */
  maxReplicaLag: "16M",
  /** The lock lives 30 s: a dead holder's lock is gone before 45 s pass. */
  waitLockSeconds: 45,
} as const;

/** CLI defaults of the verify options. */
export const VERIFY_DEFAULTS = {
  sample: 1000,
  minParity: 100,
  ttlToleranceSeconds: 5,
  recheck: 3,
  // Long enough for an in-flight dual write (two commands) to land; three rounds stay well
  // inside the latency budget of a default verify.
  recheckDelayMs: 100,
  rps: 0,
} as const;
