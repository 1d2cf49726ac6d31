/**
 * Raw argv → typed options, in two phases: strict `node:util` parseArgs with the flag table's
 * specs, then a converter per subcommand that checks values and combinations and applies the
 * defaults. Every problem is a one-line {@linkcode UsageError} (exit 2).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { UsageError } from "../errors.ts";
import { KeySchema, TemplateError } from "../schema.ts";
import { type CommandName, parseArgsOptions, verifyFullOnlyFlags } from "./flags.ts";
import { RUN_DEFAULTS, VERIFY_DEFAULTS } from "../defaults.ts";
import { parseShard, WHOLE } from "../redis/shard.ts";
import { parseReplicaLagLimit } from "../control/replica_lag.ts";
import { parseControlCommand } from "./control_args.ts";
import {
  choice,
  decimal,
  httpUrl,
  integer,
  type ParseEnv,
  progressKeyFrom,
  redisUrlsFrom,
  str,
  tlsFrom,
  type Values,
} from "./flag_values.ts";
import type { RunMode } from "../run_events.ts";
import type { ControlCommandLine } from "./control_args.ts";

/** What the command line asks for. */
export type Command =
  | { kind: "run"; options: RunOptions }
  | { kind: "verify"; options: VerifyFlags }
  | { kind: "control"; options: ControlCommandLine }
  | { kind: "help"; topic: "run" | "verify" | "control" }
  | { kind: "version" };

// Each command's options are what its converter builds (the flags' meaning is in flags.ts).
/** Options of `backfill --dry-run | --execute`. */
export type RunOptions = ReturnType<typeof runOptions>;
/** Options of `backfill verify` (those of {@linkcode sharedRunFlags} apply with `--full`). */
export type VerifyFlags = ReturnType<typeof verifyOptions>;
/** The metrics and Pushgateway flags of a run and of `verify`. */
export type MetricsFlags = ReturnType<typeof metricsFlags>;
type CommonOptions = ReturnType<typeof commonOptions>;

/** Parses argv (without the program name) into a {@linkcode Command}. */
export function parseCommand(argv: readonly string[], env: ParseEnv = {}): Command {
  const control = parseControlCommand(argv, env);
  if (control !== undefined) return control;
  const isVerify = argv[0] === "verify";
  const topic = isVerify ? "verify" : "run";
  const parsed = parseFlags(isVerify ? argv.slice(1) : argv, topic);
  const values = parsed.values as Values;
  if (values.help) return { kind: "help", topic };
  if (values.version) return { kind: "version" };
  if (parsed.positionals.length > 0) {
    throw new UsageError(`unexpected argument '${parsed.positionals[0]}'`);
  }
  const shared = commonOptions(values, env, isVerify ? VERIFY_DEFAULTS.rps : RUN_DEFAULTS.rps);
  if (isVerify) return { kind: "verify", options: verifyOptions(values, shared) };
  return { kind: "run", options: runOptions(values, shared) };
}

/** Phase one: node:util parseArgs, strict; its multi-line errors become one-line usage errors. */
function parseFlags(args: readonly string[], command: CommandName) {
  const options = parseArgsOptions(command);
  try {
    return parseArgs({ args: [...args], options, strict: true, allowPositionals: true });
  } catch (error) {
    throw new UsageError(parseErrorMessage(error));
  }
}

/**
 * The options of `--dry-run | --execute`. Flags are checked in a fixed order, so the one error
 * reported when several flags are wrong does not change between versions.
 */
function runOptions(values: Values, shared: CommonOptions) {
  const dryRun = values["dry-run"] === true;
  const execute = values.execute === true;
  if (dryRun === execute) {
    throw new UsageError("exactly one of --dry-run or --execute is required");
  }
  const mode: RunMode = dryRun ? "dry-run" : "execute";
  const cursor = str(values, "cursor");
  if (cursor !== undefined && !/^\d{1,20}$/.test(cursor)) {
    throw new UsageError(`--cursor must be a SCAN cursor (digits), got '${cursor.slice(0, 40)}'`);
  }
  const runFlags = sharedRunFlags(values);
  const label = str(values, "metrics-workspace-label") ?? RUN_DEFAULTS.metricsWorkspaceLabel;
  if (label !== "true" && label !== "false") {
    throw new UsageError(`--metrics-workspace-label must be true or false, got '${label}'`);
  }
  const metrics = metricsFlags(values);
  const maxKeys = values["max-keys"] === undefined ? undefined : integer(values, "max-keys", 0, 1);
  const shardText = str(values, "shard");
  return {
    ...shared,
    mode,
    batch: integer(values, "batch", RUN_DEFAULTS.batch, 1, 1_000_000),
    cursor,
    maxKeys,
    ...runFlags,
    ...metrics,
    metricsWorkspaceLabel: label === "true",
    healthTimeout: decimal(values, "health-timeout", RUN_DEFAULTS.healthTimeout, 1, 86400),
    progressInterval: decimal(values, "progress-interval", RUN_DEFAULTS.progressInterval, 0.1),
    maxMemoryPct: decimal(values, "max-memory-pct", RUN_DEFAULTS.maxMemoryPct, 1, 100),
    maxOutage: decimal(values, "max-outage", RUN_DEFAULTS.maxOutage, 0),
    shard: shardText === undefined ? WHOLE : parseShard(shardText),
    maxReplicaLag: parseReplicaLagLimit(
      str(values, "max-replica-lag") ?? RUN_DEFAULTS.maxReplicaLag,
    ),
  };
}

