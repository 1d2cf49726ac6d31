/**
 * The cluster copy across masters, from a READ snapshot, in three grouped steps:
 *
 * 1. WRITE each new key create-only on its master, with its intent in the same call (intents.ts);
 *    the reply says exactly what this call added.
 * 2. RECHECK each old key that got something written: its absolute expiry and packed fields must
 *    still be the snapshot's. Then what was written is what the old key holds.
 * 3. SETTLE each intent on the new keys' masters: cleared where the old key held the snapshot;
 *    where it did not (the application wrote or deleted the job meanwhile), exactly what was added
 *    is taken back, only where it is still as written, and the job is read again (or counted
 *    `skipped_gone` when the old key is gone: a deleted job is never re-created).
 *
 * A call that fails between WRITE and SETTLE leaves the intent: the key's retry (or the next run)
 * completes it before writing the key again.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import type { MigrateOptions, StrategyResult } from "../strategy.ts";
import { type Copy, copyResult, failure } from "./copies.ts";
import { completeIntents, intentKey, intentsOf, verifyWrites } from "./intents.ts";
import type { UncountedCopies } from "../uncounted_copies.ts";
import type { ScriptRunner } from "./runner.ts";
import { Code, SCRIPTS } from "./scripts.ts";

/** A write to verify: the copy and its intent's id. */
type Written = Copy & { id: string };

/** Where the cross-master copy keeps its intents, and how it names them. */
export interface RemoteOptions extends MigrateOptions {
  /** The progress key: intents live in `P:intents:{tag}`. */
  progressKey: string;
  /** A fresh intent id (unique per write, across runs). */
  nextId: () => string;
  /**
   * Where a write left unverified keeps its outcome: its key's retry finds the copy (kept once
   * verified) and would count it `skipped_exists`, although this run made it.
   */
  uncounted: Pick<UncountedCopies, "remember">;
}

/** Copies across masters; returns the copies to read again (their old key changed). */
export async function copyRemote(
  runner: ScriptRunner,
  copies: readonly Copy[],
  results: StrategyResult[],
  options: RemoteOptions,
): Promise<Copy[]> {
  if (copies.length === 0) return [];
  const { progressKey, signal } = options;
  const ids = copies.map(() => options.nextId());
  const jobs = copies.map((c, j) => ({
    key: c.newKey,
    oldKey: c.oldKey,
    args: [c.newKey, intentKey(progressKey, c.newKey), ids[j]!, c.oldKey, c.expireAt, c.packed],
  }));
  const settled = await runner.run(SCRIPTS.write, [], jobs, { signal, recorded: true });
  const written: Written[] = [];
  const pending: Copy[] = [];
  settled.forEach((write, j) => {
    const copy = copies[j]!;
    const id = ids[j]!;
    if (!write.ok) {
      // The call may have run before its reply was lost: its intent (if any) says what it wrote.
      results[copy.index] = failure(write.error, copy.workspace);
      written.push({ ...copy, id });
      return;
    }
    if (write.reply[0] === Code.pending) return void pending.push(copy);
    const [outcome, wrote] = decodeWrite(write.reply, copy);
    results[copy.index] = outcome;
    if (wrote) written.push({ ...copy, id });
  });
  const again = await verify(runner, written, results, options);
  if (pending.length > 0) {
    // An earlier write of these keys was never settled: complete it, then read the jobs again.
    const intents = await intentsOf(runner, progressKey, pending.map((c) => c.newKey), { signal });
    await completeIntents(runner, progressKey, intents, { signal });
    again.push(...pending);
  }
  return again;
}

/** The outcome of a WRITE reply, and whether it wrote anything (to re-check). */
function decodeWrite(reply: unknown[], copy: Copy): [StrategyResult, boolean] {
  const code = reply[0] as number;
  const error = code === Code.error;
  const ttlSet = reply[error ? 2 : 1] === 1;
  const names = (reply[error ? 3 : 2] as Buffer[] | undefined) ?? [];
  const wrote = code === Code.created || (code !== Code.gone && (names.length > 0 || ttlSet));
  if (code !== Code.completed) return [copyResult(reply, copy.workspace), wrote];
  return [{ outcome: wrote ? "repaired" : "skipped_exists", workspace: copy.workspace }, wrote];
}

/** Steps 2 and 3: verify each write (intents.ts); returns the copies to read again. */
async function verify(
  runner: ScriptRunner,
  written: Written[],
  results: StrategyResult[],
  options: RemoteOptions,
): Promise<Copy[]> {
  const { progressKey, signal } = options;
  const verdicts = await verifyWrites(runner, progressKey, written, { signal });
  const again: Copy[] = [];
  verdicts.forEach((verdict, j) => {
    const w = written[j]!;
    if ("error" in verdict) {
      // The intent stays, and the key's retry completes it: the copy made then counts as ours.
      const wrote = results[w.index];
      if (wrote !== undefined) options.uncounted.remember([w.oldKey], [wrote]);
      results[w.index] = failure(verdict.error, w.workspace, true);
    } else if (verdict.keep) return;
    else if (verdict.gone) results[w.index] = { outcome: "skipped_gone" };
    else again.push(w);
  });
  return again;
}
