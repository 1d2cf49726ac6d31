/**
 * The checks of both verifies: a pass over a sub-batch compares both sides in the read-only
 * script, asks for field names only where pairs differ, rechecks the differences, and counts the
 * final verdicts into the counts and findings both reports are made from.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { isSameWorkspace, type KeySchema } from "../schema.ts";
import {
  compareSides,
  decodeFields,
  decodePairNew,
  decodeSide,
  diffFields,
  isMismatch,
  type JobVerdict,
  type OrphanReason,
  orphanReason,
  plainVerdict,
  type SideState,
} from "./verdicts.ts";
import type { RateLimiter } from "../control/rate_limit.ts";
import type { RedisTarget } from "../redis/target.ts";
import { type CallTiming, NodeCalls, type NodeCallsOptions } from "./node_calls.ts";
import { SUB_BATCHES_IN_FLIGHT, SubBatches } from "./sub_batches.ts";
import { KeyCode } from "./script.ts";
import { type Finding, type FullCounts, zeroCounts } from "./full/report.ts";

export interface CheckContext {
  calls: NodeCalls;
  keys: KeySchema;
  /** Only this workspace's jobs (others are `filtered`). */
  workspace?: string;
  toleranceMs: number;
}

/** How both verifies check pairs and bound their calls. */
export interface CheckOptions extends
  Pick<
    NodeCallsOptions,
    "workspace" | "callBudgetUs" | "callClock" | "callsInFlight" | "shared"
  > {
  /** The backfill's key mapping and workspace rule. */
  keys: KeySchema;
  /** TTLs that differ by more than this many seconds are a mismatch (`--ttl-tolerance`). */
  ttlToleranceSeconds: number;
  /** Rechecks of a difference before it counts (`--recheck`). */
  recheck: number;
  /** Pause before each recheck round, in milliseconds. */
  recheckDelayMs: number;
  /** At most this many key checks per second (`--rps`); 0 = unlimited. */
  rps: number;
}

/** The pass context and new sub-batches. */
export interface Checks {
  ctx: CheckContext;
  /** New sub-batches: each kind of check learns its own size (costs per key differ). */
  batches(): SubBatches;
}

/**
 * Loads the script on every master (Redis ≥ 7.0 or a refusal) and sets up the checks.
 *
 * @throws {SafetyRefusal} when a master runs Redis older than 7.0.
 */
export async function openChecks(
  target: Pick<RedisTarget, "kind" | "client" | "masters">,
  options: CheckOptions,
  deps: { limiter: Pick<RateLimiter, "acquire">; signal?: AbortSignal },
): Promise<Checks> {
  const toleranceMs = options.ttlToleranceSeconds * 1000;
  const calls = new NodeCalls(target, { ...options, toleranceMs, signal: deps.signal });
  await calls.init();
  return {
    ctx: { calls, keys: options.keys, workspace: options.workspace, toleranceMs },
    batches: () =>
      new SubBatches({
        ...options,
        ...deps,
        callBudgetUs: calls.callBudgetUs,
        inFlight: SUB_BATCHES_IN_FLIGHT,
      }),
  };
}

/** A checked old key's final verdict and, for a finding, its workspace id. */
export type CheckedJob = Exclude<JobVerdict, { kind: "fields" }> & { workspace?: string };

const PAIR_OTHERS_AT = 7;

/** An old key whose new key is compared, and the values its new key's name reads. */
interface PendingJob {
  index: number;
  /** The workspace first. */
  values: readonly string[];
}

/** The new key of a pending job: built only where read on its own (most keys never are). */
function newKeyOf(keys: KeySchema, oldKeys: readonly Buffer[], job: PendingJob): Buffer {
  return keys.newKeyOf(oldKeys[job.index]!, job.values)!;
}

/** The workspace of a pair the script found matched (entry: the values' bytes), when valid. */
function matchedWorkspace(keys: KeySchema, entry: Uint8Array): string | undefined {
  if (keys.fields.length === 1) return keys.checkWorkspace(entry);
  const values = Buffer.from(entry).toString("latin1").split(":");
  return keys.checkValues(values.map((value) => Buffer.from(value, "latin1")))?.[0];
}

/**
 * Compares old keys with their new keys; one result per key, in order. One `pair` call per node
 * reads both sides where the new key lives on the old key's node (always on a standalone); only
 * the other new keys take a second call, on their own nodes.
 */
export async function checkJobs(
  oldKeys: readonly Buffer[],
  ctx: CheckContext,
  timing?: CallTiming,
): Promise<CheckedJob[]> {
  const entries = await ctx.calls.read(oldKeys, "pair", { oldSide: true, timing });
  const results: CheckedJob[] = new Array(oldKeys.length);
  const { olds, pending } = triage(entries, ctx, results);
  const fresh = pending.map(({ index, values }) =>
    decodePairNew(entries[index]!, olds[index]!, values)
  );
  await readUnpaired(oldKeys, { pending, olds, fresh }, ctx, timing);
  const differing: PendingJob[] = [];
  pending.forEach((job, j) => {
    const verdict = compareSides(fresh[j]!, olds[job.index]!, ctx.toleranceMs);
    if (verdict.kind === "fields") differing.push(job);
    // A matched job needs no workspace (only findings name it): most keys share one result.
    else if (verdict.kind === "matched") results[job.index] = verdict;
    else results[job.index] = { ...verdict, workspace: job.values[0] };
  });
  if (differing.length > 0) await compareFields(oldKeys, differing, results, { ctx, timing });
  return results;
}

