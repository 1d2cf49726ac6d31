/**
 * What `verify --full` is asked to do ({@linkcode FullVerifyOptions}) and what it works with
 * ({@linkcode FullVerifyDeps}).
 *
 * @module
 */
import type { CallClockMode } from "../../control/call_clock.ts";
import type { RateLimiter } from "../../control/rate_limit.ts";
import type { RedisTarget } from "../../redis/target.ts";
import type { Logger } from "../../run_events.ts";
import type { KeySchema } from "../../schema.ts";
import type { VerifyCheckpoint } from "./checkpoint.ts";
import type { ReportFile } from "./report_file.ts";

/** What to verify and how. */
export interface FullVerifyOptions {
  /** The key mapping and the workspace rule. */
  keys: KeySchema;
  workspace?: string;
  ttlToleranceSeconds: number;
  /** Rechecks of a difference before it counts. */
  recheck: number;
  recheckDelayMs: number;
  /** Old (and new) keys checked per second; 0 = unlimited. */
  rps: number;
  minParity: number;
  /** Also scan the new schema for orphans. */
  orphans: boolean;
  /** Ignore (and overwrite) a stored checkpoint. */
  resetProgress: boolean;
  /** Target Redis time of one script call, in µs (default 250). */
  callBudgetUs?: number;
  /** `--call-clock`: whose clock times a call (default `auto`: probe each master). */
  callClock?: CallClockMode;
  /** Keys per checkpointed chunk (default: see `FullRun.#chunkKeys`); a crash re-checks one. */
  chunkKeys?: number;
  /** Milliseconds between progress log lines (default 10 000). */
  progressIntervalMs?: number;
  /** Script calls in flight per master at most (`--max-latency`); default: no such bound. */
  callsInFlight?: number;
  /**
   * Sub-batches in flight at once (default 4): Redis works on the others while the client decodes
   * a reply or collects garbage (a scavenge takes ~1 ms; four calls of ~0.2 ms cover most).
   */
  inFlight?: number;
}

/** Collaborators of `runFullVerify` (`run.ts`). */
export interface FullVerifyDeps {
  target: Pick<RedisTarget, "kind" | "client" | "masters" | "nodeName">;
  checkpoint: VerifyCheckpoint;
  limiter: Pick<RateLimiter, "acquire">;
  report?: ReportFile;
  logger?: Logger;
  signal?: AbortSignal;
}
