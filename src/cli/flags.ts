/**
 * The one table of flags: the parser's option specs, each command's `--help` (help.ts) and
 * docs/flags.md (script/flags_doc.ts) are made from it. Values are checked by args.ts; the
 * defaults shown come from src/defaults.ts and schema.ts, and a test holds them equal to what the
 * parser applies.
 *
 * @module
 */
import type { ParseArgsConfig } from "node:util";
import { RUN_DEFAULTS, VERIFY_DEFAULTS } from "../defaults.ts";
import { DEFAULT_FROM, DEFAULT_TO, DEFAULT_WORKSPACE_PATTERN } from "../schema.ts";

/** The commands with flags of their own: a run, `verify`, and the live-control subcommands. */
export type CommandName = "run" | "verify" | "control";

/** The commands, in the order the docs list them. */
export const COMMAND_NAMES: readonly CommandName[] = ["run", "verify", "control"];

/** How one command uses a flag. */
export interface FlagUse {
  /** The heading the flag is listed under. */
  group: string;
  /** What the flag does, one line (the renderers wrap it). */
  text: string;
  /** The default as shown; absent when the flag has none. */
  default?: string | number;
  /** `verify` only: the flag is refused without `--full`. */
  needsFull?: true;
}

/** One flag: how it parses, and how each command that accepts it uses it. */
export interface Flag {
  /** Without the leading `--`. */
  name: string;
  type: "boolean" | "string";
  /** The value's placeholder in help and docs (string flags only). */
  value?: string;
  short?: string;
  /** May be repeated (values collect into a list). */
  multiple?: true;
  /** The commands that accept the flag; the others reject it as unknown. */
  uses: Partial<Record<CommandName, FlagUse>>;
}

const MODE = "Mode (exactly one)";
const SCOPE = "Scope and pace";
const CHECKPOINTS = "Checkpoints";
const CONNECTION = "Connection";
const PACE = `Pace (under --rps, from what Redis reports; docs/throttle.md)`;
const SAFETY = "Safety";
const OUTPUT = "Output and telemetry";
const HELP = "Help";
const SAMPLE = "Sample";
const FULL = "Full (every key, resumable)";
const VERIFY_OUTPUT = "Output and telemetry (relay_backfill_verify_*, push grouping mode=verify)";
const CONTROL = "Options";

/** Headings, in the order each command's help lists them. */
export const GROUPS: Readonly<Record<CommandName, readonly string[]>> = {
  run: [MODE, SCOPE, CHECKPOINTS, CONNECTION, PACE, SAFETY, OUTPUT, HELP],
  verify: [SAMPLE, FULL, SCOPE, CONNECTION, VERIFY_OUTPUT, HELP],
  control: [CONTROL, CONNECTION, HELP],
};

/** A flag that takes a value, shown as `--name VALUE`. */
function valueFlag(
  name: string,
  value: string,
  uses: Flag["uses"],
  more: Pick<Flag, "short" | "multiple"> = {},
): Flag {
  return { name, type: "string", value, uses, ...more };
}

function switchFlag(name: string, uses: Flag["uses"], more: Pick<Flag, "short"> = {}): Flag {
  return { name, type: "boolean", uses, ...more };
}

function use(group: string, text: string, shown?: string | number): FlagUse {
  return shown === undefined ? { group, text } : { group, text, default: shown };
}

/** `verify`'s use of a flag that needs `--full`. */
function full(group: string, text: string, shown?: string | number): FlagUse {
  return { ...use(group, text, shown), needsFull: true };
}

/** The same use in a run and in verify. */
function both(group: string, text: string, shown?: string | number): Flag["uses"] {
  return { run: use(group, text, shown), verify: use(group, text, shown) };
}

/** The same use in every command. */
function all(group: string, text: string, shown?: string | number): Flag["uses"] {
  return { ...both(group, text, shown), control: use(group, text, shown) };
}

