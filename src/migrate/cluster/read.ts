/**
 * Step 1 of the cluster copy: READ a snapshot of each old key on its master and classify it like
 * the standalone path; with `here`, the same call copies the jobs whose new key it also serves.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import { isOutage } from "../../redis/errors.ts";
import { DEFAULT_WORKSPACE_LUA, type KeySchema } from "../../schema.ts";
import { invalidResult, type MigrateOptions, type StrategyResult } from "../strategy.ts";
import { type Copy, copyResult, failure, type Pending } from "./copies.ts";
import type { ScriptRunner } from "./runner.ts";
import { Code, SCRIPTS } from "./scripts.ts";

/** Options of {@linkcode readSnapshots}. */
export interface ReadOptions extends MigrateOptions {
  /** Copy in the same call each job whose new key the old key's master serves (default rule). */
  here?: boolean;
}

/**
 * Reads `pending`; sets the result of every key that needs no further copy, returns the others.
 *
 * @throws the connection error when an old key's node stays out of reach (an outage: the engine
 *   waits for it and re-reads the batch from its checkpoint).
 */
export async function readSnapshots(
  runner: ScriptRunner,
  keys: KeySchema,
  pending: readonly Pending[],
  results: StrategyResult[],
  options: ReadOptions,
): Promise<Copy[]> {
  const header = [
    options.workspace ?? "",
    options.here ? "1" : "",
    keys.luaSpec,
    DEFAULT_WORKSPACE_LUA.pattern,
    DEFAULT_WORKSPACE_LUA.maxLength,
  ];
  const settled = await runner.run(
    options.here ? SCRIPTS.readHere : SCRIPTS.read,
    header,
    pending.map((p) => ({ key: p.oldKey, args: [p.oldKey] })),
    { signal: options.signal, recorded: options.here },
  );
  const copies: Copy[] = [];
  settled.forEach((read, j) => {
    const item = pending[j]!;
    if (!read.ok) {
      if (isOutage(read.error)) throw read.error;
      results[item.index] = failure(read.error);
      return;
    }
    const decided = classify(keys, item, read.reply);
    if ("outcome" in decided) results[item.index] = decided;
    else copies.push(decided);
  });
  return copies;
}

/** Codes of a job READ copied on its own node (`here`); the workspace id is the last entry. */
const COPIED_HERE: ReadonlySet<number> = new Set([
  Code.migrated,
  Code.repaired,
  Code.exists,
  Code.error,
]);

/** The outcome of a READ reply, or the copy to make. */
function classify(keys: KeySchema, item: Pending, reply: unknown[]): StrategyResult | Copy {
  const code = reply[0] as number;
  if (code === Code.gone) return { outcome: "skipped_gone" };
  if (COPIED_HERE.has(code)) return copyResult(reply, (reply.at(-1) as Buffer).toString("latin1"));
  if (code === Code.invalid) return invalidResult(String(reply[1]));
  if (keys.oldParts(item.oldKey) === undefined) return invalidResult("empty_job_id");
  // The workspace, then the other fields the new name reads (after the snapshot for a copy).
  const others = code === Code.filtered ? 2 : 4;
  const rest = reply.slice(others, others + keys.fields.length - 1) as Buffer[];
  const values = keys.checkValues([reply[1] as Buffer, ...rest]);
  if (values === undefined) return invalidResult("invalid_workspace_id");
  const workspace = values[0]!;
  if (code === Code.filtered) return { outcome: "filtered", workspace };
  const newKey = keys.newKeyOf(item.oldKey, values);
  if (newKey === undefined) return invalidResult("invalid_workspace_id");
  return {
    ...item,
    newKey,
    workspace,
    values,
    expireAt: reply[2] as number,
    packed: reply[3] as Buffer,
  };
}
