/**
 * Durable intents of the cluster copy's cross-master writes. Such a copy writes the new key from a
 * snapshot, then re-checks the old key against it on the other master; only then is the copy
 * known right. So that a kill -9 or a failed call in between never leaves an unverified copy
 * behind, WRITE records an intent in the same atomic call: a field per new key in
 * `P:intents:{tag}`, a hash of the new key's own slot, so the copy and its intent exist,
 * replicate and move together. It holds the write's id, the old key, the snapshot and exactly
 * what the write added (created whole, or the fields it completed, and whether it set the expiry).
 *
 * An intent is completed ({@linkcode verifyWrites}) by re-checking the old key against its
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
 * The copy completes its own intents right after WRITE. A call that fails in between leaves the
 * intent, and a later WRITE of the same key answers `pending`: the copy completes that intent
 * first and reads the job again. Every run starts by completing the intents an earlier run left
 * (ClusterCopy.init), and says so.
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

/** A write's intent: the new key, the write's id, and the old key's snapshot it copied. */
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

/**
 * The intents recorded for `newKeys` (none for a key without one), or, without `newKeys`, every
 * intent on the cluster (one INTENTS call per master over its slots). A master out of reach is
 * skipped: its intents stay for a later completion.
 */
export async function listIntents(
  runner: ScriptRunner,
  progressKey: string,
  newKeys?: readonly Buffer[],
  options: { signal?: AbortSignal } = {},
): Promise<Intent[]> {
  const jobs = newKeys?.map((newKey) => ({
    key: newKey,
    args: [intentKey(progressKey, newKey), newKey],
  })) ?? Array.from({ length: SLOTS }, (_, slot) => {
    const key = intentKeyOfSlot(progressKey, slot);
    return { key: Buffer.from(key), args: [key, ""] };
  });
  const intents: Intent[] = [];
  for (const listed of await runner.run(SCRIPTS.intents, [], jobs, options)) {
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

/**
 * How verifying one write ended: left open with the `error` of its re-check or its SETTLE
 * (`CHANGED` when the write's extent was unknown and the key is no longer exact: left as is); or
 * settled, the old key still holding the snapshot (`keep`) or `gone`, `absent` when the intent
 * was completed already (by a retry or another runner).
 */
export type Verdict = { error: unknown } | { keep: boolean; gone: boolean; absent: boolean };

/** Re-checks each write's old key against its snapshot, then settles its intent (SETTLE). */
export async function verifyWrites(
  runner: ScriptRunner,
  progressKey: string,
  writes: readonly Intent[],
  options: { signal?: AbortSignal } = {},
): Promise<Verdict[]> {
  if (writes.length === 0) return [];
  const checks = await runner.run(
    SCRIPTS.recheck,
    [],
    writes.map((w) => ({ key: w.oldKey, args: [w.oldKey, w.expireAt, w.packed] })),
    options,
  );
  const out: Verdict[] = [];
  const checked: number[] = [];
  checks.forEach((check, i) => {
    if (!check.ok) return void (out[i] = { error: check.error });
    const code = check.reply[0];
    out[i] = { keep: code === Code.same, gone: code === Code.gone, absent: false };
    checked.push(i);
  });
  const settled = await runner.run(
    SCRIPTS.settle,
    [],
    checked.map((i) => {
      const { newKey, id } = writes[i]!;
      const keep = (out[i] as { keep: boolean }).keep ? "1" : "0";
      return { key: newKey, args: [newKey, intentKey(progressKey, newKey), id, keep] };
    }),
    options,
  );
  settled.forEach((s, j) => {
    const i = checked[j]!;
    if (!s.ok) out[i] = { error: s.error };
    else if (s.reply[0] === Code.gone) out[i] = { ...out[i]!, absent: true };
    else if (s.reply[0] !== Code.same) out[i] = { error: new Error("CHANGED") };
  });
  return out;
}

/** Completes `intents`; the caller copies the `undone` ones again. */
export async function completeIntents(
  runner: ScriptRunner,
  progressKey: string,
  intents: readonly Intent[],
  options: { signal?: AbortSignal } = {},
): Promise<Completion[]> {
  const verdicts = await verifyWrites(runner, progressKey, intents, options);
  return verdicts.map((v) => {
    if ("error" in v) return "left";
    if (v.absent) return "elsewhere";
    return v.keep ? "verified" : v.gone ? "removed" : "undone";
  });
}
