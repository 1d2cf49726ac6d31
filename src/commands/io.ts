/**
 * What a subcommand needs from the process, injected by main.ts so commands never reach for
 * globals (and never call Deno.exit).
 *
 * @module
 */

export interface CommandIo {
  /** The summary or report only. */
  stdout: (text: string) => void;
  /** Progress and logs. */
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
