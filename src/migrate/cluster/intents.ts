/**
 * Durable intents of the cluster copy's cross-master writes. A copy whose old and new key live on
 * different masters writes the new key from a snapshot, then re-checks the old key against that
 * snapshot on the other master; only then is the copy known right. What lies between (a kill -9,
 * a lost connection, a failed call) must not leave an unverified copy behind, so WRITE records an
 * intent in the same atomic call that writes the new key: a hash field per new key in
 * `P:intents:{tag}`, a key of the new key's own slot (src/redis/slot.ts), so the copy and its
 * intent exist together, replicate together and move together. The intent holds the write's id,
 * the old key, the snapshot (absolute expiry and packed fields) and exactly what the write added
 * (created whole, or the names of the fields it completed, and whether it set the expiry).
 *
 * An intent is completed ({@linkcode completeIntents}) by re-checking the old key against its
 * snapshot, then, on the new key's master, in one call (SETTLE):
 * - the old key still holds the snapshot: the copy is right; the intent is cleared;
 * - the old key changed or is gone: what the write added is taken back where it still holds the
 *   write's value (a key it created and nobody touched is deleted; a field the application wrote
 *   since is never removed, nor is a key the application created, beyond the fields the write
 *   added to it), the intent is cleared, and the job is copied again from the old key's present
 *   state (nothing when it is gone: a deleted job is never re-created).
 * The application dual-writes the old key first, so whatever it wrote to the new key after the
 * copy is also in the old key, and the fresh copy (create-only, `HSETNX`) restores it.
 *
 * The copy completes its own intents right after WRITE (RECHECK, then SETTLE on the new keys'
 * masters). A call that fails in between leaves the intent, and a later WRITE of the same key
 * answers `pending`: the copy completes that intent first and reads the job again. Every run
 * starts by completing the intents an earlier run left (ClusterCopy.init), and says so.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { keySlot, slotKey, SLOTS } from "../../redis/slot.ts";
import type { ScriptRunner } from "./runner.ts";
import { Code, SCRIPTS } from "./scripts.ts";

/** The intent hash of the slot of `newKey`. */
export function intentKey(progressKey: string, newKey: Uint8Array): string {
  return intentKeyOfSlot(progressKey, keySlot(newKey));
}

const names = new Map<string, string[]>();

/** The intent hash of `slot` (names are built once per progress key and slot). */
export function intentKeyOfSlot(progressKey: string, slot: number): string {
  let bySlot = names.get(progressKey);
  if (bySlot === undefined) names.set(progressKey, bySlot = []);
  return bySlot[slot] ??= slotKey(`${progressKey}:intents`, slot);
}

/** A write's intent, as INTENTS reads it back. */
export interface Intent {
  newKey: Buffer;
  id: string;
  oldKey: Buffer;
  /** The snapshot's absolute expiry in unix ms, -1 for none. */
  expireAt: number;
  /** The snapshot's fields, packed as READ packed them. */
  packed: Buffer;
}

/**
 * How an intent ended: the copy verified, taken back, removed with its old key; completed
 * `elsewhere` meanwhile (a retry, another runner); or `left` open (a call failed).
 */
export type Completion = "verified" | "undone" | "removed" | "elsewhere" | "left";

/** Every intent recorded on the cluster (one INTENTS call per master over its slots). */
export async function pendingIntents(
  runner: ScriptRunner,
  progressKey: string,
  options: { signal?: AbortSignal } = {},
): Promise<Intent[]> {
  const jobs = [];
  for (let slot = 0; slot < SLOTS; slot++) {
    const key = intentKeyOfSlot(progressKey, slot);
    jobs.push({ key: Buffer.from(key), args: [key, ""] });
  }
  return decode(await runner.run(SCRIPTS.intents, [], jobs, options));
}

/** The intents recorded for `newKeys` (none for a key without one). */
export async function intentsOf(
  runner: ScriptRunner,
  progressKey: string,
  newKeys: readonly Buffer[],
  options: { signal?: AbortSignal } = {},
): Promise<Intent[]> {
  const jobs = newKeys.map((newKey) => ({
    key: newKey,
    args: [intentKey(progressKey, newKey), newKey],
  }));
  return decode(await runner.run(SCRIPTS.intents, [], jobs, options));
}

function decode(settled: Awaited<ReturnType<ScriptRunner["run"]>>): Intent[] {
  const intents: Intent[] = [];
  for (const listed of settled) {
    // A master out of reach: its intents stay for a later completion.
    if (!listed.ok) continue;
    for (const entry of listed.reply as unknown[][]) {
      if (!Array.isArray(entry)) continue;
      const [newKey, id, oldKey, expireAt, packed] = entry as [
        Buffer,
        Buffer,
        Buffer,
        number,
        Buffer,
      ];
      intents.push({ newKey, id: id.toString("latin1"), oldKey, expireAt, packed });
    }
  }
  return intents;
}

/** One write to settle: keep (the old key still holds the snapshot) or take back. */
export interface Settlement {
  newKey: Buffer;
  id: string;
  keep: boolean;
}

/**
 * What settling one write gave: `done` by this call, `absent` (completed already, by a retry or
 * another runner), `unclear` (the write's extent was unknown and the key is no longer exact: left
 * as is), or the error of a failed call (the intent stays for a later completion).
 */
export type Settled = "done" | "absent" | "unclear" | { error: unknown };

/** Settles each write on its new key's master (SETTLE). */
export async function settleWrites(
  runner: ScriptRunner,
  progressKey: string,
  writes: readonly Settlement[],
  options: { signal?: AbortSignal } = {},
): Promise<Settled[]> {
  if (writes.length === 0) return [];
  const jobs = writes.map((w) => ({
    key: w.newKey,
    args: [w.newKey, intentKey(progressKey, w.newKey), w.id, w.keep ? "1" : "0"],
  }));
  const settled = await runner.run(SCRIPTS.settle, [], jobs, options);
  return settled.map((s) => {
    if (!s.ok) return { error: s.error };
    const code = s.reply[0];
    return code === Code.same ? "done" : code === Code.gone ? "absent" : "unclear";
  });
}

/**
 * Completes `intents`: re-checks each old key against the snapshot, then keeps or takes back the
 * copy (see the module comment). The caller copies the `undone` ones again.
 */
export async function completeIntents(
  runner: ScriptRunner,
  progressKey: string,
  intents: readonly Intent[],
  options: { signal?: AbortSignal } = {},
): Promise<Completion[]> {
  if (intents.length === 0) return [];
  const checks = await runner.run(
    SCRIPTS.recheck,
    [],
    intents.map((i) => ({ key: i.oldKey, args: [i.oldKey, i.expireAt, i.packed] })),
    options,
  );
  const out: Completion[] = intents.map(() => "left");
  const verdicts: { index: number; keep: boolean; gone: boolean }[] = [];
  checks.forEach((check, index) => {
    if (!check.ok) return;
    const code = check.reply[0];
    verdicts.push({ index, keep: code === Code.same, gone: code === Code.gone });
  });
  const settled = await settleWrites(
    runner,
    progressKey,
    verdicts.map(({ index, keep }) => ({ ...intents[index]!, keep })),
    options,
  );
  settled.forEach((done, j) => {
    const { index, keep, gone } = verdicts[j]!;
    if (done === "absent") out[index] = "elsewhere";
    if (done !== "done") return;
    out[index] = keep ? "verified" : gone ? "removed" : "undone";
  });
  return out;
}
