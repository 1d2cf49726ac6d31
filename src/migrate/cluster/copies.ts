/**
 * What the steps of the cluster copy share: a job to copy (its validated snapshot) and how a
 * reply or a failed call becomes a per-key result.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { errorCode, errorLine, isOutage } from "../../redis/errors.ts";
import { errorResult, type StrategyResult, TRANSIENT_ERRORS } from "../strategy.ts";
import { Code } from "./scripts.ts";

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
  /** The fields as read, packed by READ (`cmsgpack.pack`). */
  packed: Buffer;
}

/**
 * A failed call as a per-key error, retryable when the condition may pass, or when `unverified`
 * (a write whose intent stays open: the key's retry completes it first, intents.ts).
 */
export function failure(
  error: unknown,
  workspace?: string,
  unverified = false,
): StrategyResult {
  const code = errorCode(error);
  return {
    outcome: "errors",
    workspace,
    errorCode: code,
    errorMessage: errorLine(error),
    retryable: unverified || TRANSIENT.has(code) || isOutage(error),
  };
}

const DONE: Record<number, StrategyResult["outcome"]> = {
  [Code.migrated]: "migrated",
  [Code.created]: "migrated",
  [Code.repaired]: "repaired",
  [Code.exists]: "skipped_exists",
};

/** The result of a reply of a script that copies or plans a copy (scripts.ts). */
export function copyResult(reply: unknown[], workspace: string): StrategyResult {
  const code = reply[0] as number;
  if (code === Code.gone) return { outcome: "skipped_gone" };
  if (code === Code.error) {
    const text = Buffer.isBuffer(reply[1]) ? reply[1].toString("utf8") : String(reply[1]);
    return errorResult(text, { workspace, transient: TRANSIENT });
  }
  const outcome = DONE[code];
  if (outcome === undefined) throw new Error(`cluster copy script returned unknown code ${code}`);
  return { outcome, workspace };
}
