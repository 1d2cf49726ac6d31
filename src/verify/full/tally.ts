/**
 * Verdicts → counts and report findings (pure): one count per key, and one finding per counted
 * difference, so the report's lines always match the counts.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import type { KeySchema } from "../../schema.ts";
import type { CheckedJob, OrphanVerdict } from "./check.ts";
import type { FullCounts } from "./checkpoint.ts";
import type { Finding } from "./report_file.ts";

/**
 * Counts one old key's final verdict, and records it as a finding (naming the job by
 * `keys.idOf`) when it is one.
 */
export function countJob(
  counts: FullCounts,
  findings: Finding[],
  job: { oldKey: Buffer; keys: Pick<KeySchema, "idOf"> },
  result: CheckedJob,
): void {
  const { verdict, workspace } = result;
  switch (verdict.kind) {
    case "gone":
    case "filtered":
      counts[verdict.kind]++;
      return;
    case "matched":
      counts.checked++;
      counts.matched++;
      return;
  }
  // Only findings need the job id (most keys match).
  const jobId = job.keys.idOf(job.oldKey)!;
  counts.checked++;
  switch (verdict.kind) {
    case "invalid":
      counts.invalid++;
      // The raw workspace field of an invalid job is a value: it is never written.
      findings.push({ kind: "invalid", jobId });
      return;
    case "field_missing":
    case "field_differs":
      counts[verdict.kind]++;
      findings.push({ kind: verdict.kind, jobId, workspace, fields: verdict.fields });
      return;
    case "fields":
      // Not resolved by the field pass (it always is): count it as differing values.
      counts.field_differs++;
      findings.push({ kind: "field_differs", jobId, workspace, fields: [] });
      return;
    default:
      counts[verdict.kind]++;
      findings.push({ kind: verdict.kind, jobId, workspace });
  }
}

/** Counts one new key's final orphan verdict. */
export function countOrphan(counts: FullCounts, findings: Finding[], verdict: OrphanVerdict): void {
  if (verdict.kind === "ok") counts.new_checked++;
  if (verdict.kind !== "orphan") return;
  counts.new_checked++;
  counts.orphans++;
  findings.push({
    kind: "orphan",
    jobId: verdict.jobId,
    workspace: verdict.workspace,
    reason: verdict.reason,
  });
}
