/**
 * Key names of the default mapping for tests, spelled as tests think of them (a job id, a
 * workspace id), all built by the one key schema (src/schema.ts).
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { KeySchema } from "../../src/schema.ts";

/** The default mapping, `ai:jobs:{job_id}` → `ai:job:{workspace_id}:{job_id}`. */
export const DEFAULT_KEYS: KeySchema = new KeySchema();
/** SCAN MATCH pattern of old keys. */
export const OLD_MATCH: string = DEFAULT_KEYS.oldMatch;
/** What every old key name starts with. */
export const OLD_PREFIX: string = DEFAULT_KEYS.oldPrefix.toString();

/** `ai:jobs:<job_id>`. */
export function oldKeyFor(jobId: Uint8Array | string): Buffer {
  return DEFAULT_KEYS.oldKeyOf([Buffer.from(jobId)]);
}

/** `ai:job:<workspace_id>:<job_id>`. */
export function newKeyFor(workspaceId: string, jobId: Uint8Array | string): Buffer {
  return DEFAULT_KEYS.newKeyOf(oldKeyFor(jobId), [workspaceId])!;
}

/** The job id of an old key. */
export function jobIdOf(oldKey: Uint8Array): Buffer | undefined {
  return DEFAULT_KEYS.idOf(oldKey);
}

/** The workspace and job id of a new key. */
export function parseNewKey(newKey: Uint8Array): { workspace: string; jobId: Buffer } | undefined {
  const parsed = DEFAULT_KEYS.parseNewKey(newKey);
  return parsed && { workspace: parsed.workspace, jobId: jobIdOf(parsed.oldKey)! };
}