/**
 * Settles in `results` the keys whose new key is not compared here: matched by the script, gone,
 * invalid or filtered. Returns the decoded old sides and the pending others.
 */
function triage(
  entries: readonly unknown[],
  ctx: CheckContext,
  results: CheckedJob[],
): { olds: (SideState | undefined)[]; pending: PendingJob[] } {
  const pending: PendingJob[] = [];
  const olds = entries.map((entry, index) => {
    if (!Array.isArray(entry)) {
      const workspace = matchedWorkspace(ctx.keys, entry as Uint8Array);
      results[index] = outOfScope(ctx, workspace) ?? plainVerdict("matched");
      return undefined;
    }
    const old = decodeSide(entry, PAIR_OTHERS_AT);
    // The backfill's rules (schema.ts): default pattern, --workspace-pattern, --pattern.
    const values = old.code === KeyCode.hash
      ? ctx.keys.checkValues([old.workspace, ...old.others])
      : undefined;
    const settled = old.code === KeyCode.absent
      ? plainVerdict("gone")
      : outOfScope(ctx, values?.[0]);
    if (settled !== undefined) results[index] = settled;
    else pending.push({ index, values: values! });
    return old;
  });
  return { olds, pending };
}

/** `invalid` without a valid workspace, `filtered` for another than `--workspace`. */
function outOfScope(ctx: CheckContext, workspace: string | undefined): CheckedJob | undefined {
  if (workspace === undefined) return plainVerdict("invalid");
  return ctx.workspace !== undefined && workspace !== ctx.workspace
    ? plainVerdict("filtered")
    : undefined;
}

/** Reads the new sides the `pair` call could not (filling `fresh`), and old digests it skipped. */
async function readUnpaired(
  oldKeys: readonly Buffer[],
  sides: {
    pending: PendingJob[];
    olds: (SideState | undefined)[];
    fresh: (SideState | undefined)[];
  },
  ctx: CheckContext,
  timing?: CallTiming,
): Promise<void> {
  const { pending, olds, fresh } = sides;
  const unread = pending.flatMap((_, j) => fresh[j] === undefined ? [j] : []);
  if (unread.length === 0) return;
  // Both sides by digest; the old side is read again where the pair call gave no digest.
  const noDigest = unread.filter((j) => olds[pending[j]!.index]!.digest === "");
  const [read, again] = await Promise.all([
    ctx.calls.read(unread.map((j) => newKeyOf(ctx.keys, oldKeys, pending[j]!)), "side", { timing }),
    ctx.calls.read(noDigest.map((j) => oldKeys[pending[j]!.index]!), "side", {
      oldSide: true,
      timing,
    }),
  ]);
  noDigest.forEach((j, r) => olds[pending[j]!.index] = decodeSide(again[r]!));
  unread.forEach((j, r) => fresh[j] = decodeSide(read[r]!));
}

/** Second pass where digests differ: field names and salted value hashes name the fields. */
async function compareFields(
  oldKeys: readonly Buffer[],
  differing: readonly PendingJob[],
  results: CheckedJob[],
  { ctx, timing }: { ctx: CheckContext; timing?: CallTiming },
): Promise<void> {
  const [oldFields, newFields] = await Promise.all([
    ctx.calls.read(differing.map((job) => oldKeys[job.index]!), "fields", { timing }),
    ctx.calls.read(differing.map((job) => newKeyOf(ctx.keys, oldKeys, job)), "fields", { timing }),
  ]);
  differing.forEach(({ index, values }, d) => {
    const old = decodeFields(oldFields[d]!);
    const now = decodeFields(newFields[d]!);
    let verdict: CheckedJob;
    if (old === undefined) verdict = plainVerdict("gone");
    else if (now === undefined) verdict = plainVerdict("missing");
    // Both agree now: the key changed between the passes; keep it a suspect for the recheck.
    else verdict = diffFields(old, now) ?? { kind: "field_differs", fields: [] };
    results[index] = { ...verdict, workspace: values[0] };
  });
}

/** The verdict on one new key in the orphan scan. */
export type OrphanVerdict =
  | { kind: "ok" | "gone" | "filtered" }
  | { kind: "orphan"; reason: OrphanReason; workspace: Buffer; jobId: Buffer };

/**
 * Checks new keys for orphans (see `orphanReason`). `confirmNew` also re-reads the new key, so
 * one deleted meanwhile is `gone`, not an orphan.
 */
