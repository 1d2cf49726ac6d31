/**
 * One chunk of `verify --full`: its keys checked in sub-batches, the differences rechecked, and
 * the final verdicts tallied into counts and report findings.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import { type CheckContext, type CheckedJob, checkJobs, checkOrphans } from "./check.ts";
import { type FullCounts, zeroCounts } from "./checkpoint.ts";
import { isMismatch } from "./compare.ts";
import type { Finding } from "./report_file.ts";
import type { SubBatches } from "./sub_batches.ts";
import { countJob, countOrphan } from "./tally.ts";

/** A checked chunk: its counts and the findings they include. */
export interface CheckedChunk {
  counts: FullCounts;
  findings: Finding[];
}

/** What checking a chunk needs: the sub-batches (sized and paced) and the pass context. */
export interface ChunkDeps {
  batches: SubBatches;
  ctx: CheckContext;
}

/** Compares a chunk of old keys with their new keys. */
export async function checkJobChunk(keys: Buffer[], deps: ChunkDeps): Promise<CheckedChunk> {
  const { keys: schema } = deps.ctx;
  const candidates = keys.filter((key) => schema.idOf(key) !== undefined);
  const results = await firstJobPass(candidates, deps);
  const suspects = await recheckJobs(candidates, results, deps);
  const counts = zeroCounts();
  const findings: Finding[] = [];
  results.forEach((result, i) =>
    countJob(counts, findings, { oldKey: candidates[i]!, keys: schema }, result)
  );
  counts.transient = suspects.filter((i) => results[i]!.verdict.kind === "matched").length;
  return { counts, findings };
}

/** The first pass over old keys (sub-batches), before any recheck. */
export function firstJobPass(keys: Buffer[], { batches, ctx }: ChunkDeps): Promise<CheckedJob[]> {
  return batches.run(keys, (sub, timing) => checkJobs(sub, ctx, timing));
}

/** Rechecks the differences of a first pass in place; returns the positions that differed. */
function recheckJobs(
  keys: Buffer[],
  results: CheckedJob[],
  { batches, ctx }: ChunkDeps,
): Promise<number[]> {
  return batches.recheck(
    keys,
    results,
    (result) => isMismatch(result.verdict),
    (sub, timing) => checkJobs(sub, ctx, timing),
  );
}

/**
 * Settles the old keys the lane script did not find matched (`lanes.ts`), after their first pass
 * (`firstJobPass`), exactly as a chunk's keys: the same rechecks, counts and findings. The lane
 * script's verdict only chose them; one it called a difference (`laneMismatch[i]`) that ends
 * matched cleared, and counts as `transient`, as do the differences the pass found that a recheck
 * cleared.
 */
export async function settleLaneSuspects(
  keys: Buffer[],
  results: CheckedJob[],
  laneMismatch: readonly boolean[],
  deps: ChunkDeps,
): Promise<CheckedChunk> {
  // SCAN MATCH gave old keys only: each has a job id (checkJobChunk's filter keeps them all).
  const suspects = await recheckJobs(keys, results, deps);
  const counts = zeroCounts();
  const findings: Finding[] = [];
  results.forEach((result, i) =>
    countJob(counts, findings, { oldKey: keys[i]!, keys: deps.ctx.keys }, result)
  );
  const cleared = new Set(suspects);
  laneMismatch.forEach((mismatch, i) => mismatch && cleared.add(i));
  counts.transient = [...cleared].filter((i) => results[i]!.verdict.kind === "matched").length;
  return { counts, findings };
}

/** Checks a chunk of new keys for orphans. */
export async function checkOrphanChunk(keys: Buffer[], deps: ChunkDeps): Promise<CheckedChunk> {
  const { batches, ctx } = deps;
  const results = await batches.run(
    keys,
    (sub, timing) => checkOrphans(sub, ctx, { timing }),
  );
  const suspects = await batches.recheck(
    keys,
    results,
    (verdict) => verdict.kind === "orphan",
    (sub, timing) => checkOrphans(sub, ctx, { confirmNew: true, timing }),
  );
  const counts = zeroCounts();
  const findings: Finding[] = [];
  results.forEach((verdict) => countOrphan(counts, findings, verdict));
  counts.transient = suspects.filter((i) => results[i]!.kind === "ok").length;
  return { counts, findings };
}
