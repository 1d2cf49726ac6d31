/**
 * The result of `backfill verify` and its two renderings (text for people, JSON for scripts).
 * Pure functions of the report: no I/O, so they are tested without Redis.
 *
 * @module
 */

/** How a sample was drawn: random draws (RANDOMKEY) or a full scan (SCAN + reservoir). */
export type SamplingMethod = "random" | "scan";

/** Why a sampled job counts as mismatched (the first difference found, in this order). */
export type MismatchReason = "type" | "fields" | "ttl";

/** Up to {@linkcode MAX_EXAMPLES} escaped job ids per failing category: ids only, never values. */
export interface VerifyExamples {
  missing: string[];
  mismatched: string[];
  invalid: string[];
  orphans: string[];
}

/** At most this many example job ids are kept per category. */
export const MAX_EXAMPLES = 10;

/**
 * The verify report, field for field (and in this order, as `runVerify` builds it) the `--json`
 * object. Counts of the old-key sample add up: `sampled = matched + missing + mismatched +
 * invalid`; sampled keys that vanished before they could be compared are counted in `gone` instead.
 */
export interface VerifyReport {
  /** Old keys compared (excludes `gone`). */
  sampled: number;
  /** New key present with the same fields and values and a TTL within tolerance. */
  matched: number;
  /** No new key (after every recheck). */
  missing: number;
  /** New key present but different (after every recheck); see `mismatch_reasons`. */
  mismatched: number;
  /** Old key the backfill would skip as invalid: not a hash, no/invalid workspace_id, empty job id. */
  invalid: number;
  /** `matched / (sampled - invalid)`, or 1 when nothing valid was sampled. */
  parity: number;
  /** Sampled new keys whose old twin does not exist (after every recheck). */
  orphans: number;
  /** New keys checked for orphans (a sampled new key that vanished meanwhile is not counted). */
  orphans_sampled: number;
  /** Sampled old keys that vanished (deleted or expired) before they could be compared. */
  gone: number;
  /** Keys that failed a first comparison but passed a recheck (live writes in flight). */
  transient: number;
  /** Mismatches by their first difference. */
  mismatch_reasons: Record<MismatchReason, number>;
  /** Old keys in scope: exact after a scan, an estimate after random sampling. */
  old_keys: number;
  /** True when `old_keys` is an exact count (the old-key sample came from a full scan). */
  old_keys_exact: boolean;
  /** New keys in scope: exact after a scan, an estimate after random sampling. */
  new_keys: number;
  /** True when `new_keys` is an exact count. */
  new_keys_exact: boolean;
  /** How the old-key sample was drawn. */
  sampling: SamplingMethod;
  /** How the new-key (orphan) sample was drawn. */
  orphan_sampling: SamplingMethod;
  /** The `--workspace` restriction, or null. */
  workspace: string | null;
  /** The `--min-parity` threshold, in percent. */
  min_parity: number;
  /** `parity * 100 >= min_parity` and no orphans. */
  passed: boolean;
  /** Wall time of the whole verify, in seconds. */
  duration_seconds: number;
  /** Time spent waiting for the `--rps` limiter, in seconds. */
  limiter_wait_seconds: number;
  /** Example job ids (escaped) per failing category. */
  examples: VerifyExamples;
}

/**
 * `matched / (sampled - invalid)`; 1 when nothing valid was sampled (nothing to disagree with).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { computeParity } from "./report.ts";
 *
 * assert.equal(computeParity(97, 102, 2), 0.97);
 * assert.equal(computeParity(0, 3, 3), 1);
 * ```
 */
export function computeParity(matched: number, sampled: number, invalid: number): number {
  const valid = sampled - invalid;
  return valid > 0 ? matched / valid : 1;
}

/**
 * True when `parity * 100 >= minParity` and there are no orphans. The comparison allows for
 * floating-point noise (0.29 * 100 is 28.999999999999996), so exactly-at-threshold passes.
 */
export function verifyPassed(parity: number, minParity: number, orphans: number): boolean {
  return parity * 100 >= minParity - 1e-9 && orphans === 0;
}

/**
 * A percentage rounded down to two decimals, so a parity just below 100 % never prints as
 * "100.00%" next to a FAILED verdict.
 */
export function formatPercent(fraction: number): string {
  return `${(Math.floor(fraction * 10_000) / 100).toFixed(2)}%`;
}

/** One line of a text report: the label padded to a column, the value, and a note in brackets. */
export function reportRow(label: string, value: string | number, note = ""): string {
  return `${(label + ":").padEnd(16)}${String(value)}${note ? `  (${note})` : ""}`;
}

/**
 * The text report printed on stdout: counts, parity, verdict, then up to ten example job ids per
 * failing category.
 *
 * @example
 * ```ts
 * import { renderVerifyText, type VerifyReport } from "./report.ts";
 *
 * function textReport(report: VerifyReport): string {
 *   return renderVerifyText(report) + "\n";
 * }
 * ```
 */
export function renderVerifyText(report: VerifyReport): string {
  const row = reportRow;
  const population = (count: number, exact: boolean, kind: string, method: SamplingMethod) =>
    `of ${exact ? "" : "~"}${count} ${kind} keys${
      report.workspace === null ? "" : ` in workspace ${report.workspace}`
    }, ${method === "scan" ? "full scan" : "random sample"}`;
  const reasons = report.mismatch_reasons;
  const lines = [
    "=== Verify Report ===",
    row(
      "Sampled",
      report.sampled,
      population(report.old_keys, report.old_keys_exact, "old", report.sampling),
    ),
    row("Matched", report.matched),
    row("Missing", report.missing),
    row(
      "Mismatched",
      report.mismatched,
      report.mismatched > 0
        ? `fields: ${reasons.fields}, ttl: ${reasons.ttl}, type: ${reasons.type}`
        : "",
    ),
    row("Invalid", report.invalid, "skipped by the backfill, not counted in parity"),
    row("Parity", formatPercent(report.parity), `minimum ${report.min_parity}%`),
    row(
      "Orphans",
      report.orphans,
      `${report.orphans_sampled} checked, ${
        population(report.new_keys, report.new_keys_exact, "new", report.orphan_sampling)
      }`,
    ),
    row("Gone", report.gone, "vanished while verifying, not counted"),
    row("Transient", report.transient, "differed once, matched on recheck"),
    row("Duration", `${report.duration_seconds.toFixed(2)} s`),
    row("Result", report.passed ? "PASSED" : "FAILED"),
  ];
  const categories: [string, keyof VerifyExamples, number][] = [
    ["Missing", "missing", report.missing],
    ["Mismatched", "mismatched", report.mismatched],
    ["Invalid", "invalid", report.invalid],
    ["Orphans", "orphans", report.orphans],
  ];
  for (const [label, key, count] of categories) {
    const ids = report.examples[key];
    if (ids.length === 0) continue;
    lines.push("", `${label} (${ids.length} of ${count}):`);
    for (const id of ids) lines.push(`  ${id === "" ? "(empty job id)" : id}`);
  }
  return lines.join("\n");
}
