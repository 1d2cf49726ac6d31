/**
 * The key schemas: the one place that builds key names and decides what a valid workspace id is.
 * Key names are bytes (Uint8Array): a job id need not be valid UTF-8, and it is never re-encoded.
 *
 * @module
 */
import { Buffer } from "node:buffer";

/** Prefix of the old schema, `ai:jobs:<job_id>`. */
export const OLD_PREFIX = "ai:jobs:";
/** Prefix of the new schema, `ai:job:<workspace_id>:<job_id>`. */
export const NEW_PREFIX = "ai:job:";
/** SCAN MATCH pattern for old keys. */
export const OLD_MATCH = `${OLD_PREFIX}*`;
/** SCAN MATCH pattern for new keys. */
export const NEW_MATCH = `${NEW_PREFIX}*`;

/** SCAN MATCH pattern for one workspace's new keys (glob characters in the id match literally). */
export function newMatchFor(workspaceId: string): string {
  return `${NEW_PREFIX}${workspaceId.replace(/[*?[\]\\]/g, (c) => `\\${c}`)}:*`;
}
/** The hash field that holds the workspace id. */
export const WORKSPACE_FIELD = "workspace_id";
/** Default validity rule for workspace ids (docs/safety.md). */
export const DEFAULT_WORKSPACE_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$";
/**
 * The default rule as the in-server script checks it: a Lua pattern (Lua has no `{0,63}`) plus a
 * length bound. A test holds it equal to {@linkcode DEFAULT_WORKSPACE_PATTERN}.
 */
export const DEFAULT_WORKSPACE_LUA: Readonly<{ pattern: string; maxLength: number }> = {
  pattern: "^[A-Za-z0-9][A-Za-z0-9_%-]*$",
  maxLength: 64,
};

const OLD_PREFIX_BYTES = Buffer.from(OLD_PREFIX);
const NEW_PREFIX_BYTES = Buffer.from(NEW_PREFIX);

/** The job id of an old key (bytes after `ai:jobs:`), or `undefined` when it is not an old key. */
export function jobIdOf(oldKey: Uint8Array): Buffer | undefined {
  // Called for every key a verify or a backfill reads: no wrapper or slice before the answer.
  if (oldKey.length < OLD_PREFIX_BYTES.length) return undefined;
  for (let i = 0; i < OLD_PREFIX_BYTES.length; i++) {
    if (oldKey[i] !== OLD_PREFIX_BYTES[i]) return undefined;
  }
  const key = oldKey instanceof Buffer
    ? oldKey
    : Buffer.from(oldKey.buffer, oldKey.byteOffset, oldKey.byteLength);
  return key.subarray(OLD_PREFIX_BYTES.length);
}

/** `ai:jobs:<job_id>` for a job id (bytes or string). */
export function oldKeyFor(jobId: Uint8Array | string): Buffer {
  return Buffer.concat([OLD_PREFIX_BYTES, Buffer.from(jobId)]);
}

/** `ai:job:<workspace_id>:<job_id>`, byte-exact. */
export function newKeyFor(workspaceId: string, jobId: Uint8Array | string): Buffer {
  return Buffer.concat([
    NEW_PREFIX_BYTES,
    Buffer.from(workspaceId),
    Buffer.from(":"),
    Buffer.from(jobId),
  ]);
}

/**
 * Splits a new key into workspace id and job id, or `undefined` when it is not one.
 * A new key's workspace id never contains `:` (no valid id does), so the first `:` after the prefix
 * separates them.
 */
export function parseNewKey(newKey: Uint8Array): { workspace: string; jobId: Buffer } | undefined {
  const key = Buffer.from(newKey.buffer, newKey.byteOffset, newKey.byteLength);
  if (!key.subarray(0, NEW_PREFIX_BYTES.length).equals(NEW_PREFIX_BYTES)) return undefined;
  const rest = key.subarray(NEW_PREFIX_BYTES.length);
  const colon = rest.indexOf(0x3a);
  if (colon <= 0) return undefined;
  return { workspace: rest.subarray(0, colon).toString("latin1"), jobId: rest.subarray(colon + 1) };
}

/**
 * Strict UTF-8 that keeps every byte: `ignoreBOM` stops TextDecoder from silently dropping a
 * leading byte-order mark, which would turn the id "\uFEFFwsA" into another tenant's "wsA".
 */
const STRICT_UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * True when `keyWorkspace` (as {@linkcode parseNewKey} gives it: latin1, one char per byte) is
 * exactly the bytes of `workspaceId` (as the command line or a rule gives it: text, UTF-8).
 */
export function isSameWorkspace(keyWorkspace: string, workspaceId: string): boolean {
  return Buffer.from(keyWorkspace, "latin1").equals(Buffer.from(workspaceId));
}

/** Decides whether a workspace id (as raw bytes from Redis) is valid. */
export class WorkspaceRule {
  readonly pattern: RegExp;
  /** True when the pattern is the default one (the migration script then checks it in Redis). */
  readonly isDefault: boolean;

  /** @throws {SyntaxError} when `pattern` is not a valid regular expression. */
  constructor(pattern: string = DEFAULT_WORKSPACE_PATTERN) {
    this.pattern = new RegExp(pattern, "u");
    this.isDefault = pattern === DEFAULT_WORKSPACE_PATTERN;
  }

  /**
   * The workspace id as a string when valid; `undefined` otherwise. Bytes that are not UTF-8, or
   * that contain `:` (it would make the new key ambiguous), are never valid.
   */
  check(raw: Uint8Array | string | null | undefined): string | undefined {
    if (raw === null || raw === undefined) return undefined;
    let text: string;
    try {
      text = typeof raw === "string" ? raw : STRICT_UTF8.decode(raw);
    } catch {
      return undefined;
    }
    if (text.length === 0 || text.includes(":")) return undefined;
    return this.pattern.test(text) ? text : undefined;
  }
}
