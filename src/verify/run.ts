/**
 * `backfill verify`: a read-only parity check of the new schema against the old one, on uniform
 * random samples (see `sample.ts` for how they are drawn).
 *
 * Forward: every sampled old key is invalid (the backfill's rule), missing (no new key), mismatched
 * (new key differs in type, fields, values or TTL) or matched. Reverse: every sampled new key
 * whose old twin does not exist is an orphan. Failures are rechecked after a pause and only
 * counted when they persist, because the application writes both schemas while we read.
 *
 * Only reads reach Redis: DBSIZE, RANDOMKEY, SCAN, HGETALL, HGET, PTTL, EXISTS, pipelined.
 * (Redis reclaims an already-expired key that a read touches, as for any application read; that
 * lazy expiry does not count as a change: `rdb_changes_since_last_save` stays put.)
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { classify } from "../redis/errors.ts";
import { Cluster, type Redis } from "../redis/ioredis.ts";
import { delay } from "../async/delay.ts";
import { type RateLimiter, SlidingWindowLimiter } from "../control/rate_limit.ts";
import { type Logger, silentLogger } from "../run_events.ts";
import { escapeForLog } from "../telemetry/redact.ts";
import {
  jobIdOf,
  NEW_MATCH,
  newKeyFor,
  newMatchFor,
  OLD_MATCH,
  oldKeyFor,
  parseNewKey,
  WORKSPACE_FIELD,
  type WorkspaceRule,
} from "../schema.ts";
import {
  computeParity,
  MAX_EXAMPLES,
  type MismatchReason,
  type VerifyExamples,
  verifyPassed,
  type VerifyReport,
} from "./report.ts";
import { type KeyPopulation, sampleKeys, type SamplingTuning } from "./sample.ts";

export { renderVerifyText, type VerifyExamples, verifyJson, type VerifyReport } from "./report.ts";

/** Where to verify: the masters to sample from, and a client that reads any key. */
export interface VerifyTarget {
  /** Every master (for DBSIZE, RANDOMKEY, SCAN); a standalone server is `[client]`. */
  nodes: readonly Redis[];
  /** Reads keys wherever they live: the standalone client, or the cluster client. */
  reader: Redis | Cluster;
}

/** What to verify and how strictly (CLI defaults in `VERIFY_DEFAULTS`, src/defaults.ts). */
export interface VerifyOptions {
  /** Old keys to sample (`--sample`); when at least the old-key count, every old key once. */
  sample: number;
  /** Only this workspace's jobs (`--workspace`). */
  workspace?: string;
  /** The workspace id rule (`--workspace-pattern`), the same the backfill uses. */
  rule: WorkspaceRule;
  /** TTLs that differ by more than this many seconds are a mismatch (`--ttl-tolerance`). */
  ttlToleranceSeconds: number;
  /** Rechecks of a missing/mismatched/orphan key before it counts (`--recheck`). */
  recheck: number;
  /** Pause before each recheck round, in milliseconds. */
  recheckDelayMs: number;
  /** At most this many key checks per second (`--rps`); 0 = unlimited. */
  rps: number;
  /** Percentage of parity needed to pass (`--min-parity`). */
  minParity: number;
  /** New keys to sample for orphans (default: `sample`). */
  orphanSample?: number;
  /** Overrides of the sampling knobs (tests and benchmarks). */
  sampling?: Partial<SamplingTuning>;
}

/** Collaborators of {@linkcode runVerify}. */
export interface VerifyDeps {
  logger?: Logger;
  signal?: AbortSignal;
  /** Paces key checks (default: a `SlidingWindowLimiter` of `options.rps`). */
  limiter?: Pick<RateLimiter, "acquire">;
  /** Source of randomness in [0, 1) (default `Math.random`). */
  random?: () => number;
}

/** Keys checked per pipelined round trip (fewer when `--rps` is lower, see `batchSize`). */
const CHECK_BATCH = 500;

/**
 * Verifies parity between the schemas on uniform samples and returns the report; never writes.
 *
 * @example
 * ```ts ignore
 * const report = await runVerify(
 *   { nodes: [client], reader: client },
 *   { ...VERIFY_DEFAULTS, rule: new WorkspaceRule() },
 *   { logger },
 * );
 * console.log(renderVerifyText(report));
 * Deno.exitCode = report.passed ? 0 : 1;
 * ```
 * @throws {RangeError} on an out-of-range option.
 * @throws the abort reason when `deps.signal` aborts; Redis errors (other than WRONGTYPE) as is.
 */
