/**
 * The run summary on stdout: the text form, or one JSON object with exactly its fields.
 *
 * @module
 */
import { outcomeInfo, OUTCOMES } from "../outcome.ts";
import type { Summary } from "../run_events.ts";

/** The `--json` object, fields in the documented order (docs/telemetry.md). */
export function summaryJson(summary: Summary): Record<string, unknown> {
  const json: Record<string, unknown> = { mode: summary.mode, scanned: summary.scanned };
  for (const outcome of OUTCOMES) json[outcome] = summary[outcome];
  json.duration_seconds = summary.duration_seconds;
  json.completed = summary.completed;
  json.cursor = summary.cursor;
  if (summary.intents_completed !== undefined) json.intents_completed = summary.intents_completed;
  if (summary.preflight !== undefined) {
    json.preflight = { ok: summary.preflight.length === 0, missing: summary.preflight };
  }
  return json;
}

/** The human summary. Dry-run counts of writing outcomes carry "(counted, not written)". */
export function renderSummary(summary: Summary): string {
  const dry = summary.mode === "dry-run" ? "  (counted, not written)" : "";
  const row = (label: string, value: number | string, note = "") =>
    `${(label + ":").padEnd(20)}${String(value)}${note}`;
  return [
    "=== Backfill Summary ===",
    row("Mode", summary.mode),
    row("Scanned", summary.scanned),
    ...OUTCOMES.map((outcome) => {
      const { label, writes } = outcomeInfo(outcome);
      return row(label, summary[outcome], writes ? dry : "");
    }),
    row("Duration", `${summary.duration_seconds.toFixed(2)} s`),
    row(
      "Completed",
      summary.completed ? "yes" : `no (next run resumes from cursor ${summary.cursor})`,
    ),
    ...(summary.intents_completed
      ? [
        row(
          "Intents completed",
          summary.intents_completed,
          "  (left unverified by an earlier run)",
        ),
      ]
      : []),
    ...(summary.preflight?.length
      ? [row("Preflight", `--execute would refuse: may not run ${summary.preflight.join(", ")}`)]
      : []),
    "",
  ].join("\n");
}
