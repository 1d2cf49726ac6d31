/**
 * Raw argv → typed options, in two phases (deployctl style): `node:util` parseArgs in strict mode
 * rejects unknown flags and missing values, then a converter per subcommand validates numbers,
 * ranges and combinations. Every problem is a {@linkcode UsageError} (exit 2) with a one-line message.
 *
 * @module
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { UsageError } from "../errors.ts";
import { DEFAULT_WORKSPACE_PATTERN, WorkspaceRule } from "../schema.ts";
import { VERIFY_DEFAULTS } from "../verify.ts";
import { isSentinelUrl, parseSentinelUrl } from "../redis/sentinel.ts";

/** TLS material for `rediss://` connections. */
export interface TlsOptions {
  ca?: string;
  cert?: string;
  key?: string;
  servername?: string;
}

/** Options shared by the run and verify. */
export interface CommonOptions {
  /** Seed URLs (one for standalone; several seeds allowed for a cluster). */
  redisUrls: string[];
  tls: TlsOptions;
  json: boolean;
  workspace?: string;
  rule: WorkspaceRule;
  /** Jobs per second, 0 = unlimited. */
  rps: number;
  logFormat: "text" | "json";
  quiet: boolean;
}

/** Options of `backfill --dry-run | --execute`. */
export interface RunOptions extends CommonOptions {
  mode: "dry-run" | "execute";
  batch: number;
  cursor?: string;
  maxKeys?: number;
  progressKey: string;
  resetProgress: boolean;
  metricsPort?: number;
  /** Address the metrics server binds (undefined: all interfaces, 0.0.0.0). */
  metricsHost?: string;
  /** Seconds the metrics server stays up after the run, for a last scrape. */
  metricsLinger: number;
  metricsWorkspaceLabel: boolean;
  pushgateway?: string;
  /** Seconds between Pushgateway pushes while running (0: only at start and end). */
  pushInterval: number;
  progressInterval: number;
  maxMemoryPct: number;
  /** Seconds the run waits for a lost Redis before giving up with exit 3. */
  maxOutage: number;
}

/** Options of `backfill verify`. */
export interface VerifyOptions extends CommonOptions {
  sample: number;
  minParity: number;
  ttlTolerance: number;
  recheck: number;
}

/** What the command line asks for. */
export type Command =
  | { kind: "run"; options: RunOptions }
  | { kind: "verify"; options: VerifyOptions }
  | { kind: "help"; topic: "run" | "verify" }
  | { kind: "version" };

