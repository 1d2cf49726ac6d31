/**
 * What `verify --full` reports: its counts, the `--report FILE` (one NDJSON line per finding, ids
 * and names escaped, never a value) and the summary with its verdict. Findings are synced before
 * the checkpoint that counts them, which stores the file's length: a resume cuts the file back to
 * it, so a finding is never reported twice.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { UsageError } from "../../errors.ts";
import { escapeForLog } from "../../telemetry/redact.ts";
import type { FindingKind } from "../verdicts.ts";
import { computeParity, formatPercent, reportRow, verifyPassed } from "../report.ts";

/** The counts, in report order. */
const COUNT_NAMES = [
  "checked", // old keys compared (gone and filtered keys excluded)
  "matched",
  "missing",
  "field_missing",
  "field_differs",
  "ttl",
  "type",
  "invalid",
  "gone", // old keys that vanished before they could be compared (not in `checked`)
  "filtered", // old keys of other workspaces than `--workspace`
  "transient", // differences that matched on a recheck
  "new_checked", // new keys checked for orphans (`--orphans`)
  "orphans",
  "scan_duplicates", // keys SCAN returned a second time within a node's pass, counted once
] as const;

/** Running counts of one node, or of the whole run. */
export type FullCounts = Record<typeof COUNT_NAMES[number], number>;

export function zeroCounts(): FullCounts {
  return Object.fromEntries(COUNT_NAMES.map((name) => [name, 0])) as FullCounts;
}

export function addCounts(a: FullCounts, b: Readonly<FullCounts>): FullCounts {
  for (const name of Object.keys(a) as (keyof FullCounts)[]) a[name] += b[name];
  return a;
}

export interface Finding {
  kind: FindingKind;
  jobId: Uint8Array;
  /** The workspace id (none for `invalid`: the raw field is a value). */
  workspace?: Uint8Array | string;
  /** Field names, for `field_missing` and `field_differs`. */
  fields?: readonly string[];
  /** For `orphan`: its `OrphanReason`. */
  reason?: string;
}

/** One NDJSON line (without the newline) for a finding. */
export function findingLine(finding: Finding): string {
  const line: Record<string, unknown> = {
    job_id: escapeForLog(finding.jobId, 512),
    workspace: finding.workspace === undefined ? null : escapeForLog(finding.workspace, 512),
    kind: finding.kind,
  };
  if (finding.fields !== undefined) {
    line.fields = finding.fields.map((name) => escapeForLog(Buffer.from(name, "latin1"), 512));
  }
  if (finding.reason !== undefined) line.reason = finding.reason;
  return JSON.stringify(line);
}

export class ReportFile {
  readonly path: string;
  #file: Deno.FsFile;
  #bytes: number;

  private constructor(path: string, file: Deno.FsFile, bytes: number) {
    this.path = path;
    this.#file = file;
    this.#bytes = bytes;
  }

  /**
   * Opens (creates) the file for writing, before Redis is touched.
   *
   * @throws {UsageError} when the path cannot be written.
   */
  static async open(path: string): Promise<ReportFile> {
    try {
      const file = await Deno.open(path, { write: true, create: true });
      const size = (await file.stat()).size;
      return new ReportFile(path, file, size);
    } catch (error) {
      const why = error instanceof Error ? error.name : "error";
      throw new UsageError(`--report ${path} cannot be written (${why})`);
    }
  }

  /** Bytes that belong to the findings written so far. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Starts at `bytes`; false (and starts at 0) when the file is shorter: findings were lost. */
  async startAt(bytes: number): Promise<boolean> {
    const size = (await this.#file.stat()).size;
    const kept = size >= bytes;
    this.#bytes = kept ? bytes : 0;
    await this.#file.truncate(this.#bytes);
    await this.#file.seek(this.#bytes, Deno.SeekMode.Start);
    return kept;
  }

  /** Appends the findings and syncs them to disk. */
  async append(findings: readonly Finding[]): Promise<void> {
    if (findings.length === 0) return;
    let bytes = new TextEncoder().encode(findings.map(findingLine).join("\n") + "\n");
    this.#bytes += bytes.length;
    while (bytes.length > 0) bytes = bytes.subarray(await this.#file.write(bytes));
    await this.#file.sync();
  }

  close(): void {
    this.#file.close();
  }
}

export interface FullReport {
  counts: FullCounts;
  /** {@linkcode computeParity}. */
  parity: number;
  min_parity: number;
  /** Whether new keys were scanned for orphans (`--orphans`). */
  orphans_checked: boolean;
  workspace: string | null;
  passed: boolean;
  /** This session's wall time plus that of earlier sessions up to their last checkpoint. */
  duration_seconds: number;
  /** True when this session continued a stored checkpoint. */
  resumed: boolean;
  /** Redis time of this session's script calls, measured inside the script. */
  redis_calls: { calls: number; mean_ms: number; max_ms: number };
  report: string | null;
}

/** Mismatched jobs: every kind of difference between an old key and its new key. */
export function mismatched(counts: FullCounts): number {
  return counts.missing + counts.field_missing + counts.field_differs + counts.ttl + counts.type;
}

/** Builds the report from the summed counts. */
export function fullReport(
  parts: Omit<FullReport, "parity" | "passed">,
): FullReport {
  const { counts } = parts;
  const parity = computeParity(counts.matched, counts.checked, counts.invalid);
  return { ...parts, parity, passed: verifyPassed(parity, parts.min_parity, counts.orphans) };
}

/** The verdict: ready to turn the fallback off, or not, why, and the next step. */
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
  const row = reportRow;
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
