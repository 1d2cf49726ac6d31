/**
 * The cluster copy where no snapshot is written: the dry-run plan, and the copy of a job whose
 * keys one master serves, in one atomic script from the live old key (so no re-check is needed).
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

/** The copies the node-local script could not make: to read again, or to copy across nodes. */
export interface LocalOutcome {
  changed: Copy[];
  moved: Copy[];
}

/** Copies each job on the master serving both keys, if its values are still the validated ones. */
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
