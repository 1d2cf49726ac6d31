/**
 * The comparison of one job's old and new key, as a pure function of what was read: no I/O, so
 * every verdict is tested without Redis.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import type { MismatchReason } from "./report.ts";

/** The verdict on one sampled old key. */
export type JobVerdict =
  | { kind: "matched" }
  | { kind: "missing" }
  | { kind: "mismatched"; reason: MismatchReason }
  | { kind: "invalid" }
  | { kind: "gone" };

/** What a read of one key found. `pttl`: -1 no TTL, -2 absent, else milliseconds left. */
export type KeyState =
  | { type: "absent" }
  | { type: "other" }
  | { type: "hash"; fields: ReadonlyMap<string, Buffer>; pttl: number };

/**
 * Compares a job's old and new key (pure). Both are hashes already known to exist on the old side;
 * the old side's `pttl` of -2 means it vanished between the reads.
 */
export function compareJob(
  old: KeyState,
  fresh: KeyState,
  toleranceSeconds: number,
): JobVerdict {
  if (old.type === "absent" || (old.type === "hash" && old.pttl === -2)) return { kind: "gone" };
  if (old.type === "other") return { kind: "invalid" };
  if (fresh.type === "absent" || (fresh.type === "hash" && fresh.pttl === -2)) {
    return { kind: "missing" };
  }
  if (fresh.type === "other") return { kind: "mismatched", reason: "type" };
  if (!sameFields(old.fields, fresh.fields)) return { kind: "mismatched", reason: "fields" };
  if (!sameTtl(old.pttl, fresh.pttl, toleranceSeconds)) {
    return { kind: "mismatched", reason: "ttl" };
  }
  return { kind: "matched" };
}

/** Same field names and values, byte for byte (extra fields on either side differ). */
function sameFields(a: ReadonlyMap<string, Buffer>, b: ReadonlyMap<string, Buffer>): boolean {
  if (a.size !== b.size) return false;
  for (const [field, value] of a) {
    const other = b.get(field);
    if (other === undefined || !other.equals(value)) return false;
  }
  return true;
}

/** Both without TTL, or both with TTLs at most `toleranceSeconds` apart. */
function sameTtl(a: number, b: number, toleranceSeconds: number): boolean {
  if (a === -1 || b === -1) return a === b;
  return Math.abs(a - b) <= toleranceSeconds * 1000;
}

/** True for the verdicts a recheck may overturn (a dual write in flight). */
export function isJobFailure(verdict: JobVerdict): boolean {
  return verdict.kind === "missing" || verdict.kind === "mismatched";
}
