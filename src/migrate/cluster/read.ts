/**
 * Step 1 of the cluster copy: READ a consistent snapshot of each old key (grouped on the master
 * that serves them) and classify it like the standalone path.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import { isOutage } from "../../redis/errors.ts";
import { jobIdOf, newKeyFor, WORKSPACE_FIELD, type WorkspaceRule } from "../../schema.ts";
import { invalidResult, type MigrateOptions, type StrategyResult } from "../strategy.ts";
import { type Copy, failure, type Pending } from "./copies.ts";
import type { ScriptRunner } from "./runner.ts";
import { Code, SCRIPTS } from "./scripts.ts";

/**
 * Reads `pending`; sets the result of every key that needs no copy and returns the others.
 *
 * @throws the connection error when an old key's node stays out of reach (an outage: the engine
 *   waits for it and re-reads the batch from its checkpoint).
 */
export async function readSnapshots(
  runner: ScriptRunner,
  rule: WorkspaceRule,
  pending: readonly Pending[],
  results: StrategyResult[],
  options: MigrateOptions,
): Promise<Copy[]> {
  const settled = await runner.run(
    SCRIPTS.read,
    [WORKSPACE_FIELD, options.workspace ?? ""],
    pending.map((p) => ({ key: p.oldKey, args: [p.oldKey] })),
    { signal: options.signal },
  );
  const copies: Copy[] = [];
  settled.forEach((read, j) => {
    const item = pending[j]!;
    if (!read.ok) {
      if (isOutage(read.error)) throw read.error;
      results[item.index] = failure(read.error);
      return;
    }
    const decided = classify(rule, item, read.reply);
    if ("outcome" in decided) results[item.index] = decided;
    else copies.push(decided);
  });
  return copies;
}

/** The outcome of a READ reply, or the copy to make. */
function classify(rule: WorkspaceRule, item: Pending, reply: unknown[]): StrategyResult | Copy {
  const code = reply[0] as number;
  if (code === Code.gone) return { outcome: "skipped_gone" };
  if (code === Code.invalid) return invalidResult(String(reply[1]));
  const jobId = jobIdOf(item.oldKey);
  if (jobId === undefined || jobId.length === 0) return invalidResult("empty_job_id");
  const workspace = rule.check(reply[1] as Buffer);
  if (workspace === undefined) return invalidResult("invalid_workspace_id");
  if (code === Code.filtered) return { outcome: "filtered", workspace };
  return {
    ...item,
    newKey: newKeyFor(workspace, jobId),
    workspace,
    expireAt: reply[2] as number,
    fields: reply[3] as Buffer[],
    digest: String(reply[4]),
  };
}
