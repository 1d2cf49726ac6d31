/**
 * What a subcommand needs from the process, injected by main.ts so commands never reach for
 * globals (and never call Deno.exit).
 *
 * @module
 */

/** Process facilities for a command. */
export interface CommandIo {
  /** Writes to stdout (the summary / report only). */
  stdout: (text: string) => void;
  /** Writes to stderr (progress and logs). */
  stderr: (text: string) => void;
  stderrIsTty: boolean;
  columns: () => number;
  color: boolean;
  /** From TELEMETRY_ENABLED. */
  telemetryEnabled: boolean;
  version: string;
  /** Aborted by SIGINT/SIGTERM. */
  signal: AbortSignal;
}
