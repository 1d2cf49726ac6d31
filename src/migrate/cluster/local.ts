/**
 * The cluster copy where no snapshot is written: the dry-run plan, and the node-local copy of a
 * job whose old and new key one master serves (read and create-only write in one atomic script,
 * from the live old key, so nothing can interleave and no re-check is needed).
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import { isTopology, type ScriptRunner } from "./runner.ts";
import type { MigrateOptions, StrategyResult } from "../strategy.ts";
import { type Copy, failure, scriptError } from "./copies.ts";
import { Code, SCRIPTS } from "./scripts.ts";

const DONE: Record<number, StrategyResult["outcome"]> = {
  [Code.migrated]: "migrated",
  [Code.repaired]: "repaired",
  [Code.exists]: "skipped_exists",
};

/** Dry-run: what WRITE would do for each copy, by read-only scripts on the new keys' masters. */
export async function planCopies(
  runner: ScriptRunner,
  copies: readonly Copy[],
  results: StrategyResult[],
  options: MigrateOptions,
): Promise<void> {
  const jobs = copies.map((c) => ({ key: c.newKey, args: [c.newKey, c.expireAt, c.packed] }));
  const settled = await runner.run(SCRIPTS.dry, [], jobs, { signal: options.signal });
  settled.forEach((plan, j) => {
    const copy = copies[j]!;
    results[copy.index] = plan.ok ? decode(plan.reply, copy) : failure(plan.error, copy.workspace);
  });
}

/** Outcome of the copies the node-local script handled; what it could not are returned. */
export interface LocalOutcome {
  /** The old key changed between READ and the copy: read again. */
  changed: Copy[];
  /** A slot moved: copy these the cross-node way. */
  moved: Copy[];
}

/**
 * Copies each job atomically on the master that serves both its keys, if the fields its new name
 * reads (`luaSpec`: the key mapping, `KeySchema.luaSpec`) still hold the values the client
 * validated.
 */
export async function copyLocal(
  runner: ScriptRunner,
  luaSpec: Buffer,
  copies: readonly Copy[],
  results: StrategyResult[],
  options: MigrateOptions,
): Promise<LocalOutcome> {
  const outcome: LocalOutcome = { changed: [], moved: [] };
  if (copies.length === 0) return outcome;
  const settled = await runner.run(
    SCRIPTS.local,
    [luaSpec],
    copies.map((c) => ({ key: c.oldKey, args: [c.oldKey, c.newKey, ...c.values] })),
    { routed: false, recorded: true, signal: options.signal },
  );
  settled.forEach((copied, j) => {
    const copy = copies[j]!;
    if (!copied.ok) {
      if (isTopology(copied.error)) outcome.moved.push(copy);
      else results[copy.index] = failure(copied.error, copy.workspace);
    } else if (copied.reply[0] === Code.moved) outcome.moved.push(copy);
    else if (copied.reply[0] === Code.changed) outcome.changed.push(copy);
    else results[copy.index] = decode(copied.reply, copy);
  });
  return outcome;
}

function decode(reply: unknown[], copy: Copy): StrategyResult {
  return localResult(reply, copy.workspace);
}

/**
 * The result of a copy made on one node (LOCAL, DRY, or READ copying where the new key is): a
 * reply code among migrated, repaired, exists, gone and error.
 */
export function localResult(reply: unknown[], workspace: string): StrategyResult {
  const code = reply[0] as number;
  if (code === Code.gone) return { outcome: "skipped_gone" };
  if (code === Code.error) return scriptError(reply[1], workspace);
  const outcome = DONE[code];
  if (outcome === undefined) throw new Error(`cluster copy script returned unknown code ${code}`);
  return { outcome, workspace };
}