export async function runVerify(
  target: VerifyTarget,
  options: VerifyOptions,
  deps: VerifyDeps = {},
): Promise<VerifyReport> {
  validate(options);
  const started = performance.now();
  const logger = deps.logger ?? silentLogger;
  const { signal, random } = deps;
  const ctx: CheckContext = {
    reader: target.reader,
    options,
    batch: batchSize(options.rps),
    limiter: deps.limiter ?? new SlidingWindowLimiter(options.rps),
    signal,
    waited: 0,
  };
  logger.log("info", "verify_start", "Verifying parity of the new schema", {
    sample: options.sample,
    workspace: options.workspace === undefined ? null : escapeForLog(options.workspace),
    nodes: target.nodes.length,
  });

  const old = await sampleKeys(target.nodes, oldPopulation(ctx), options.sample, {
    signal,
    random,
    tuning: options.sampling,
  });
  logger.log("info", "verify_sampled", `Sampled ${old.keys.length} old keys (${old.method})`, {
    kind: "old",
    keys: old.keys.length,
    population: old.population,
    exact: old.exact,
    method: old.method,
  });
  const forward = await withRechecks(old.keys, (keys) => checkJobs(keys, ctx), isJobFailure, ctx);

  const fresh = await sampleKeys(
    target.nodes,
    newPopulation(options.workspace),
    options.orphanSample ?? options.sample,
    { signal, random, tuning: options.sampling },
  );
  logger.log("info", "verify_sampled", `Sampled ${fresh.keys.length} new keys (${fresh.method})`, {
    kind: "new",
    keys: fresh.keys.length,
    population: fresh.population,
    exact: fresh.exact,
    method: fresh.method,
  });
  const reverse = await withRechecks(
    fresh.keys,
    (keys) => checkOrphans(keys, ctx),
    (verdict) => verdict === "orphan",
    ctx,
  );

  const counts = { matched: 0, missing: 0, mismatched: 0, invalid: 0, gone: 0 };
  const reasons: Record<MismatchReason, number> = { type: 0, fields: 0, ttl: 0 };
  const examples: VerifyExamples = { missing: [], mismatched: [], invalid: [], orphans: [] };
  const example = (list: string[], jobId: Buffer) => {
    if (list.length < MAX_EXAMPLES) list.push(escapeForLog(jobId));
  };
  forward.verdicts.forEach((verdict, i) => {
    counts[verdict.kind]++;
    const jobId = jobIdOf(old.keys[i] as Buffer) ?? Buffer.alloc(0);
    if (verdict.kind === "mismatched") {
      reasons[verdict.reason]++;
      example(examples.mismatched, jobId);
    } else if (verdict.kind === "missing") example(examples.missing, jobId);
    else if (verdict.kind === "invalid") example(examples.invalid, jobId);
  });
  let orphans = 0;
  let orphansGone = 0;
  reverse.verdicts.forEach((verdict, i) => {
    if (verdict === "gone") orphansGone++;
    if (verdict !== "orphan") return;
    orphans++;
    example(examples.orphans, parseNewKey(fresh.keys[i] as Buffer)?.jobId ?? Buffer.alloc(0));
  });

  const sampled = counts.matched + counts.missing + counts.mismatched + counts.invalid;
  const parity = computeParity(counts.matched, sampled, counts.invalid);
  const report: VerifyReport = {
    sampled,
    matched: counts.matched,
    missing: counts.missing,
    mismatched: counts.mismatched,
    invalid: counts.invalid,
    parity,
    orphans,
    orphans_sampled: fresh.keys.length - orphansGone,
    gone: counts.gone,
    transient: forward.transient + reverse.transient,
    mismatch_reasons: reasons,
    old_keys: old.population,
    old_keys_exact: old.exact,
    new_keys: fresh.population,
    new_keys_exact: fresh.exact,
    sampling: old.method,
    orphan_sampling: fresh.method,
    workspace: options.workspace ?? null,
    min_parity: options.minParity,
    passed: verifyPassed(parity, options.minParity, orphans),
    duration_seconds: Math.round(performance.now() - started) / 1000,
    limiter_wait_seconds: Math.round(ctx.waited * 1000) / 1000,
    examples,
  };
  logger.log("info", "verify_done", `Verify ${report.passed ? "passed" : "failed"}`, {
    sampled,
    matched: report.matched,
    missing: report.missing,
    mismatched: report.mismatched,
    invalid: report.invalid,
    orphans,
    parity,
  });
  return report;
}

