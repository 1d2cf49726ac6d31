/**
 * The result of `backfill verify` and its text rendering (the report itself is the JSON).
 *
 * @module
 */

/** How a sample was drawn: random draws (RANDOMKEY) or a full scan. */
export type SamplingMethod = "random" | "scan";

/** Up to {@linkcode MAX_EXAMPLES} escaped job ids per failing category, never values. */
export type VerifyExamples = Record<"missing" | "mismatched" | "invalid" | "orphans", string[]>;

export const MAX_EXAMPLES = 10;

/**
 * The verify report, field for field (and in this order) the `--json` object. `sampled = matched
 * + missing + mismatched + invalid`; keys that vanished before they were compared are in `gone`.
 */
export interface VerifyReport {
  sampled: number;
  /** New key present with the same fields and values and a TTL within tolerance. */
  matched: number;
  /** No new key (after every recheck). */
  missing: number;
  /** New key present but different (after every recheck). */
  mismatched: number;
  /** Old key the backfill would skip as invalid: not a hash, no/invalid workspace_id, empty job id. */
  invalid: number;
  /** {@linkcode computeParity}. */
  parity: number;
  /** Sampled new keys whose old twin does not exist (after every recheck). */
  orphans: number;
  /** New keys checked for orphans (a sampled new key that vanished meanwhile is not counted). */
  orphans_sampled: number;
  gone: number;
  /** Keys that failed a first comparison but passed a recheck (live writes in flight). */
  transient: number;
  /** Mismatches by their first difference. */
  mismatch_reasons: Record<"type" | "fields" | "ttl", number>;
  /** Old keys in scope: exact after a scan, an estimate after random sampling. */
  old_keys: number;
  old_keys_exact: boolean;
  new_keys: number;
  new_keys_exact: boolean;
  sampling: SamplingMethod;
  orphan_sampling: SamplingMethod;
  workspace: string | null;
  /** The `--min-parity` threshold, in percent. */
  min_parity: number;
  passed: boolean;
  duration_seconds: number;
  /** Time spent waiting for the `--rps` limiter, in seconds. */
  limiter_wait_seconds: number;
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

/** A percentage rounded down to two decimals: a parity below 100 % never prints "100.00%". */
export function formatPercent(fraction: number): string {
  return `${(Math.floor(fraction * 10_000) / 100).toFixed(2)}%`;
}

/** One line of a text report: label, value, and a note in brackets. */
export function reportRow(label: string, value: string | number, note = ""): string {
  return `${(label + ":").padEnd(16)}${String(value)}${note ? `  (${note})` : ""}`;
}

/** The text report on stdout: counts, parity, verdict, then example job ids per failing category. */
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
