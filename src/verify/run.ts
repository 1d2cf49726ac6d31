/**
 * `backfill verify`: a read-only parity check of the new schema on uniform random samples of old
 * keys (matched, missing, mismatched or invalid) and of new keys (orphans), checked, rechecked and
 * counted as `verify --full` does (`pairs.ts`). Only reads reach Redis: DBSIZE, RANDOMKEY, SCAN,
 * INFO, SCRIPT LOAD and EVALSHA_RO.
 *
 * @module
 */
import { SlidingWindowLimiter } from "../control/rate_limit.ts";
import type { RateLimiter } from "../control/rate_limit.ts";
import type { Redis } from "../redis/ioredis.ts";
import type { RedisTarget } from "../redis/target.ts";
import { type Logger, silentLogger } from "../run_events.ts";
import { escapeForLog } from "../telemetry/redact.ts";
import { type CheckOptions, type Counted, countJobs, countOrphans, openChecks } from "./pairs.ts";
import type { FindingKind } from "./verdicts.ts";
import {
  computeParity,
  MAX_EXAMPLES,
  type VerifyExamples,
  verifyPassed,
  type VerifyReport,
} from "./report.ts";
import {
  type KeyPopulation,
  newPopulation,
  oldPopulation,
  sampleKeys,
  type SampleResult,
  type SamplingTuning,
} from "./sample.ts";

/** Where to verify: every master and a client for any key. */
export type VerifyTarget = Pick<RedisTarget, "kind" | "client" | "masters">;

/** What to verify and how strictly (CLI defaults in `VERIFY_DEFAULTS`, src/defaults.ts). */
export interface VerifyOptions extends
  Pick<
    CheckOptions,
    "keys" | "workspace" | "ttlToleranceSeconds" | "recheck" | "recheckDelayMs" | "rps"
  > {
  /** Old keys to sample (`--sample`); when at least the old-key count, every old key once. */
  sample: number;
  /** Percentage of parity needed to pass (`--min-parity`). */
  minParity: number;
  /** New keys to sample for orphans (default: `sample`). */
  orphanSample?: number;
  sampling?: Partial<SamplingTuning>;
}

/** Collaborators of {@linkcode runVerify}. */
export interface VerifyDeps {
  logger?: Logger;
  signal?: AbortSignal;
  /** Paces key checks (default: a `SlidingWindowLimiter` of `options.rps`). */
  limiter?: Pick<RateLimiter, "acquire">;
}

/**
 * Verifies parity between the schemas on uniform samples and returns the report; never writes.
 *
 * @throws {RangeError} on an out-of-range option.
 * @throws {SafetyRefusal} when a master runs Redis older than 7.0 (no read-only scripts).
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
  const limiter = deps.limiter ?? new SlidingWindowLimiter(options.rps);
  let waited = 0;
  const counted: Pick<RateLimiter, "acquire"> = {
    async acquire(n, signal) {
      const wait = await limiter.acquire(n, signal);
      waited += wait;
      return wait;
    },
  };
  const nodes = target.masters() as Redis[];
  logger.log("info", "verify_start", "Verifying parity of the new schema", {
    sample: options.sample,
    workspace: options.workspace === undefined ? null : escapeForLog(options.workspace),
    nodes: nodes.length,
  });
  // No workspace for the pair checks: the samples are already in scope.
  const checks = await openChecks(target, { ...options, workspace: undefined }, {
    limiter: counted,
    signal: deps.signal,
  });
  const sample = async (kind: "old" | "new", population: KeyPopulation, size: number) => {
    const drawn = await sampleKeys(nodes, population, size, {
      signal: deps.signal,
      tuning: options.sampling,
    });
    const { keys, ...about } = drawn;
    const message = `Sampled ${keys.length} ${kind} keys (${drawn.method})`;
    logger.log("info", "verify_sampled", message, { kind, keys: keys.length, ...about });
    return drawn;
  };

  const old = await sample("old", oldPopulation(options.workspace, checks), options.sample);
  const forward = await countJobs(old.keys, checks.ctx, checks.batches());
  const fresh = await sample(
    "new",
    newPopulation(options.keys, options.workspace),
    options.orphanSample ?? options.sample,
  );
  // Each sampled new key is read first: one deleted since it was sampled is gone, not an orphan.
  const reverse = await countOrphans(fresh.keys, checks.ctx, checks.batches(), true);
  const report = toReport({ old, fresh, forward, reverse, options, waited, started });
  logger.log("info", "verify_done", `Verify ${report.passed ? "passed" : "failed"}`, {
    sampled: report.sampled,
    matched: report.matched,
    missing: report.missing,
    mismatched: report.mismatched,
    invalid: report.invalid,
    orphans: report.orphans,
    parity: report.parity,
  });
  return report;
}

/** The report: the kinds of difference collapse into `mismatched`. */
function toReport(found: {
  old: SampleResult;
  fresh: SampleResult;
  forward: Counted;
  reverse: Counted;
  options: VerifyOptions;
  /** Seconds spent waiting for the limiter. */
  waited: number;
  started: number;
}): VerifyReport {
  const { old, fresh, options } = found;
  const f = found.forward.counts;
  const fields = f.field_missing + f.field_differs;
  const parity = computeParity(f.matched, f.checked, f.invalid);
  const orphans = found.reverse.counts.orphans;
  const findings = [...found.forward.findings, ...found.reverse.findings];
  // Escaped job ids in sample order: ids, never values.
  const examples = (...kinds: FindingKind[]) =>
    findings.filter((finding) => kinds.includes(finding.kind)).slice(0, MAX_EXAMPLES)
      .map((finding) => escapeForLog(finding.jobId));
  const examplesByKind: VerifyExamples = {
    missing: examples("missing"),
    mismatched: examples("field_missing", "field_differs", "ttl", "type"),
    invalid: examples("invalid"),
    orphans: examples("orphan"),
  };
  return {
    sampled: f.checked,
    matched: f.matched,
    missing: f.missing,
    mismatched: fields + f.ttl + f.type,
    invalid: f.invalid,
    parity,
    orphans,
    orphans_sampled: found.reverse.counts.new_checked,
    // A sampled verify names no workspace to the checks: `filtered` is a key that changed hands.
    gone: f.gone + f.filtered,
    transient: f.transient + found.reverse.counts.transient,
    mismatch_reasons: { type: f.type, fields, ttl: f.ttl },
    old_keys: old.population,
    old_keys_exact: old.exact,
    new_keys: fresh.population,
    new_keys_exact: fresh.exact,
    sampling: old.method,
    orphan_sampling: fresh.method,
    workspace: options.workspace ?? null,
    min_parity: options.minParity,
    passed: verifyPassed(parity, options.minParity, orphans),
    duration_seconds: Math.round(performance.now() - found.started) / 1000,
    limiter_wait_seconds: Math.round(found.waited * 1000) / 1000,
    examples: examplesByKind,
  };
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
