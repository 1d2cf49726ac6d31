/**
 * The run summary on stdout: the text form of DESIGN.md, or one JSON object with exactly its fields.
 *
 * @module
 */
import type { Summary } from "../run_events.ts";

/** The `--json` object, fields in DESIGN.md order. */
export function summaryJson(summary: Summary): Record<string, unknown> {
  return {
    mode: summary.mode,
    scanned: summary.scanned,
    migrated: summary.migrated,
    repaired: summary.repaired,
    skipped_exists: summary.skipped_exists,
    skipped_invalid: summary.skipped_invalid,
    skipped_gone: summary.skipped_gone,
    filtered: summary.filtered,
    errors: summary.errors,
    duration_seconds: summary.duration_seconds,
    completed: summary.completed,
    cursor: summary.cursor,
  };
}

/** The human summary. Dry-run counts carry "(counted, not written)". */
export function renderSummary(summary: Summary): string {
  const dry = summary.mode === "dry-run" ? "  (counted, not written)" : "";
  const row = (label: string, value: number | string, note = "") =>
    `${(label + ":").padEnd(20)}${String(value)}${note}`;
  return [
    "=== Backfill Summary ===",
    row("Mode", summary.mode),
    row("Scanned", summary.scanned),
    row("Migrated", summary.migrated, dry),
    row("Repaired", summary.repaired, dry),
    row("Skipped (exists)", summary.skipped_exists),
    row("Skipped (invalid)", summary.skipped_invalid),
    row("Skipped (gone)", summary.skipped_gone),
    row("Filtered", summary.filtered),
    row("Errors", summary.errors),
    row("Duration", `${summary.duration_seconds.toFixed(2)} s`),
    row(
      "Completed",
      summary.completed ? "yes" : `no (next run resumes from cursor ${summary.cursor})`,
    ),
    "",
  ].join("\n");
}
