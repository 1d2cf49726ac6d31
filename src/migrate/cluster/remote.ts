/**
 * The cluster copy across masters, from a READ snapshot, in three grouped steps:
 *
 * 1. WRITE each new key create-only on its master; the reply says exactly what this call added.
 * 2. RECHECK each old key that got something written: its absolute expiry and packed fields must
 *    still be the snapshot's. Then what was written is what the old key holds.
 * 3. Where it is not (the application wrote or deleted the job meanwhile), UNDO exactly what was
 *    added, only where it is still as written, and read the job again (or count it `skipped_gone`
 *    when the old key is gone: a deleted job is never re-created).
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import type { MigrateOptions, StrategyResult } from "../strategy.ts";
import { append, type Copy, failure, scriptError, unverified } from "./copies.ts";
import type { ScriptRunner } from "./runner.ts";
import { Code, SCRIPTS } from "./scripts.ts";

/** What one WRITE added to a new key, as UNDO takes it. */
interface Written {
  copy: Copy;
  /** 1: created whole; 0: the listed fields; 2: unknown (a retried or failed call). */
  mode: 0 | 1 | 2;
  /** The expiry this write set, or -1. */
  expirySet: number;
  /** Names of the fields this write added (mode 0; UNDO takes their values from the snapshot). */
  names: Buffer[];
}

/** Copies across masters; returns the copies to read again (their old key changed). */
export async function copyRemote(
  runner: ScriptRunner,
  copies: readonly Copy[],
  results: StrategyResult[],
  options: MigrateOptions,
): Promise<Copy[]> {
  if (copies.length === 0) return [];
  const jobs = copies.map((c) => ({ key: c.newKey, args: [c.newKey, c.expireAt, c.packed] }));
  const settled = await runner.run(SCRIPTS.write, [], jobs, { signal: options.signal });
  const written: Written[] = [];
  settled.forEach((write, j) => {
    const copy = copies[j]!;
    if (!write.ok) {
      // The call may have run before its reply was lost: check, and take back only an exact copy.
      results[copy.index] = failure(write.error, copy.workspace);
      written.push({ copy, mode: 2, expirySet: copy.expireAt, names: [] });
      return;
    }
    const [outcome, added] = decodeWrite(write.reply, copy, write.tries);
    results[copy.index] = outcome;
    if (added) written.push(added);
  });
  return await recheck(runner, written, results, options);
}

/** The outcome of a WRITE reply, and what it added (nothing: no re-check needed). */
function decodeWrite(
  reply: unknown[],
  copy: Copy,
  tries: number,
): [StrategyResult, Written | undefined] {
  const code = reply[0] as number;
  const workspace = copy.workspace;
  if (code === Code.gone) return [{ outcome: "skipped_gone" }, undefined];
  const expirySet = reply[code === Code.error ? 2 : 1] === 1 ? copy.expireAt : -1;
  if (code === Code.created) {
    const mode = tries > 1 ? 2 : 1;
    return [{ outcome: "migrated", workspace }, { copy, mode, expirySet, names: [] }];
  }
  const names = (reply[code === Code.error ? 3 : 2] as Buffer[] | undefined) ?? [];
  const outcome: StrategyResult = code === Code.error
    ? scriptError(reply[1], workspace)
    : { outcome: names.length > 0 || expirySet > 0 ? "repaired" : "skipped_exists", workspace };
  // A retried call may have written on an attempt whose reply was lost.
  if (tries > 1) return [outcome, { copy, mode: 2, expirySet: copy.expireAt, names: [] }];
  if (names.length === 0 && expirySet < 0) return [outcome, undefined];
  return [outcome, { copy, mode: 0, expirySet, names }];
}

/** Steps 2 and 3: re-check the old keys, undo where they changed. */
async function recheck(
  runner: ScriptRunner,
  written: Written[],
  results: StrategyResult[],
  options: MigrateOptions,
): Promise<Copy[]> {
  if (written.length === 0) return [];
  const settled = await runner.run(
    SCRIPTS.recheck,
    [],
    written.map(({ copy }) => ({
      key: copy.oldKey,
      args: [copy.oldKey, copy.expireAt, copy.packed],
    })),
    { signal: options.signal },
  );
  const undo: { written: Written; gone: boolean }[] = [];
  settled.forEach((check, j) => {
    const w = written[j]!;
    if (!check.ok) results[w.copy.index] = unverified(check.error, w.copy.workspace);
    else if (check.reply[0] !== Code.same) {
      undo.push({ written: w, gone: check.reply[0] === Code.gone });
    }
  });
  if (undo.length === 0) return [];
  const jobs = undo.map(({ written: w }) => ({
    key: w.copy.newKey,
    args: append<Buffer | string | number>(
      [w.copy.newKey, w.mode, w.expirySet, w.copy.packed, w.names.length],
      w.names,
    ),
  }));
  const undone = await runner.run(SCRIPTS.undo, [], jobs, { signal: options.signal });
  const again: Copy[] = [];
  undone.forEach((result, j) => {
    const { written: w, gone } = undo[j]!;
    if (!result.ok) results[w.copy.index] = unverified(result.error, w.copy.workspace);
    else if (result.reply[0] !== Code.same) {
      results[w.copy.index] = unverified(new Error("CHANGED"), w.copy.workspace);
    } else if (gone) results[w.copy.index] = { outcome: "skipped_gone" };
    else again.push(w.copy);
  });
  return again;
}
