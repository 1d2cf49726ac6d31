/**
 * What the steps of the cluster copy share: a job to copy (its validated snapshot) and how a
 * failed call becomes a per-key result.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { errorCode, errorLine, isOutage } from "../../redis/errors.ts";
import { errorResult, type StrategyResult, TRANSIENT_ERRORS } from "../strategy.ts";

/** Error codes the engine's one retry may fix: the shared transient ones and cluster redirects. */
export const TRANSIENT: ReadonlySet<string> = new Set([
  ...TRANSIENT_ERRORS,
  "CLUSTERDOWN",
  "MOVED",
  "ASK",
]);

/** An old key of the sub-batch, by its position in the input. */
export interface Pending {
  index: number;
  oldKey: Buffer;
}

/** A job whose READ snapshot passed classification. */
export interface Copy extends Pending {
  newKey: Buffer;
  workspace: string;
  /** The values of the fields the new key's name reads (`KeySchema.fields`), validated. */
  values: readonly string[];
  /** Absolute expiry in unix ms, -1 for none. */
  expireAt: number;
  /** The fields as read: field, value, … packed by the READ script (`cmsgpack.pack`). */
  packed: Buffer;
}

/** A failed call as a per-key error (retryable when the condition may pass). */
export function failure(error: unknown, workspace?: string): StrategyResult {
  const code = errorCode(error);
  return {
    outcome: "errors",
    workspace,
    errorCode: code,
    errorMessage: errorLine(error),
    retryable: TRANSIENT.has(code) || isOutage(error),
  };
}

/** An error a script reported for one job: the first line of Redis's error text. */
export function scriptError(text: unknown, workspace: string): StrategyResult {
  const line = Buffer.isBuffer(text) ? text.toString("utf8") : String(text);
  return errorResult(line, { workspace, transient: TRANSIENT });
}

/**
 * We wrote, but could not learn whether the old key changed meanwhile, or could not settle our
 * write. Its intent stays recorded (intents.ts): the key's retry finds it, completes it first and
 * copies the job again; if the retry fails too, the next run completes it.
 */
export function unverified(error: unknown, workspace?: string): StrategyResult {
  return {
    outcome: "errors",
    workspace,
    errorCode: errorCode(error),
    errorMessage: errorLine(error),
    retryable: true,
  };
}

/** Appends `items` to `out` one by one (a spread of a 100k-field list overflows the stack). */
export function append<T>(out: T[], items: readonly T[]): T[] {
  for (const item of items) out.push(item);
  return out;
}