/** The verdict on one sampled old key. */
export type JobVerdict =
  | { kind: "matched" }
  | { kind: "missing" }
  | { kind: "mismatched"; reason: MismatchReason }
  | { kind: "invalid" }
  | { kind: "gone" };

/** What a read of one key found. `pttl`: -1 no TTL, -2 absent, else milliseconds left. */
export type KeyState =
  | { type: "absent" }
  | { type: "other" }
  | { type: "hash"; fields: ReadonlyMap<string, Buffer>; pttl: number };

/**
 * Compares a job's old and new key (pure). Both are hashes already known to exist on the old side;
 * the old side's `pttl` of -2 means it vanished between the reads.
 */
export function compareJob(
  old: KeyState,
  fresh: KeyState,
  toleranceSeconds: number,
): JobVerdict {
  if (old.type === "absent" || (old.type === "hash" && old.pttl === -2)) return { kind: "gone" };
  if (old.type === "other") return { kind: "invalid" };
  if (fresh.type === "absent" || (fresh.type === "hash" && fresh.pttl === -2)) {
    return { kind: "missing" };
  }
  if (fresh.type === "other") return { kind: "mismatched", reason: "type" };
  if (!sameFields(old.fields, fresh.fields)) return { kind: "mismatched", reason: "fields" };
  if (!sameTtl(old.pttl, fresh.pttl, toleranceSeconds)) {
    return { kind: "mismatched", reason: "ttl" };
  }
  return { kind: "matched" };
}

/** Same field names and values, byte for byte (extra fields on either side differ). */
function sameFields(a: ReadonlyMap<string, Buffer>, b: ReadonlyMap<string, Buffer>): boolean {
  if (a.size !== b.size) return false;
  for (const [field, value] of a) {
    const other = b.get(field);
    if (other === undefined || !other.equals(value)) return false;
  }
  return true;
}

/** Both without TTL, or both with TTLs at most `toleranceSeconds` apart. */
function sameTtl(a: number, b: number, toleranceSeconds: number): boolean {
  if (a === -1 || b === -1) return a === b;
  return Math.abs(a - b) <= toleranceSeconds * 1000;
}

function isJobFailure(verdict: JobVerdict): boolean {
  return verdict.kind === "missing" || verdict.kind === "mismatched";
}

interface CheckContext {
  reader: Redis | Cluster;
  options: VerifyOptions;
  batch: number;
  limiter: Pick<RateLimiter, "acquire">;
  signal: AbortSignal | undefined;
  /** Seconds spent waiting for the limiter so far. */
  waited: number;
}

/**
 * Batch size under `--rps`: a quarter of a second's budget, so pacing is smooth and a batch always
 * fits the limiter's one-second window.
 */
function batchSize(rps: number): number {
  return rps > 0 ? Math.max(1, Math.min(CHECK_BATCH, Math.floor(rps / 4))) : CHECK_BATCH;
}

/** Old keys (optionally of one workspace, confirmed by reading `workspace_id`). */
function oldPopulation(ctx: CheckContext): KeyPopulation {
  const { workspace, rule } = ctx.options;
  return {
    match: OLD_MATCH,
    isCandidate: (key) => jobIdOf(key) !== undefined,
    confirm: workspace === undefined ? undefined : (keys) =>
      inBatches(keys, ctx, async (batch) => {
        const replies = await readAll(
          ctx.reader,
          batch.map((key) => ["HGET", key, WORKSPACE_FIELD]),
        );
        return replies.map(([error, raw]) => {
          // A key that is not a hash, or has no workspace_id, is a job of no workspace.
          if (isWrongType(error) || raw === null) return false;
          rethrow(error);
          return rule.check(asBuffer(raw)) === workspace;
        });
      }),
  };
}

/** New keys; with a workspace, only that workspace's (the name tells, no read needed). */
function newPopulation(workspace: string | undefined): KeyPopulation {
  return {
    match: workspace === undefined ? NEW_MATCH : newMatchFor(workspace),
    isCandidate: (key) => {
      const parsed = parseNewKey(key);
      return parsed !== undefined && (workspace === undefined || parsed.workspace === workspace);
    },
  };
}

