/**
 * One chunk of `verify --full`: its keys checked in sub-batches, the differences rechecked, and
 * the final verdicts tallied into counts and report findings.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import { jobIdOf } from "../../schema.ts";
import { type CheckContext, type CheckedJob, checkJobs, checkOrphans } from "../pairs.ts";
import { type FullCounts, zeroCounts } from "./checkpoint.ts";
import { isMismatch } from "../verdicts.ts";
import type { Finding } from "./report_file.ts";
import type { SubBatches } from "../sub_batches.ts";
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
  const candidates = keys.filter((key) => jobIdOf(key) !== undefined);
  const results = await deps.batches.run(
    candidates,
    (sub, timing) => checkJobs(sub, deps.ctx, timing),
  );
  const suspects = await recheckJobs(candidates, results, deps);
  const counts = zeroCounts();
  const findings: Finding[] = [];
  results.forEach((result, i) => countJob(counts, findings, candidates[i]!, result));
  counts.transient = suspects.filter((i) => results[i]!.verdict.kind === "matched").length;
  return { counts, findings };
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
