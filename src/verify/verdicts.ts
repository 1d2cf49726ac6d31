/**
 * Pure decisions of both verifies: what the script's per-key answers mean, job by job.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { KeyCode, type KeyCodeValue } from "./script.ts";

/** The kinds of finding a full verify reports (one NDJSON line each). */
export type FindingKind =
  | "missing"
  | "field_missing"
  | "field_differs"
  | "ttl"
  | "type"
  | "orphan"
  | "invalid";

/** One key as the `side` mode of the script saw it. */
export interface SideState {
  code: KeyCodeValue;
  /** Raw workspace field (empty when absent). */
  workspace: Buffer;
  /** Raw values of the other fields the new key's name reads, in `KeySchema.fields` order. */
  others: readonly Buffer[];
  /** PEXPIRETIME: unix ms, -1 no expiry, -2 absent. */
  expireAt: number;
  digest: string;
}

/** The verdict on one old key. */
export type JobVerdict =
  | { kind: "matched" | "gone" | "invalid" | "filtered" | "missing" | "type" | "ttl" }
  /** The digests differ; the `fields` pass tells which fields. */
  | { kind: "fields" }
  | { kind: "field_missing" | "field_differs"; fields: string[] };

type PlainVerdictKind = Exclude<JobVerdict["kind"], "field_missing" | "field_differs">;

const PLAIN_VERDICTS = new Map<string, JobVerdict>(
  (["matched", "gone", "invalid", "filtered", "missing", "type", "ttl", "fields"] as const)
    .map((kind) => [kind, Object.freeze({ kind })]),
);

/** The verdict of `kind`: one frozen object per kind, as a chunk's verdicts cost the GC. */
export function plainVerdict<K extends PlainVerdictKind>(kind: K): { kind: K } {
  return PLAIN_VERDICTS.get(kind) as { kind: K };
}

/** Verdicts that are findings (and get rechecked before they count). */
export function isMismatch(verdict: Pick<JobVerdict, "kind">): boolean {
  return verdict.kind !== "matched" && verdict.kind !== "gone" && verdict.kind !== "invalid" &&
    verdict.kind !== "filtered";
}

const NO_BYTES = Buffer.alloc(0);
const NO_OTHERS: readonly Buffer[] = Object.freeze([]);

/** Decodes a `side` entry (or a `pair` entry's old side: other values at `othersAt` 7). */
export function decodeSide(entry: unknown[], othersAt = 4): SideState {
  return {
    code: Number(entry[0]) as KeyCodeValue,
    workspace: toBuffer(entry[1]),
    others: entry.length > othersAt ? entry.slice(othersAt).map(toBuffer) : NO_OTHERS,
    expireAt: Number(entry[2]),
    digest: toBuffer(entry[3]).toString("latin1"),
  };
}

/**
 * The new side of a `pair` entry, when the script read exactly the new key of `values` (the
 * validated values, workspace first: each as UTF-8 equals the raw field). Its `digest` equals
 * `old`'s when the script found the fields equal. `undefined`: compare on its own.
 */
export function decodePairNew(
  entry: unknown[],
  old: SideState,
  values: readonly string[],
): SideState | undefined {
  const code = Number(entry[4]);
  if (!(code >= 0) || !isUtf8Of(values[0]!, old.workspace)) return undefined;
  for (let i = 1; i < values.length; i++) {
    const raw = old.others[i - 1];
    if (raw === undefined || !isUtf8Of(values[i]!, raw)) return undefined;
  }
  return {
    code: code as KeyCodeValue,
    workspace: NO_BYTES,
    others: NO_OTHERS,
    expireAt: Number(entry[5]),
    digest: Number(entry[6]) === 1 ? old.digest : `≠${old.digest}`,
  };
}

/** Decodes one `fields` entry: field name (latin1, byte-exact) → salted value hash. */
export function decodeFields(entry: unknown[]): Map<string, string> | undefined {
  if (Number(entry[0]) !== KeyCode.hash) return undefined;
  const flat = entry[1] as unknown[];
  const fields = new Map<string, string>();
  for (let i = 0; i + 1 < flat.length; i += 2) {
    fields.set(toBuffer(flat[i]).toString("latin1"), toBuffer(flat[i + 1]).toString("latin1"));
  }
  return fields;
}

/** Compares a valid old key with its new key; the first difference wins: type, fields, TTL. */
export function compareSides(fresh: SideState, old: SideState, toleranceMs: number): JobVerdict {
  if (fresh.code === KeyCode.absent) return plainVerdict("missing");
  if (fresh.code !== KeyCode.hash) return plainVerdict("type");
  if (fresh.digest !== old.digest) return plainVerdict("fields");
  if (!sameExpiry(old.expireAt, fresh.expireAt, toleranceMs)) return plainVerdict("ttl");
  return plainVerdict("matched");
}

/** Both without expiry, or both with absolute expiries at most `toleranceMs` apart. */
export function sameExpiry(a: number, b: number, toleranceMs: number): boolean {
  if (a < 0 || b < 0) return a === b;
  return Math.abs(a - b) <= toleranceMs;
}

/**
 * Which fields differ, names sorted: old fields absent from the new key (`field_missing`, which
 * wins), else differing values or new-only fields. `undefined` when they agree (changed since).
 */
export function diffFields(
  old: ReadonlyMap<string, string>,
  fresh: ReadonlyMap<string, string>,
): Extract<JobVerdict, { fields: string[] }> | undefined {
  const missing = [...old.keys()].filter((name) => !fresh.has(name)).sort();
  if (missing.length > 0) return { kind: "field_missing", fields: missing };
  const differs = [...fresh].filter(([name, hash]) => old.get(name) !== hash).map(([name]) => name)
    .sort();
  return differs.length > 0 ? { kind: "field_differs", fields: differs } : undefined;
}

/** Why a new key is an orphan. */
export type OrphanReason = "old_missing" | "other_workspace";

/**
 * Whether a new key is an orphan, from its old key's `owner` entry: the old key is missing, or
 * does not hold exactly `newValues` (the values its name holds, workspace first; `undefined`: ok).
 */
export function orphanReason(
  newValues: readonly Buffer[],
  owner: unknown[],
): OrphanReason | undefined {
  const code = Number(owner[0]);
  if (code === KeyCode.absent) return "old_missing";
  if (code !== KeyCode.hash) return "other_workspace";
  for (let i = 0; i < newValues.length; i++) {
    if (!toBuffer(owner[1 + i]).equals(newValues[i]!)) return "other_workspace";
  }
  return undefined;
}

/** True when `bytes` is `text` in UTF-8 (ASCII compared in place: no encoding per key). */
function isUtf8Of(text: string, bytes: Uint8Array): boolean {
  if (text.length !== bytes.length) return Buffer.from(text).equals(bytes);
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code >= 0x80) return Buffer.from(text).equals(bytes);
    if (code !== bytes[i]) return false;
  }
  return true;
}

function toBuffer(value: unknown): Buffer {
  if (value instanceof Buffer) return value;
  if (value instanceof Uint8Array) return Buffer.from(value);
  return Buffer.from(value === null || value === undefined ? "" : String(value), "latin1");
}