/** Checks old keys: read the old hashes, then the new hashes and both TTLs side by side. */
async function checkJobs(keys: readonly Buffer[], ctx: CheckContext): Promise<JobVerdict[]> {
  return await inBatches(keys, ctx, async (batch) => {
    const oldReplies = await readAll(ctx.reader, batch.map((key) => ["HGETALL", key]));
    const verdicts: (JobVerdict | undefined)[] = [];
    const pending: { index: number; key: Buffer; newKey: Buffer; fields: Map<string, Buffer> }[] =
      [];
    oldReplies.forEach(([error, reply], index) => {
      const key = batch[index] as Buffer;
      const jobId = jobIdOf(key);
      // Not a hash: the backfill skips it as invalid.
      if (isWrongType(error)) {
        verdicts[index] = { kind: "invalid" };
        return;
      }
      rethrow(error);
      const fields = toFieldMap(reply);
      const workspace = ctx.options.rule.check(fields.get(WORKSPACE_FIELD));
      if (fields.size === 0) verdicts[index] = { kind: "gone" };
      else if (!jobId || jobId.length === 0 || workspace === undefined) {
        verdicts[index] = { kind: "invalid" };
      } else pending.push({ index, key, newKey: newKeyFor(workspace, jobId), fields });
    });
    // PTTL of old and new are read next to each other, so the time between the two round trips
    // does not show up as a TTL difference.
    const replies = await readAll(
      ctx.reader,
      pending.flatMap(({ key, newKey }) => [["HGETALL", newKey], ["PTTL", newKey], ["PTTL", key]]),
    );
    pending.forEach(({ index, fields }, i) => {
      const [newError, newReply] = replies[i * 3] as Reply;
      const [newTtlError, newTtl] = replies[i * 3 + 1] as Reply;
      const [oldTtlError, oldTtl] = replies[i * 3 + 2] as Reply;
      rethrow(newTtlError);
      rethrow(oldTtlError);
      let fresh: KeyState;
      if (isWrongType(newError)) fresh = { type: "other" };
      else {
        rethrow(newError);
        const newFields = toFieldMap(newReply);
        fresh = newFields.size === 0
          ? { type: "absent" }
          : { type: "hash", fields: newFields, pttl: Number(newTtl) };
      }
      const old: KeyState = { type: "hash", fields, pttl: Number(oldTtl) };
      verdicts[index] = compareJob(old, fresh, ctx.options.ttlToleranceSeconds);
    });
    return verdicts as JobVerdict[];
  });
}

type OrphanVerdict = "ok" | "orphan" | "gone";

/** Checks new keys: does the new key still exist, and does its old twin? */
async function checkOrphans(keys: readonly Buffer[], ctx: CheckContext): Promise<OrphanVerdict[]> {
  return await inBatches(keys, ctx, async (batch) => {
    const replies = await readAll(
      ctx.reader,
      batch.flatMap((key) => {
        const jobId = (parseNewKey(key) as { jobId: Buffer }).jobId;
        return [["EXISTS", key], ["EXISTS", oldKeyFor(jobId)]];
      }),
    );
    return batch.map((_, i) => {
      const [newError, newExists] = replies[i * 2] as Reply;
      const [oldError, oldExists] = replies[i * 2 + 1] as Reply;
      rethrow(newError);
      rethrow(oldError);
      if (Number(newExists) === 0) return "gone";
      return Number(oldExists) === 0 ? "orphan" : "ok";
    });
  });
}

/**
 * Checks `keys`, then rechecks the failures up to `recheck` times with a pause, keeping the last
 * verdict: a difference counts only if it survives every recheck. `transient` counts failures
 * that stopped failing.
 */
async function withRechecks<V>(
  keys: readonly Buffer[],
  check: (keys: readonly Buffer[]) => Promise<V[]>,
  failed: (verdict: V) => boolean,
  ctx: CheckContext,
): Promise<{ verdicts: V[]; transient: number }> {
  const verdicts = await check(keys);
  let pending = indicesWhere(verdicts, failed);
  const firstFailures = pending.length;
  for (let round = 0; round < ctx.options.recheck && pending.length > 0; round++) {
    await delay(ctx.options.recheckDelayMs, { signal: ctx.signal });
    const again = await check(pending.map((i) => keys[i] as Buffer));
    pending.forEach((index, j) => verdicts[index] = again[j] as V);
    pending = pending.filter((index) => failed(verdicts[index] as V));
  }
  return { verdicts, transient: firstFailures - pending.length };
}

