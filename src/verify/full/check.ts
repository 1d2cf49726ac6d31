/**
 * One comparison pass of `verify --full` over a sub-batch of keys: read both sides with the
 * read-only script (grouped per node), decide in JS, and ask for field names only where the
 * digests differ. Rechecks call these again for the keys that still differ.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import {
  isSameWorkspace,
  jobIdOf,
  newKeyFor,
  oldKeyFor,
  parseNewKey,
  type WorkspaceRule,
} from "../../schema.ts";
import {
  compareSides,
  decodeFields,
  decodeSide,
  diffFields,
  type JobVerdict,
  type OrphanReason,
  orphanReason,
} from "./compare.ts";
import type { NodeCalls } from "./node_calls.ts";
import { KeyCode } from "./scripts.ts";

/** What a pass needs. */
export interface CheckContext {
  calls: NodeCalls;
  rule: WorkspaceRule;
  /** Only this workspace's jobs (others are `filtered`). */
  workspace?: string;
  toleranceMs: number;
}

/** A checked old key: its verdict and, when valid, its workspace id. */
export interface CheckedJob {
  verdict: JobVerdict;
  workspace?: string;
}

/** Compares old keys with their new keys; one result per key, in order. */
export async function checkJobs(
  oldKeys: readonly Buffer[],
  ctx: CheckContext,
): Promise<CheckedJob[]> {
  const olds = (await ctx.calls.read(oldKeys, "side", { oldSide: true })).map(decodeSide);
  const results: CheckedJob[] = new Array(oldKeys.length);
  const pending: { index: number; newKey: Buffer; workspace: string }[] = [];
  olds.forEach((old, index) => {
    // The same rule object as the backfill (schema.ts), default pattern or --workspace-pattern.
    const workspace = old.code === KeyCode.hash ? ctx.rule.check(old.workspace) : undefined;
    if (old.code === KeyCode.absent) results[index] = { verdict: { kind: "gone" } };
    else if (workspace === undefined) results[index] = { verdict: { kind: "invalid" } };
    else if (ctx.workspace !== undefined && workspace !== ctx.workspace) {
      results[index] = { verdict: { kind: "filtered" } };
    } else {
      const jobId = jobIdOf(oldKeys[index]!)!;
      pending.push({ index, newKey: newKeyFor(workspace, jobId), workspace });
    }
  });
  const fresh = (await ctx.calls.read(pending.map((p) => p.newKey), "side")).map(decodeSide);
  const differing: number[] = [];
  pending.forEach(({ index, workspace }, j) => {
    const verdict = compareSides(fresh[j]!, olds[index]!, ctx.toleranceMs);
    results[index] = { verdict, workspace };
    if (verdict.kind === "fields") differing.push(j);
  });
  if (differing.length === 0) return results;
  // Second pass, only for digests that differ: names and salted value hashes of both sides.
  const [oldFields, newFields] = await Promise.all([
    ctx.calls.read(differing.map((j) => oldKeys[pending[j]!.index]!), "fields"),
    ctx.calls.read(differing.map((j) => pending[j]!.newKey), "fields"),
  ]);
  differing.forEach((j, d) => {
    const { index, workspace } = pending[j]!;
    const old = decodeFields(oldFields[d]!);
    const now = decodeFields(newFields[d]!);
    let verdict: JobVerdict;
    if (old === undefined) verdict = { kind: "gone" };
    else if (now === undefined) verdict = { kind: "missing" };
    // Both agree now: the key changed between the passes; keep it a suspect for the recheck.
    else verdict = diffFields(old, now) ?? { kind: "field_differs", fields: [] };
    results[index] = { verdict, workspace };
  });
  return results;
}

/** The verdict on one new key in the orphan scan. */
export type OrphanVerdict =
  | { kind: "ok" | "gone" | "filtered" }
  | { kind: "orphan"; reason: OrphanReason; workspace: Buffer; jobId: Buffer };

/**
 * Checks new keys for orphans: the old key is missing or names another workspace. `confirmNew`
 * (rechecks) also re-reads the new key, so one deleted meanwhile is `gone`, not an orphan.
 */
export async function checkOrphans(
  newKeys: readonly Buffer[],
  ctx: CheckContext,
  options: { confirmNew?: boolean } = {},
): Promise<OrphanVerdict[]> {
  const parsed = newKeys.map((key) => parseNewKey(key));
  const inScope = parsed.map((p) =>
    p !== undefined && (ctx.workspace === undefined || isSameWorkspace(p.workspace, ctx.workspace))
  );
  const asked = newKeys.map((_, i) => i).filter((i) => inScope[i]);
  const [owners, current] = await Promise.all([
    ctx.calls.read(asked.map((i) => oldKeyFor(parsed[i]!.jobId)), "owner"),
    options.confirmNew ? ctx.calls.read(asked.map((i) => newKeys[i]!), "owner") : undefined,
  ]);
  const verdicts: OrphanVerdict[] = newKeys.map(() => ({ kind: "filtered" }));
  asked.forEach((i, j) => {
    if (current !== undefined && Number(current[j]![0]) === KeyCode.absent) {
      verdicts[i] = { kind: "gone" };
      return;
    }
    const { jobId, workspace: latin1 } = parsed[i]!;
    // parseNewKey gives the workspace as latin1: back to the exact bytes of the key name.
    const workspace = Buffer.from(latin1, "latin1");
    const reason = orphanReason(workspace, owners[j]!);
    verdicts[i] = reason === undefined
      ? { kind: "ok" }
      : { kind: "orphan", reason, workspace, jobId };
  });
  return verdicts;
}
