/**
 * The checks of a sampled verify: which keys form each population, and how the sampled old keys
 * (jobs) and new keys (orphans) are judged: by the same read-only script and pair rule as
 * `verify --full` (`pairs.ts`), in sub-batches sized to the call budget and paced by the limiter,
 * with the same rechecks, so a dual write in flight lands before a difference counts. Field values
 * never leave Redis; each verdict is mapped onto the sampled report's kinds.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import {
  isSameWorkspace,
  jobIdOf,
  NEW_MATCH,
  newMatchFor,
  OLD_MATCH,
  parseNewKey,
} from "../schema.ts";
import { type Checks, settleJobs, settleOrphans } from "./pairs.ts";
import type { MismatchReason } from "./report.ts";
import type { KeyPopulation } from "./sample.ts";
import { KeyCode } from "./script.ts";
import { isMismatch, type JobVerdict as PairVerdict } from "./verdicts.ts";

/** The verdict on one sampled old key. */
export type JobVerdict =
  | { kind: "matched" | "missing" | "invalid" | "gone" }
  | { kind: "mismatched"; reason: MismatchReason };

/** The verdict on one sampled new key. */
export type OrphanVerdict = "ok" | "orphan" | "gone";

/**
 * Old keys; with `workspace`, only those whose `workspace_id` passes the rule as `workspace`
 * (read by the script's `owner` mode: a key that is not a hash or has no workspace_id belongs to
 * no workspace).
 */
export function oldPopulation(workspace: string | undefined, checks: Checks): KeyPopulation {
  const { calls, rule } = checks.ctx;
  return {
    match: OLD_MATCH,
    isCandidate: (key) => jobIdOf(key) !== undefined,
    confirm: workspace === undefined ? undefined : async (keys) => {
      const owners = await checks.batches().run(
        keys,
        (sub, timing) => calls.read(sub, "owner", { timing }),
      );
      return owners.map((owner) =>
        Number(owner[0]) === KeyCode.hash && rule.check(owner[1] as Uint8Array) === workspace
      );
    },
  };
}

/** New keys; with a workspace, only that workspace's (the name tells, no read needed). */
export function newPopulation(workspace: string | undefined): KeyPopulation {
  return {
    match: workspace === undefined ? NEW_MATCH : newMatchFor(workspace),
    isCandidate: (key) => {
      const parsed = parseNewKey(key);
      return parsed !== undefined &&
        (workspace === undefined || isSameWorkspace(parsed.workspace, workspace));
    },
  };
}

/**
 * Checks sampled old keys with their new keys and rechecks the differences (`settleJobs`).
 * `transient` counts the differences that stopped being one.
 */
export async function checkSampledJobs(
  keys: readonly Buffer[],
  checks: Checks,
): Promise<{ verdicts: JobVerdict[]; transient: number }> {
  const { results, suspects } = await settleJobs(keys, checks.ctx, checks.batches());
  return {
    verdicts: results.map(({ verdict }) => sampledVerdict(verdict)),
    transient: suspects.filter((i) => !isMismatch(results[i]!.verdict)).length,
  };
}

/**
 * Checks sampled new keys: does the new key still exist (read first: one deleted since it was
 * sampled is gone), and does its old twin name the same workspace (`orphanReason`, as
 * `verify --full --orphans`)? Orphans are rechecked like differences.
 */
export async function checkSampledOrphans(
  keys: readonly Buffer[],
  checks: Checks,
): Promise<{ verdicts: OrphanVerdict[]; transient: number }> {
  const { results, suspects } = await settleOrphans(keys, checks.ctx, checks.batches(), true);
  return {
    // "filtered" is a key outside the new schema: the population never holds one.
    verdicts: results.map(({ kind }) => kind === "filtered" ? "gone" : kind),
    transient: suspects.filter((i) => results[i]!.kind !== "orphan").length,
  };
}

/**
 * The sampled report's verdict for a pair verdict: the kinds of difference collapse into
 * `mismatched` with its first difference (type, then fields, then TTL: the pair rule's order).
 */
function sampledVerdict(verdict: PairVerdict): JobVerdict {
  switch (verdict.kind) {
    case "matched":
    case "missing":
    case "invalid":
    case "gone":
      return { kind: verdict.kind };
    // Only with a workspace in the pair context; a sampled verify sets none.
    case "filtered":
      return { kind: "gone" };
    case "type":
    case "ttl":
      return { kind: "mismatched", reason: verdict.kind };
    case "fields":
    case "field_missing":
    case "field_differs":
      return { kind: "mismatched", reason: "fields" };
  }
}