function indicesWhere<V>(items: readonly V[], predicate: (item: V) => boolean): number[] {
  const out: number[] = [];
  items.forEach((item, i) => predicate(item) && out.push(i));
  return out;
}

/** Runs `work` over `keys` in batches of `ctx.batch`, each after the limiter admits it. */
async function inBatches<T>(
  keys: readonly Buffer[],
  ctx: CheckContext,
  work: (batch: Buffer[]) => Promise<T[]>,
): Promise<T[]> {
  const out: T[] = [];
  for (let start = 0; start < keys.length; start += ctx.batch) {
    ctx.signal?.throwIfAborted();
    const batch = keys.slice(start, start + ctx.batch);
    ctx.waited += await ctx.limiter.acquire(batch.length, ctx.signal);
    out.push(...await work(batch));
  }
  return out;
}

/** A pipeline reply: the error or the value. */
type Reply = [Error | null, unknown];

/**
 * Runs read commands with raw (Buffer) replies. Standalone: one pipeline. Cluster: the commands
 * go out concurrently (a cluster pipeline must stay within one slot), which ioredis still writes
 * back to back per node.
 *
 * Commands are sent in upper case on purpose: ioredis's HGETALL reply transformer (keyed by the
 * lower-case name) would turn field names into UTF-8 strings and lose bytes; the upper-case
 * name keeps the raw `[field, value, ...]` array.
 */
async function readAll(
  reader: Redis | Cluster,
  commands: readonly [string, ...(Buffer | string)[]][],
): Promise<Reply[]> {
  if (commands.length === 0) return [];
  if (reader instanceof Cluster) {
    return await Promise.all(
      commands.map(([name, ...args]) =>
        reader.callBuffer(name, ...args).then(
          (value): Reply => [null, value],
          (error: unknown): Reply => [asError(error), null],
        )
      ),
    );
  }
  const pipeline = reader.pipeline();
  for (const [name, ...args] of commands) pipeline.callBuffer(name, ...args);
  const replies = await pipeline.exec();
  if (!replies) throw new Error("Redis pipeline was discarded");
  return replies as Reply[];
}

/** A raw HGETALL reply as field (latin1, byte-exact) -> value; empty when the key is absent. */
function toFieldMap(reply: unknown): Map<string, Buffer> {
  if (!Array.isArray(reply)) {
    throw new TypeError("HGETALL reply is not a flat array (ioredis reply transformer applied?)");
  }
  const fields = new Map<string, Buffer>();
  for (let i = 0; i + 1 < reply.length; i += 2) {
    fields.set(asBuffer(reply[i]).toString("latin1"), asBuffer(reply[i + 1]));
  }
  return fields;
}

function asBuffer(value: unknown): Buffer {
  if (value instanceof Buffer) return value;
  if (value instanceof Uint8Array) return Buffer.from(value);
  return Buffer.from(value === null || value === undefined ? "" : String(value));
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

function isWrongType(error: Error | null): boolean {
  return error !== null && classify(error).kind === "wrongtype";
}

/** Throws `error` when set (a Redis error other than the WRONGTYPE we classify). */
function rethrow(error: Error | null): void {
  if (error) throw error;
}

function validate(options: VerifyOptions): void {
  const integer = (name: string, value: number, min: number) => {
    if (!Number.isInteger(value) || value < min) {
      throw new RangeError(`options.${name} must be an integer >= ${min}, got ${value}`);
    }
  };
  const number = (name: string, value: number, min: number, max = Infinity) => {
    if (!Number.isFinite(value) || value < min || value > max) {
      throw new RangeError(`options.${name} must be a number in [${min}, ${max}], got ${value}`);
    }
  };
  integer("sample", options.sample, 1);
  if (options.orphanSample !== undefined) integer("orphanSample", options.orphanSample, 1);
  integer("recheck", options.recheck, 0);
  number("recheckDelayMs", options.recheckDelayMs, 0);
  number("ttlToleranceSeconds", options.ttlToleranceSeconds, 0);
  integer("rps", options.rps, 0);
  number("minParity", options.minParity, 0, 100);
}