const common = {
  "redis-url": { type: "string", multiple: true },
  "tls-ca": { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  "tls-servername": { type: "string" },
  json: { type: "boolean" },
  workspace: { type: "string" },
  "workspace-pattern": { type: "string" },
  rps: { type: "string" },
  "log-format": { type: "string" },
  quiet: { type: "boolean", short: "q" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
} satisfies ParseArgsConfig["options"];

const runFlags = {
  ...common,
  "dry-run": { type: "boolean" },
  execute: { type: "boolean" },
  batch: { type: "string" },
  cursor: { type: "string" },
  "max-keys": { type: "string" },
  "progress-key": { type: "string" },
  "reset-progress": { type: "boolean" },
  "metrics-port": { type: "string" },
  "metrics-host": { type: "string" },
  "metrics-linger": { type: "string" },
  "push-interval": { type: "string" },
  "metrics-workspace-label": { type: "string" },
  pushgateway: { type: "string" },
  "progress-interval": { type: "string" },
  "max-memory-pct": { type: "string" },
  "max-outage": { type: "string" },
} satisfies ParseArgsConfig["options"];

const verifyFlags = {
  ...common,
  sample: { type: "string" },
  "min-parity": { type: "string" },
  "ttl-tolerance": { type: "string" },
  recheck: { type: "string" },
} satisfies ParseArgsConfig["options"];

/** Defaults of the telemetry flags (also shown by --help). */
export const TELEMETRY_DEFAULTS = { metricsLinger: 15, pushInterval: 30 } as const;

/** Environment the parser reads (injected for tests). */
export interface ParseEnv {
  REDIS_URL?: string;
}

/** Parses argv (without the program name) into a {@linkcode Command}. */
export function parseCommand(argv: readonly string[], env: ParseEnv = {}): Command {
  const isVerify = argv[0] === "verify";
  const args = isVerify ? argv.slice(1) : argv;
  const topic = isVerify ? "verify" : "run";
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      options: isVerify ? verifyFlags : runFlags,
      strict: true,
      allowPositionals: true,
    });
  } catch (error) {
    throw new UsageError(parseErrorMessage(error));
  }
  const values = parsed.values as Record<string, string | boolean | string[] | undefined>;
  if (values.help) return { kind: "help", topic };
  if (values.version) return { kind: "version" };
  if (parsed.positionals.length > 0) {
    throw new UsageError(`unexpected argument '${parsed.positionals[0]}'`);
  }
  const shared = commonOptions(values, env, isVerify ? VERIFY_DEFAULTS.rps : 100);
  if (isVerify) {
    return {
      kind: "verify",
      options: {
        ...shared,
        sample: integer(values, "sample", VERIFY_DEFAULTS.sample, 1),
        minParity: decimal(values, "min-parity", VERIFY_DEFAULTS.minParity, 0, 100),
        ttlTolerance: decimal(values, "ttl-tolerance", VERIFY_DEFAULTS.ttlToleranceSeconds, 0),
        recheck: integer(values, "recheck", VERIFY_DEFAULTS.recheck, 0),
      },
    };
  }
  const dryRun = values["dry-run"] === true;
  const execute = values.execute === true;
  if (dryRun === execute) {
    throw new UsageError("exactly one of --dry-run or --execute is required");
  }
  const cursor = str(values, "cursor");
  if (cursor !== undefined && !/^\d{1,20}$/.test(cursor)) {
    throw new UsageError(`--cursor must be a SCAN cursor (digits), got '${cursor.slice(0, 40)}'`);
  }
  const progressKey = str(values, "progress-key") ?? "ai:backfill";
  if (progressKey.length === 0 || /\s/.test(progressKey)) {
    throw new UsageError("--progress-key must be non-empty and contain no whitespace");
  }
  const label = str(values, "metrics-workspace-label") ?? "true";
  if (label !== "true" && label !== "false") {
    throw new UsageError(`--metrics-workspace-label must be true or false, got '${label}'`);
  }
  const pushgateway = str(values, "pushgateway");
  if (pushgateway !== undefined) httpUrl(pushgateway, "--pushgateway");
  const metricsHost = str(values, "metrics-host");
  if (
    metricsHost !== undefined &&
    !/^(?:[A-Za-z0-9.-]{1,253}|\[?[0-9A-Fa-f:.]{2,45}\]?)$/.test(metricsHost)
  ) {
    throw new UsageError(
      `--metrics-host must be a host name or an IP address, got '${metricsHost.slice(0, 40)}'`,
    );
  }
  const maxKeys = values["max-keys"] === undefined ? undefined : integer(values, "max-keys", 0, 1);
  return {
    kind: "run",
    options: {
      ...shared,
      mode: dryRun ? "dry-run" : "execute",
      batch: integer(values, "batch", 500, 1, 1_000_000),
      cursor,
      maxKeys,
      progressKey,
      resetProgress: values["reset-progress"] === true,
      metricsPort: values["metrics-port"] === undefined
        ? undefined
        : integer(values, "metrics-port", 0, 1, 65535),
      metricsHost: metricsHost?.replace(/^\[(.*)\]$/, "$1"),
      metricsLinger: decimal(values, "metrics-linger", TELEMETRY_DEFAULTS.metricsLinger, 0, 3600),
      metricsWorkspaceLabel: label === "true",
      pushgateway,
      pushInterval: decimal(values, "push-interval", TELEMETRY_DEFAULTS.pushInterval, 0, 86400),
      progressInterval: decimal(values, "progress-interval", 10, 0.1),
      maxMemoryPct: decimal(values, "max-memory-pct", 90, 1, 100),
      maxOutage: decimal(values, "max-outage", 60, 0),
    },
  };
}

