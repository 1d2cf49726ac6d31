/**
 * Argv of the live-control subcommands: `pause`, `resume`, `set-rps N`, `stop`, `status [--json]`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { TlsOptions } from "../redis/options.ts";
import { UsageError } from "../errors.ts";
import { type ControlCommand, parseControl } from "../control/remote.ts";
import {
  type ParseEnv,
  progressKeyFrom,
  redisUrlsFrom,
  tlsFrom,
  type Values,
} from "./flag_values.ts";
import { parseArgsOptions } from "./flags.ts";

/** A control subcommand with its connection. */
export interface ControlCommandLine {
  action: ControlCommand | { kind: "status" };
  redisUrls: string[];
  tls: TlsOptions;
  progressKey: string;
  /** `status --json`. */
  json: boolean;
}

const CONTROL_SUBCOMMANDS = ["pause", "resume", "set-rps", "stop", "status"] as const;

/**
 * Parses a control subcommand; undefined when `argv` is not one (the caller parses it then).
 *
 * @throws {UsageError} on a bad value or flag (nothing is written).
 */
export function parseControlCommand(
  argv: readonly string[],
  env: ParseEnv,
):
  | { kind: "control"; options: ControlCommandLine }
  | { kind: "help"; topic: "control" }
  | undefined {
  const name = argv[0];
  if (!(CONTROL_SUBCOMMANDS as readonly string[]).includes(name ?? "")) return undefined;
  // `set-rps -1` must say the number is wrong, not that `-1` is an unknown flag.
  const takesValue = name === "set-rps" && argv[1] !== undefined && !argv[1].startsWith("--");
  const value = takesValue ? argv[1] : undefined;
  const rest = argv.slice(takesValue ? 2 : 1);
  let parsed;
  try {
    parsed = parseArgs({
      args: [...rest],
      options: parseArgsOptions("control"),
      strict: true,
      allowPositionals: true,
    });
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const flag = message.match(/Unknown option '([^']+)'/)?.[1];
    throw new UsageError(flag ? `unknown flag '${flag}' for ${name}` : `${name}: bad arguments`);
  }
  const values = parsed.values as Values;
  if (values.help) return { kind: "help", topic: "control" };
  if (parsed.positionals.length > 0) {
    throw new UsageError(`unexpected argument '${parsed.positionals[0]!.slice(0, 40)}'`);
  }
  if (values.json && name !== "status") throw new UsageError(`--json is for status only`);
  return {
    kind: "control",
    options: {
      action: action(name!, value),
      redisUrls: redisUrlsFrom(values, env),
      tls: tlsFrom(values),
      progressKey: progressKeyFrom(values),
      json: values.json === true,
    },
  };
}

function action(name: string, value: string | undefined): ControlCommandLine["action"] {
  if (name === "status") return { kind: "status" };
  if (name === "set-rps" && value === undefined) {
    throw new UsageError("set-rps needs a rate: backfill set-rps N (N >= 0, 0 = no cap)");
  }
  const command = parseControl(value === undefined ? name : `${name} ${value}`);
  if (typeof command === "string") {
    throw new UsageError(
      `set-rps needs a whole number >= 0 (0 = no cap), got '${(value ?? "").slice(0, 40)}'`,
    );
  }
  return command;
}
