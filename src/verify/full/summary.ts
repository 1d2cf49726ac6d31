/**
 * The result of `verify --full` and its renderings: text for people, JSON for scripts, and the
 * verdict line that says whether the old schema's read fallback can be turned off. Pure.
 *
 * @module
 */
import { computeParity, formatPercent, verifyPassed } from "../report.ts";
import type { FullCounts } from "./checkpoint.ts";

/** What a full verify found. */
export interface FullReport {
  counts: FullCounts;
  /** `matched / (checked − invalid)`, 1 when nothing valid was checked. */
  parity: number;
  min_parity: number;
  /** Whether new keys were scanned for orphans (`--orphans`). */
  orphans_checked: boolean;
  workspace: string | null;
  passed: boolean;
  /**
   * Time spent verifying: this session's wall time plus the stored time of the earlier sessions
   * of a resumed verify (each up to its last checkpoint; the downtime between them not counted).
   */
  duration_seconds: number;
  /** True when this session continued a stored checkpoint. */
  resumed: boolean;
  /** Redis time of the script calls of this session, measured inside the script. */
  redis_calls: { calls: number; mean_ms: number; max_ms: number };
  /** The `--report` file, or null. */
  report: string | null;
}

/** Mismatched jobs: every kind of difference between an old key and its new key. */
export function mismatched(counts: FullCounts): number {
  return counts.missing + counts.field_missing + counts.field_differs + counts.ttl + counts.type;
}

/** Builds the report from the summed counts (pure). */
export function fullReport(
  parts: Omit<FullReport, "parity" | "passed">,
): FullReport {
  const { counts } = parts;
  const parity = computeParity(counts.matched, counts.checked, counts.invalid);
  return { ...parts, parity, passed: verifyPassed(parity, parts.min_parity, counts.orphans) };
}

/**
 * The verdict: ready to turn the fallback off, or not, why, and the next step.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { zeroCounts } from "./checkpoint.ts";
 * import { fullReport, verdictLine } from "./summary.ts";
 * const counts = { ...zeroCounts(), checked: 10, matched: 9, missing: 1 };
 * const report = fullReport({
 *   counts, min_parity: 100, orphans_checked: true, workspace: null, duration_seconds: 1,
 *   resumed: false, redis_calls: { calls: 1, mean_ms: 0.1, max_ms: 0.1 }, report: null,
 * });
 * assert.match(verdictLine(report), /^NOT READY/);
 * ```
 */
export function verdictLine(report: FullReport): string {
  const c = report.counts;
  if (report.passed) {
    const exact = report.parity === 1
      ? "every valid job is in the new schema"
      : "within --min-parity";
    const orphans = report.orphans_checked ? "no orphans" : "orphans not checked (add --orphans)";
    return `READY to turn the old schema's fallback off: ${exact}, ${orphans}`;
  }
  const why: string[] = [];
  const copyable = c.missing + c.field_missing + c.ttl;
  if (c.missing > 0) why.push(`${c.missing} missing`);
  if (c.field_missing > 0) why.push(`${c.field_missing} with fields missing`);
  if (c.ttl > 0) why.push(`${c.ttl} with another TTL`);
  if (c.field_differs > 0) why.push(`${c.field_differs} with different values`);
  if (c.type > 0) why.push(`${c.type} new keys of another type`);
  if (c.orphans > 0) why.push(`${c.orphans} orphans`);
  const next: string[] = [];
  if (copyable > 0) next.push("run `backfill --execute` again (it copies what is missing)");
  if (c.field_differs + c.type + c.orphans > 0) {
    next.push("inspect the listed jobs (--report): the backfill never overwrites or deletes");
  }
  next.push("then verify --full again");
  return `NOT READY: ${why.join(", ")}. Next: ${next.join("; ")}`;
}

/** The `--json` object (stable field order). */
export function fullJson(report: FullReport): Record<string, unknown> {
  return {
    mode: "full",
    ...report.counts,
    mismatched: mismatched(report.counts),
    parity: report.parity,
    min_parity: report.min_parity,
    orphans_checked: report.orphans_checked,
    workspace: report.workspace,
    passed: report.passed,
    verdict: verdictLine(report),
    duration_seconds: report.duration_seconds,
    resumed: report.resumed,
    redis_calls: { ...report.redis_calls },
    report: report.report,
  };
}

/** The text report on stdout. */
export function renderFullText(report: FullReport): string {
  const c = report.counts;
  const row = (label: string, value: string | number, note = "") =>
    `${(label + ":").padEnd(16)}${String(value)}${note ? `  (${note})` : ""}`;
  const scope = report.workspace === null ? "" : ` of workspace ${report.workspace}`;
  const calls = report.redis_calls;
  return [
    "=== Verify Report (full) ===",
    row("Checked", c.checked, `every old key${scope}, exact`),
    row("Matched", c.matched),
    row("Missing", c.missing),
    row("Field missing", c.field_missing),
    row("Field differs", c.field_differs),
    row("TTL", c.ttl, "beyond --ttl-tolerance"),
    row("Type", c.type, "new key not a hash"),
    row("Invalid", c.invalid, "skipped by the backfill, not counted in parity"),
    row("Parity", formatPercent(report.parity), `minimum ${report.min_parity}%`),
    report.orphans_checked
      ? row("Orphans", c.orphans, `${c.new_checked} new keys checked`)
      : row("Orphans", "not checked", "add --orphans"),
    row("Gone", c.gone, "vanished while verifying, not counted"),
    row("Transient", c.transient, "differed once, matched on recheck"),
    row("Duration", `${report.duration_seconds.toFixed(2)} s`, report.resumed ? "resumed" : ""),
    row(
      "Redis time",
      `${calls.mean_ms.toFixed(3)} ms/call`,
      `${calls.calls} calls, max ${calls.max_ms.toFixed(3)} ms`,
    ),
    ...(report.report === null ? [] : [row("Report", report.report)]),
    row("Result", report.passed ? "PASSED" : "FAILED"),
    row("Verdict", verdictLine(report)),
  ].join("\n");
}
