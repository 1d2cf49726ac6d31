/**
 * Entry point: parse → dispatch → map errors to exit codes, and the process's stdout and
 * stderr. Nothing else lives here.
 *
 * @module
 */
import denoJson from "./deno.json" with { type: "json" };
import { parseCommand } from "./src/cli/args.ts";
import { helpText } from "./src/cli/help.ts";
import { controlCommand } from "./src/commands/control.ts";
import { runCommand } from "./src/commands/run.ts";
import { verifyCommand } from "./src/commands/verify.ts";
import { BackfillError, ExitCode } from "./src/errors.ts";
import type { CommandIo } from "./src/commands/io.ts";
import { telemetryEnabled } from "./src/telemetry/mod.ts";

const encoder = new TextEncoder();
/** Writes all of `text` synchronously (a line is out before exit; writeSync may write a part). */
function writeAll(file: { writeSync(bytes: Uint8Array): number }, text: string): void {
  let bytes = encoder.encode(text);
  while (bytes.length > 0) bytes = bytes.subarray(file.writeSync(bytes));
}
const stdout = (text: string) => writeAll(Deno.stdout, text);
/** A failing stderr (closed pipe) is ignored: losing a progress line must not fail a migration. */
function stderr(text: string): void {
  try {
    writeAll(Deno.stderr, text);
  } catch {
    // Nowhere left to report it.
  }
}

/** Exit code for the signal that stopped a run. */
const SIGNAL_EXIT: Record<string, number> = { SIGINT: ExitCode.sigint, SIGTERM: ExitCode.sigterm };

/** Runs the CLI with `argv` and returns the process exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  let command;
  try {
    command = parseCommand(argv, { REDIS_URL: Deno.env.get("REDIS_URL") });
  } catch (error) {
    return reportError(error);
  }
  switch (command.kind) {
    case "help":
      stdout(helpText(command.topic));
      return ExitCode.ok;
    case "version":
      stdout(`backfill ${denoJson.version}\n`);
      return ExitCode.ok;
  }
  // First SIGINT/SIGTERM: stop after the sub-batches in flight, save the checkpoint, print the
  // summary. A second one: exit at once (the stored checkpoint is written atomically, so it is
  // consistent whenever the process dies).
  const controller = new AbortController();
  const onSignal = (name: "SIGINT" | "SIGTERM") => () => {
    if (controller.signal.aborted) Deno.exit(SIGNAL_EXIT[name]);
    stderr(`received ${name}: finishing the sub-batches in flight (again to exit at once)\n`);
    controller.abort(name);
  };
  const handlers = { SIGINT: onSignal("SIGINT"), SIGTERM: onSignal("SIGTERM") };
  for (const [name, handler] of Object.entries(handlers)) {
    Deno.addSignalListener(name as Deno.Signal, handler);
  }
  try {
    const io: CommandIo = {
      stdout,
      stderr,
      stderrIsTty: Deno.stderr.isTerminal(),
      columns: () => Deno.consoleSize().columns,
      color: !Deno.env.get("NO_COLOR"),
      telemetryEnabled: telemetryEnabled(Deno.env.get("TELEMETRY_ENABLED")),
      version: denoJson.version,
      signal: controller.signal,
    };
    const code = command.kind === "run"
      ? await runCommand(command.options, io)
      : command.kind === "control"
      ? await controlCommand(command.options, io)
      : await verifyCommand(command.options, io);
    const reason = controller.signal.reason;
    return typeof reason === "string" && reason in SIGNAL_EXIT ? SIGNAL_EXIT[reason]! : code;
  } catch (error) {
    // Stopped by a signal while connecting, starting or verifying: that is the exit code, not a
    // bug (a wait cut short by the signal rejects with its reason, or as an AbortError).
    const reason = controller.signal.reason;
    const aborted = error === reason || (error instanceof Error && error.name === "AbortError");
    if (aborted && typeof reason === "string" && reason in SIGNAL_EXIT) {
      return SIGNAL_EXIT[reason]!;
    }
    return reportError(error);
  } finally {
    for (const [name, handler] of Object.entries(handlers)) {
      Deno.removeSignalListener(name as Deno.Signal, handler);
    }
  }
}

/** Expected errors: one line and their exit code. Anything else is a bug: stack trace, exit 1. */
function reportError(error: unknown): number {
  if (error instanceof BackfillError) {
    const hint = error.exitCode === ExitCode.usage ? " (backfill --help for usage)" : "";
    stderr(`error: ${error.message}${hint}\n`);
    return error.exitCode;
  }
  stderr(
    `internal error (a bug, please report): ${
      error instanceof Error ? error.stack : String(error)
    }\n`,
  );
  return ExitCode.failed;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
