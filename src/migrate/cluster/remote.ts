/**
 * The cluster copy across masters, from a READ snapshot: WRITE each new key create-only with its
 * intent, then RECHECK the old key and SETTLE the intent (intents.ts); a job whose old key
 * changed is read again, one whose old key is gone counts `skipped_gone`.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import type { MigrateOptions, StrategyResult } from "../strategy.ts";
import { type Copy, copyResult, failure } from "./copies.ts";
import { completeIntents, intentKey, listIntents, verifyWrites } from "./intents.ts";
import type { UncountedCopies } from "../uncounted_copies.ts";
import type { ScriptRunner } from "./runner.ts";
import { Code, SCRIPTS } from "./scripts.ts";

type Written = Copy & { id: string };

/** Where the cross-master copy keeps its intents, how it names them, where unverified go. */
export interface RemoteOptions extends MigrateOptions {
  progressKey: string;
  /** A fresh intent id (unique per write, across runs). */
  nextId: () => string;
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
    const intents = await listIntents(runner, progressKey, pending.map((c) => c.newKey), {
      signal,
    });
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
