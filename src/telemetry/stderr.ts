/**
 * The process's stderr as the `(text) => void` writer telemetry takes everywhere.
 *
 * @module
 */

/**
 * A writer backed by `Deno.stderr.writeSync`. Synchronous, so a log line is out before the process
 * exits, and complete: `writeSync` may write part of a buffer, the rest is written in a loop. A
 * failing stderr (closed pipe) is ignored: losing a progress line must not fail a migration.
 *
 * @example
 * ```ts
 * import { stderrWriter } from "./stderr.ts";
 * const write = stderrWriter();
 * write("");
 * ```
 */
export function stderrWriter(): (text: string) => void {
  const encoder = new TextEncoder();
  return (text) => {
    let bytes = encoder.encode(text);
    try {
      while (bytes.length > 0) bytes = bytes.subarray(Deno.stderr.writeSync(bytes));
    } catch {
      // Nowhere left to report it.
    }
  };
}