export async function checkOrphans(
  newKeys: readonly Buffer[],
  ctx: CheckContext,
  options: { confirmNew?: boolean; timing?: CallTiming } = {},
): Promise<OrphanVerdict[]> {
  const timing = options.timing;
  const parsed = newKeys.map((key) => ctx.keys.parseNewKey(key));
  const asked = parsed.flatMap((p, i) =>
    p !== undefined && (ctx.workspace === undefined || isSameWorkspace(p.workspace, ctx.workspace))
      ? [i]
      : []
  );
  const [owners, current] = await Promise.all([
    ctx.calls.read(asked.map((i) => parsed[i]!.oldKey), "owner", { timing }),
    options.confirmNew
      ? ctx.calls.read(asked.map((i) => newKeys[i]!), "owner", { timing })
      : undefined,
  ]);
  const verdicts: OrphanVerdict[] = newKeys.map(() => ({ kind: "filtered" }));
  asked.forEach((i, j) => {
    if (current !== undefined && Number(current[j]![0]) === KeyCode.absent) {
      verdicts[i] = { kind: "gone" };
      return;
    }
    const { oldKey, values: latin1 } = parsed[i]!;
    const jobId = ctx.keys.idOf(oldKey)!;
    // parseNewKey gives the values as latin1: back to the exact bytes of the key name.
    const values = latin1.map((value) => Buffer.from(value, "latin1"));
    const reason = orphanReason(values, owners[j]!);
    verdicts[i] = reason === undefined
      ? { kind: "ok" }
      : { kind: "orphan", reason, workspace: values[0]!, jobId };
  });
  return verdicts;
}

/** Checked keys: their counts and findings (one per counted difference). */
export interface Counted {
  counts: FullCounts;
  findings: Finding[];
}

/**
 * Compares old keys with their new keys, rechecks the differences (one counts only if it survives
 * every recheck: a dual write in flight lands meanwhile), and counts the final verdicts.
 */
export async function countJobs(
  keys: readonly Buffer[],
  ctx: CheckContext,
  batches: SubBatches,
): Promise<Counted> {
  const schema = ctx.keys;
  const candidates = keys.filter((key) => schema.idOf(key) !== undefined);
  const check = (keys: Buffer[], timing: CallTiming) => checkJobs(keys, ctx, timing);
  const results = await batches.run(candidates, check);
  const suspects = await batches.recheck(
    candidates,
    results,
    isMismatch,
    check,
  );
  const counts = zeroCounts();
  const findings: Finding[] = [];
  results.forEach((result, i) =>
    countJob(counts, findings, { oldKey: candidates[i]!, keys: schema }, result)
  );
  counts.transient = suspects.filter((i) => results[i]!.kind === "matched").length;
  return { counts, findings };
}

/**
 * Checks new keys for orphans, rechecks the orphans (confirming the new key still exists;
 * `confirmFirst`: the first pass too), and counts the final verdicts.
 */
export async function countOrphans(
  keys: readonly Buffer[],
  ctx: CheckContext,
  batches: SubBatches,
  confirmFirst = false,
): Promise<Counted> {
  const check = (confirmNew: boolean) => (keys: Buffer[], timing: CallTiming) =>
    checkOrphans(keys, ctx, { confirmNew, timing });
  const results = await batches.run(keys, check(confirmFirst));
  const orphan = (verdict: OrphanVerdict) => verdict.kind === "orphan";
  const suspects = await batches.recheck(keys, results, orphan, check(true));
  const counts = zeroCounts();
  const findings: Finding[] = [];
  for (const verdict of results) {
    if (verdict.kind === "ok") counts.new_checked++;
    if (verdict.kind !== "orphan") continue;
    counts.new_checked++;
    counts.orphans++;
    const { jobId, workspace, reason } = verdict;
    findings.push({ kind: "orphan", jobId, workspace, reason });
  }
  counts.transient = suspects.filter((i) => results[i]!.kind === "ok").length;
  return { counts, findings };
}

/** Counts one old key's final verdict, and records it as a finding when it is one. */
function countJob(
  counts: FullCounts,
  findings: Finding[],
  job: { oldKey: Buffer; keys: Pick<KeySchema, "idOf"> },
  result: CheckedJob,
): void {
  switch (result.kind) {
    case "gone":
    case "filtered":
      counts[result.kind]++;
      return;
    case "matched":
      counts.checked++;
      counts.matched++;
      return;
  }
  // Only findings need the job id (most keys match).
  const jobId = job.keys.idOf(job.oldKey)!;
  counts.checked++;
  const { workspace } = result;
  switch (result.kind) {
    case "invalid":
      counts.invalid++;
      // The raw workspace field of an invalid job is a value: it is never written.
      findings.push({ kind: "invalid", jobId });
      return;
    case "field_missing":
    case "field_differs":
      counts[result.kind]++;
      findings.push({ kind: result.kind, jobId, workspace, fields: result.fields });
      return;
    default:
      counts[result.kind]++;
      findings.push({ kind: result.kind, jobId, workspace });
  }
}