/** What a run and `verify --full` take alike: the checkpoint, the lock, a script call's bounds. */
function sharedRunFlags(values: Values) {
  const progressKey = progressKeyFrom(values);
  const waitLockSeconds = decimal(values, "wait-lock", RUN_DEFAULTS.waitLockSeconds, 0);
  const maxCallMs = decimal(values, "max-call-ms", RUN_DEFAULTS.maxCallMs, 0);
  if (maxCallMs === 0) {
    throw new UsageError("--max-call-ms must be a number > 0 (milliseconds per script call)");
  }
  const callClock = choice(values, "call-clock", ["auto", "client"], RUN_DEFAULTS.callClock);
  return {
    progressKey,
    resetProgress: values["reset-progress"] === true,
    waitLockSeconds,
    maxCallMs,
    callClock,
    maxLatencyMs: decimal(values, "max-latency", RUN_DEFAULTS.maxLatencyMs, 0),
    criticalLoadPct: decimal(values, "critical-load", RUN_DEFAULTS.criticalLoadPct, 1, 100),
  };
}

/** `--metrics-host`, checked, without IPv6 brackets. */
function metricsHostFrom(values: Values): string | undefined {
  const metricsHost = str(values, "metrics-host");
  if (
    metricsHost !== undefined &&
    !/^(?:[A-Za-z0-9.-]{1,253}|\[?[0-9A-Fa-f:.]{2,45}\]?)$/.test(metricsHost)
  ) {
    throw new UsageError(
      `--metrics-host must be a host name or an IP address, got '${metricsHost.slice(0, 40)}'`,
    );
  }
  return metricsHost?.replace(/^\[(.*)\]$/, "$1");
}

function metricsFlags(values: Values) {
  const pushgateway = str(values, "pushgateway");
  if (pushgateway !== undefined) httpUrl(pushgateway, "--pushgateway");
  return {
    metricsPort: values["metrics-port"] === undefined
      ? undefined
      : integer(values, "metrics-port", 0, 1, 65535),
    metricsHost: metricsHostFrom(values),
    metricsLinger: decimal(values, "metrics-linger", RUN_DEFAULTS.metricsLinger, 0, 3600),
    pushgateway,
    pushInterval: decimal(values, "push-interval", RUN_DEFAULTS.pushInterval, 0, 86400),
  };
}

function verifyOptions(values: Values, shared: CommonOptions) {
  const full = values.full === true;
  if (full && values.sample !== undefined) {
    throw new UsageError("--full checks every old key; it cannot be combined with --sample");
  }
  for (const flag of verifyFullOnlyFlags()) {
    if (!full && values[flag] !== undefined) throw new UsageError(`--${flag} needs --full`);
  }
  const report = str(values, "report");
  if (report === "") throw new UsageError("--report needs a file path");
  return {
    ...shared,
    sample: integer(values, "sample", VERIFY_DEFAULTS.sample, 1),
    minParity: decimal(values, "min-parity", VERIFY_DEFAULTS.minParity, 0, 100),
    ttlTolerance: decimal(values, "ttl-tolerance", VERIFY_DEFAULTS.ttlToleranceSeconds, 0),
    recheck: integer(values, "recheck", VERIFY_DEFAULTS.recheck, 0),
    recheckDelayMs: decimal(values, "recheck-delay", VERIFY_DEFAULTS.recheckDelayMs, 0, 60_000),
    full,
    orphans: values.orphans === true,
    report,
    ...sharedRunFlags(values),
    ...metricsFlags(values),
  };
}

function commonOptions(values: Values, env: ParseEnv, defaultRps: number) {
  const redisUrls = redisUrlsFrom(values, env);
  const keys = keySchemaFrom(values);
  const workspace = str(values, "workspace");
  if (workspace !== undefined && keys.checkWorkspace(workspace) === undefined) {
    throw new UsageError(
      `--workspace '${
        workspace.slice(0, 64)
      }' is not a valid workspace id under the workspace pattern`,
    );
  }
  const logFormat = choice(values, "log-format", ["text", "json"], RUN_DEFAULTS.logFormat);
  return {
    redisUrls,
    tls: tlsFrom(values),
    json: values.json === true,
    workspace,
    keys,
    rps: integer(values, "rps", defaultRps, 0),
    logFormat,
    quiet: values.quiet === true,
  };
}

/** The key mapping and its rules (--from, --to, --workspace-pattern, --pattern NAME=RE). */
function keySchemaFrom(values: Values): KeySchema {
  const patterns: Record<string, string> = {};
  for (const entry of values.pattern as string[] | undefined ?? []) {
    const at = entry.indexOf("=");
    if (at <= 0) throw new UsageError(`--pattern must be NAME=RE, got '${entry.slice(0, 40)}'`);
    patterns[entry.slice(0, at)] = entry.slice(at + 1);
  }
  try {
    return new KeySchema({
      from: str(values, "from"),
      to: str(values, "to"),
      workspacePattern: str(values, "workspace-pattern"),
      patterns,
    });
  } catch (error) {
    if (error instanceof TemplateError) throw new UsageError(error.message);
    throw new UsageError(`--workspace-pattern or --pattern is not a valid regular expression`);
  }
}

/** node:util's messages are multi-line and name internals; keep the first sentence. */
function parseErrorMessage(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const unknown = message.match(/Unknown option '([^']+)'/);
  if (unknown) return `unknown flag '${unknown[1]}' (see --help)`;
  const missing = message.match(/Option '([^']+)' argument missing/);
  if (missing) return `flag '${missing[1]?.replace(/^-\w, /, "")}' needs a value`;
  const ambiguous = message.match(/Option '([^']+)' argument is ambiguous/);
  if (ambiguous) {
    const flag = ambiguous[1]?.replace(/^-\w, /, "");
    return `flag '${flag}' got a value starting with '-'; write ${flag}=<value>`;
  }
  const first = message.split("\n")[0] ?? message;
  return first.replace(/\.\s*To specify.*$/, "");
}