type Values = Record<string, string | boolean | string[] | undefined>;

function commonOptions(values: Values, env: ParseEnv, defaultRps: number): CommonOptions {
  // A Sentinel URL lists its sentinels with commas itself; other URLs may be comma-separated seeds.
  const fromFlags = (values["redis-url"] as string[] | undefined ?? [])
    .flatMap((url) => isSentinelUrl(url.trim()) ? [url] : url.split(","))
    .map((url) => url.trim())
    .filter((url) => url.length > 0);
  const redisUrls = fromFlags.length > 0
    ? fromFlags
    : [env.REDIS_URL?.trim() || "redis://127.0.0.1:6379"];
  // Both validators name the problem without echoing the URL (it may hold a password).
  for (const url of redisUrls) isSentinelUrl(url) ? parseSentinelUrl(url) : redisUrl(url);
  const patternText = str(values, "workspace-pattern") ?? DEFAULT_WORKSPACE_PATTERN;
  let rule: WorkspaceRule;
  try {
    rule = new WorkspaceRule(patternText);
  } catch {
    throw new UsageError(`--workspace-pattern is not a valid regular expression`);
  }
  const workspace = str(values, "workspace");
  if (workspace !== undefined && rule.check(workspace) === undefined) {
    throw new UsageError(
      `--workspace '${
        workspace.slice(0, 64)
      }' is not a valid workspace id under the workspace pattern`,
    );
  }
  const logFormat = str(values, "log-format") ?? "text";
  if (logFormat !== "text" && logFormat !== "json") {
    throw new UsageError(`--log-format must be text or json, got '${logFormat.slice(0, 20)}'`);
  }
  return {
    redisUrls,
    tls: {
      ca: str(values, "tls-ca"),
      cert: str(values, "tls-cert"),
      key: str(values, "tls-key"),
      servername: str(values, "tls-servername"),
    },
    json: values.json === true,
    workspace,
    rule,
    rps: integer(values, "rps", defaultRps, 0),
    logFormat,
    quiet: values.quiet === true,
  };
}

function str(values: Values, name: string): string | undefined {
  const value = values[name];
  return typeof value === "string" ? value : undefined;
}

function integer(values: Values, name: string, fallback: number, min: number, max = 2 ** 53 - 1) {
  const text = str(values, name);
  if (text === undefined) return fallback;
  if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) {
    const range = max === 2 ** 53 - 1 ? `>= ${min}` : `from ${min} to ${max}`;
    throw new UsageError(`--${name} must be an integer ${range}, got '${text.slice(0, 40)}'`);
  }
  return Number(text);
}

function decimal(values: Values, name: string, fallback: number, min: number, max = Infinity) {
  const text = str(values, name);
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text) || value < min || value > max) {
    const range = max === Infinity ? `>= ${min}` : `from ${min} to ${max}`;
    throw new UsageError(`--${name} must be a number ${range}, got '${text.slice(0, 40)}'`);
  }
  return value;
}

/** Validates a Redis URL without ever echoing it (it may hold a password). */
function redisUrl(text: string): void {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError("--redis-url / REDIS_URL is not a valid URL");
  }
  if (!["redis:", "rediss:", "redis+sentinel:", "rediss+sentinel:"].includes(url.protocol)) {
    throw new UsageError(
      "--redis-url / REDIS_URL must start with redis://, rediss://, redis+sentinel:// or rediss+sentinel://",
    );
  }
  if (url.hostname === "") throw new UsageError("--redis-url / REDIS_URL has no host");
}

function httpUrl(text: string, flag: string): void {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`${flag} is not a valid URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UsageError(`${flag} must be an http:// or https:// URL`);
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