/** The same use in a run and in verify, each under its output heading. */
function output(text: string, shown?: string | number): Flag["uses"] {
  return { run: use(OUTPUT, text, shown), verify: use(VERIFY_OUTPUT, text, shown) };
}

const D = RUN_DEFAULTS;
const V = VERIFY_DEFAULTS;

/** Every flag, in the order the help lists them within a heading. */
export const FLAGS: readonly Flag[] = [
  switchFlag("dry-run", {
    run: use(
      MODE,
      "classify every old key and count; write nothing at all to Redis (not even a checkpoint)",
    ),
  }),
  switchFlag("execute", {
    run: use(MODE, "copy what only exists in the old schema (old keys are never touched)"),
  }),
  valueFlag("sample", "N", {
    verify: use(
      SAMPLE,
      "old keys to check, uniformly at random; N >= all checks each once; as many new keys are checked for orphans",
      V.sample,
    ),
  }),
  valueFlag("min-parity", "PCT", {
    verify: use(SAMPLE, "exit 1 when parity is below PCT percent", V.minParity),
  }),
  valueFlag("ttl-tolerance", "S", {
    verify: use(SAMPLE, "TTLs may differ by up to S seconds", V.ttlToleranceSeconds),
  }),
  valueFlag("recheck", "N", {
    verify: use(
      SAMPLE,
      "re-read a missing, mismatched or orphan key up to N times (--recheck-delay apart) and count it only if the difference persists",
      V.recheck,
    ),
  }),
  valueFlag("recheck-delay", "MS", {
    verify: use(SAMPLE, "pause before each recheck, in milliseconds", V.recheckDelayMs),
  }),
  switchFlag("full", {
    verify: use(
      FULL,
      "compare EVERY old key with its new key, inside Redis (exact; resumable); not with --sample",
    ),
  }),
  switchFlag("orphans", {
    verify: full(
      FULL,
      "also scan every new key for orphans (old key missing, or workspace_id naming another workspace)",
    ),
  }),
  valueFlag("report", "FILE", {
    verify: full(
      FULL,
      "one NDJSON line per finding (ids and field names only); an unwritable path exits 2 before anything is read",
    ),
  }),
  valueFlag("rps", "N", {
    run: use(SCOPE, "at most N jobs in any 1-second window; 0 = unlimited", D.rps),
    verify: use(SCOPE, "at most N keys checked per second; 0 = unlimited", V.rps),
  }),
  valueFlag("batch", "N", {
    run: use(
      SCOPE,
      "largest SCAN COUNT (each sized to --max-call-ms) and work unit (>= 1); the checkpoint moves once per batch",
      D.batch,
    ),
  }),
  valueFlag("max-keys", "N", { run: use(SCOPE, "process at most N old keys in this run (>= 1)") }),
  valueFlag("workspace", "W", {
    run: use(SCOPE, "migrate only jobs of workspace W (others: filtered)"),
    verify: use(SCOPE, "only jobs of workspace W (both samples)"),
  }),
  valueFlag(
    "workspace-pattern",
    "RE",
    both(
      SCOPE,
      "what counts as a valid workspace id (a JavaScript regular expression; an id containing : is never valid)",
      DEFAULT_WORKSPACE_PATTERN,
    ),
  ),
  valueFlag(
    "from",
    "TEMPLATE",
    both(SCOPE, "old key names, {name} a placeholder (docs/mappings.md)", DEFAULT_FROM),
  ),
  valueFlag(
    "to",
    "TEMPLATE",
    both(
      SCOPE,
      "new key names: each {name} is a --from placeholder or a hash field (the first field: the workspace); {{name}} a hash tag",
      DEFAULT_TO,
    ),
  ),
  valueFlag(
    "pattern",
    "NAME=RE",
    both(
      SCOPE,
      "the rule for the field placeholder NAME of --to when not workspace_id, once per field (default: the default rule)",
    ),
    { multiple: true },
  ),
  valueFlag("shard", "I/N", {
    run: use(
      SCOPE,
      "cluster: runner I of N (0 <= I < N) takes only masters I, I+N, I+2N, … in slot order; each runner holds its own per-master locks and checkpoints",
      "0/1 (every master)",
    ),
  }),
  valueFlag("progress-key", "P", {
    run: use(CHECKPOINTS, "prefix of the checkpoint and lock keys", D.progressKey),
    verify: use(FULL, "with --full: checkpoint and lock under P:verify:*", D.progressKey),
    control: use(CONTROL, "the run's progress key", D.progressKey),
  }),
  valueFlag("cursor", "C", {
    run: use(
      CHECKPOINTS,
      "start from this SCAN cursor instead of the stored one",
      "stored, else 0",
    ),
  }),
  switchFlag("reset-progress", {
    run: use(CHECKPOINTS, "clear the stored checkpoint and start from cursor 0 (or --cursor)"),
    verify: full(FULL, "ignore a stored full-verify checkpoint"),
  }),
  valueFlag(
    "redis-url",
    "URL",
    all(
      CONNECTION,
      "redis://, rediss:// (TLS), redis+sentinel://host:port[,host:port]/master; user and password in the URL; a cluster is detected by itself; repeat or comma-separate cluster seeds",
      `$REDIS_URL, else ${D.redisUrl}`,
    ),
    { multiple: true },
  ),
  valueFlag(
    "tls-ca",
    "FILE",
    all(
      CONNECTION,
      "CA bundle that signed the server certificate, for rediss:// (the TLS flags apply to every node)",
      "the system store",
    ),
  ),
  valueFlag(
    "tls-cert",
    "FILE",
    all(CONNECTION, "client certificate for mutual TLS (with --tls-key: both or neither)"),
  ),
  valueFlag("tls-key", "FILE", all(CONNECTION, "client private key")),
  valueFlag(
    "tls-servername",
    "NAME",
    all(
      CONNECTION,
      "TLS SNI and the name the certificate must match (an IP host is matched against the certificate's IP SANs)",
      "URL host",
    ),
  ),
  valueFlag("max-outage", "S", {
    run: use(CONNECTION, "wait up to S seconds for a lost Redis, then exit 3", D.maxOutage),
  }),
  valueFlag("wait-lock", "S", {
    run: use(
      SAFETY,
      "wait up to S seconds for another run's lock to expire (a crashed run's lock lasts 30 s), then exit 4; 0 = refuse at once",
      D.waitLockSeconds,
    ),
    verify: full(FULL, "wait up to S seconds for P:verify:lock, then exit 4", D.waitLockSeconds),
  }),
  valueFlag("max-call-ms", "MS", {
    run: use(PACE, "size each script call to hold Redis at most MS (> 0)", D.maxCallMs),
    verify: full(FULL, "size each script call to hold Redis at most MS (> 0)", D.maxCallMs),
  }),
  valueFlag("call-clock", "C", {
    run: use(
      PACE,
      "time calls by the script's clock where the server lets time pass in a script, else on the client (auto); or always on the client (client)",
      D.callClock,
    ),
    verify: full(FULL, "auto or client, as a run's --call-clock", D.callClock),
  }),
  valueFlag("max-latency", "MS", {
    run: use(
      PACE,
      "never hold more than MS of work in front of another client's command: (calls in flight per master + 1) x a call's Redis time while one is active, a round trip's calls while none is; 0 = raw speed (deep pipeline, no yield)",
      D.maxLatencyMs,
    ),
    verify: full(
      FULL,
      "as a run's ((calls in flight + 1) x call time); 0 = raw speed",
      D.maxLatencyMs,
    ),
  }),
  valueFlag("critical-load", "P", {
    run: use(
      PACE,
      "while the application alone keeps Redis at least P% busy (INFO cpu), yield to 10% of Redis's time (1-100)",
      D.criticalLoadPct,
    ),
    verify: full(FULL, "as a run's", D.criticalLoadPct),
  }),
  valueFlag("max-replica-lag", "L", {
    run: use(
      PACE,
      "pause while a replica is more than L behind: bytes (512k, 16M, 1G) or seconds (10s); 0 = off",
      D.maxReplicaLag,
    ),
  }),
  valueFlag("max-memory-pct", "P", {
    run: use(SAFETY, "refuse / pause when Redis memory would pass P% of maxmemory", D.maxMemoryPct),
  }),
  switchFlag("json", {
    run: use(OUTPUT, "print the summary as one JSON object on stdout (and nothing else on stdout)"),
    verify: use(VERIFY_OUTPUT, "print the report as one JSON object on stdout"),
    control: use(CONTROL, "status only: print the status as one JSON object"),
  }),
  switchFlag("quiet", {
    run: use(OUTPUT, "summary only (no progress, no info logs)"),
    verify: use(VERIFY_OUTPUT, "report only (no progress, no info logs)"),
  }, { short: "q" }),
  valueFlag("log-format", "F", output("text | json (one object per line on stderr)", D.logFormat)),
  valueFlag("progress-interval", "S", {
    run: use(OUTPUT, "seconds between progress lines when stderr is not a TTY", D.progressInterval),
  }),
  valueFlag("metrics-port", "N", {
    run: use(OUTPUT, "serve Prometheus /metrics and /healthz on port N while running"),
    verify: use(VERIFY_OUTPUT, "serve Prometheus /metrics on port N"),
  }),
  valueFlag(
    "metrics-host",
    "H",
    output("address the metrics server binds (e.g. 127.0.0.1)", "0.0.0.0"),
  ),
  valueFlag(
    "metrics-linger",
    "S",
    output(
      "keep /metrics up S seconds after the end for a last scrape; 0 = close at once",
      D.metricsLinger,
    ),
  ),
  valueFlag("metrics-workspace-label", "B", {
    run: use(
      OUTPUT,
      `true | false: false collapses workspace_id to "_all"`,
      D.metricsWorkspaceLabel,
    ),
  }),
  valueFlag(
    "pushgateway",
    "URL",
    output("push the metrics to a Prometheus Pushgateway (start, interval, end)"),
  ),
  valueFlag(
    "push-interval",
    "S",
    output("seconds between pushes while running; 0 = start and end only", D.pushInterval),
  ),
  valueFlag("health-timeout", "S", {
    run: use(
      OUTPUT,
      "/healthz answers 503 (and redis_up reads 0) when a Redis node has not answered for S seconds (>= 1)",
      D.healthTimeout,
    ),
  }),
  switchFlag("help", all(HELP, "print this help"), { short: "h" }),
  switchFlag("version", both(HELP, "print the version"), { short: "V" }),
];

/** The flags `command` accepts, in table order. */
export function flagsOf(command: CommandName): (Flag & { use: FlagUse })[] {
  return FLAGS.flatMap((flag) => {
    const use = flag.uses[command];
    return use === undefined ? [] : [{ ...flag, use }];
  });
}

/** The `node:util` parseArgs option specs of `command`, made from the table. */
export function parseArgsOptions(command: CommandName): NonNullable<ParseArgsConfig["options"]> {
  return Object.fromEntries(
    flagsOf(command).map((flag) => [
      flag.name,
      {
        type: flag.type,
        ...(flag.short === undefined ? {} : { short: flag.short }),
        ...(flag.multiple ? { multiple: true } : {}),
      },
    ]),
  );
}

/** `verify`'s flags that are refused without `--full`, in table order (the converter's order). */
export function verifyFullOnlyFlags(): string[] {
  return flagsOf("verify").filter((flag) => flag.use.needsFull).map((flag) => flag.name);
}
