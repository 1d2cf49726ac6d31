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
import { type Copy, copyResult, failure } from "./copies.ts";
import { Code, SCRIPTS } from "./scripts.ts";

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
    results[copy.index] = plan.ok
      ? copyResult(plan.reply, copy.workspace)
      : failure(plan.error, copy.workspace);
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
    else results[copy.index] = copyResult(copied.reply, copy.workspace);
  });
  return outcome;
}
