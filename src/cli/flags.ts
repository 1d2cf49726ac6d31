/**
 * The one table of flags. The parser's option specs ({@linkcode parseArgsOptions}), each command's
 * `--help` (help.ts) and docs/flags.md (script/flags_doc.ts) are made from it, and a test holds the
 * three equal. What a value means and which values are valid is the converter's job (args.ts);
 * defaults live in src/defaults.ts and are shown from there.
 *
 * @module
 */
import type { ParseArgsConfig } from "node:util";
import { RUN_DEFAULTS, VERIFY_DEFAULTS } from "../defaults.ts";
import { DEFAULT_WORKSPACE_PATTERN } from "../schema.ts";

/** The commands with flags of their own: a run, `verify`, and the live-control subcommands. */
export type CommandName = "run" | "verify" | "control";

/** The commands, in the order the docs list them. */
export const COMMAND_NAMES: readonly CommandName[] = ["run", "verify", "control"];

/** How one command uses a flag. */
export interface FlagUse {
  /** The heading the flag is listed under (`--help`, docs/flags.md). */
  group: string;
  /** What the flag does, one line (the renderers wrap it). */
  text: string;
  /** The default as shown; absent when the flag has none (off, or not set). */
  default?: string | number;
  /** `verify` only: the flag is refused without `--full` (and its help says so). */
  needsFull?: true;
}

/** One flag: how it parses, and how each command that accepts it uses it. */
export interface Flag {
  /** Without the leading `--`. */
  name: string;
  /** `boolean`: a switch; `string`: takes a value (the converter types it). */
  type: "boolean" | "string";
  /** The value's placeholder in help and docs (string flags only). */
  value?: string;
  short?: string;
  /** May be repeated (values collect into a list). */
  multiple?: true;
  /** The commands that accept the flag; a command not listed rejects it as unknown. */
  uses: Partial<Record<CommandName, FlagUse>>;
}

const MODE = "Mode (exactly one)";
const SCOPE = "Scope and pace";
const CHECKPOINTS = "Checkpoints";
const CONNECTION = "Connection";
const PACE = `Pace (under --rps, from what Redis reports; README "Throttle")`;
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

/** The same use in every command that accepts the flag. */
function everywhere(use: FlagUse, commands: readonly CommandName[]): Flag["uses"] {
  return Object.fromEntries(commands.map((command) => [command, use]));
}

/** The same use in a run and in verify, each under its output heading. */
function output(use: Omit<FlagUse, "group">): Flag["uses"] {
  return { run: { ...use, group: OUTPUT }, verify: { ...use, group: VERIFY_OUTPUT } };
}

const ALL = COMMAND_NAMES;
const RUN_AND_VERIFY: readonly CommandName[] = ["run", "verify"];
const D = RUN_DEFAULTS;

/** Every flag, in the order the help lists them within a heading. */
export const FLAGS: readonly Flag[] = [
  {
    name: "dry-run",
    type: "boolean",
    uses: {
      run: {
        group: MODE,
        text:
          "classify every old key and count; write nothing at all to Redis (not even a checkpoint)",
      },
    },
  },
  {
    name: "execute",
    type: "boolean",
    uses: {
      run: {
        group: MODE,
        text: "copy what only exists in the old schema (old keys are never touched)",
      },
    },
  },
  {
    name: "sample",
    type: "string",
    value: "N",
    uses: {
      verify: {
        group: SAMPLE,
        text:
          "old keys to check, uniformly at random; N >= all checks each once; as many new keys are checked for orphans",
        default: VERIFY_DEFAULTS.sample,
      },
    },
  },
  {
    name: "min-parity",
    type: "string",
    value: "PCT",
    uses: {
      verify: {
        group: SAMPLE,
        text: "exit 1 when parity is below PCT percent",
        default: VERIFY_DEFAULTS.minParity,
      },
    },
  },
  {
    name: "ttl-tolerance",
    type: "string",
    value: "S",
    uses: {
      verify: {
        group: SAMPLE,
        text: "TTLs may differ by up to S seconds",
        default: VERIFY_DEFAULTS.ttlToleranceSeconds,
      },
    },
  },
  {
    name: "recheck",
    type: "string",
    value: "N",
    uses: {
      verify: {
        group: SAMPLE,
        text:
          "re-read a missing, mismatched or orphan key up to N times (--recheck-delay apart) and count it only if the difference persists",
        default: VERIFY_DEFAULTS.recheck,
      },
    },
  },
  {
    name: "recheck-delay",
    type: "string",
    value: "MS",
    uses: {
      verify: {
        group: SAMPLE,
        text: "pause before each recheck, in milliseconds",
        default: VERIFY_DEFAULTS.recheckDelayMs,
      },
    },
  },
  {
    name: "full",
    type: "boolean",
    uses: {
      verify: {
        group: FULL,
        text:
          "compare EVERY old key with its new key, inside Redis (exact; resumable); not with --sample",
      },
    },
  },
  {
    name: "orphans",
    type: "boolean",
    uses: {
      verify: {
        group: FULL,
        text:
          "also scan every new key for orphans (old key missing, or workspace_id naming another workspace)",
        needsFull: true,
      },
    },
  },
  {
    name: "report",
    type: "string",
    value: "FILE",
    uses: {
      verify: {
        group: FULL,
        text:
          "one NDJSON line per finding (ids and field names only); an unwritable path exits 2 before anything is read",
        needsFull: true,
      },
    },
  },
  {
    name: "rps",
    type: "string",
    value: "N",
    uses: {
      run: {
        group: SCOPE,
        text: "at most N jobs in any 1-second window; 0 = unlimited",
        default: D.rps,
      },
      verify: {
        group: SCOPE,
        text: "at most N keys checked per second; 0 = unlimited",
        default: VERIFY_DEFAULTS.rps,
      },
    },
  },
  {
    name: "batch",
    type: "string",
    value: "N",
    uses: {
      run: {
        group: SCOPE,
        text:
          "largest SCAN COUNT (each sized to --max-call-ms) and work unit (>= 1); the checkpoint moves once per batch",
        default: D.batch,
      },
    },
  },
  {
    name: "max-keys",
    type: "string",
    value: "N",
    uses: { run: { group: SCOPE, text: "process at most N old keys in this run (>= 1)" } },
  },
  {
    name: "workspace",
    type: "string",
    value: "W",
    uses: {
      run: { group: SCOPE, text: "migrate only jobs of workspace W (others: filtered)" },
      verify: { group: SCOPE, text: "only jobs of workspace W (both samples)" },
    },
  },
  {
    name: "workspace-pattern",
    type: "string",
    value: "RE",
    uses: everywhere({
      group: SCOPE,
      text:
        "what counts as a valid workspace id (a JavaScript regular expression; an id containing : is never valid)",
      default: DEFAULT_WORKSPACE_PATTERN,
    }, RUN_AND_VERIFY),
  },
  {
    name: "shard",
    type: "string",
    value: "I/N",
    uses: {
      run: {
        group: SCOPE,
        text:
          "cluster: runner I of N (0 <= I < N) takes only masters I, I+N, I+2N, … in slot order; each runner holds its own per-master locks and checkpoints",
        default: "0/1 (every master)",
      },
    },
  },
  {
    name: "progress-key",
    type: "string",
    value: "P",
    uses: {
      run: {
        group: CHECKPOINTS,
        text: "prefix of the checkpoint and lock keys",
        default: D.progressKey,
      },
      verify: {
        group: FULL,
        text: "with --full: checkpoint and lock under P:verify:*",
        default: D.progressKey,
      },
      control: { group: CONTROL, text: "the run's progress key", default: D.progressKey },
    },
  },
  {
    name: "cursor",
    type: "string",
    value: "C",
    uses: {
      run: {
        group: CHECKPOINTS,
        text: "start from this SCAN cursor instead of the stored one",
        default: "stored, else 0",
      },
    },
  },
  {
    name: "reset-progress",
    type: "boolean",
    uses: {
      run: {
        group: CHECKPOINTS,
        text: "clear the stored checkpoint and start from cursor 0 (or --cursor)",
      },
      verify: { group: FULL, text: "ignore a stored full-verify checkpoint", needsFull: true },
    },
  },
  {
    name: "redis-url",
    type: "string",
    value: "URL",
    multiple: true,
    uses: everywhere({
      group: CONNECTION,
      text:
        "redis://, rediss:// (TLS), redis+sentinel://host:port[,host:port]/master; user and password in the URL; a cluster is detected by itself; repeat or comma-separate cluster seeds",
      default: `$REDIS_URL, else ${D.redisUrl}`,
    }, ALL),
  },
  {
    name: "tls-ca",
    type: "string",
    value: "FILE",
    uses: everywhere({
      group: CONNECTION,
      text:
        "CA bundle that signed the server certificate, for rediss:// (the TLS flags apply to every node)",
      default: "the system store",
    }, ALL),
  },
  {
    name: "tls-cert",
    type: "string",
    value: "FILE",
    uses: everywhere({
      group: CONNECTION,
      text: "client certificate for mutual TLS (with --tls-key: both or neither)",
    }, ALL),
  },
  {
    name: "tls-key",
    type: "string",
    value: "FILE",
    uses: everywhere({ group: CONNECTION, text: "client private key" }, ALL),
  },
  {
    name: "tls-servername",
    type: "string",
    value: "NAME",
    uses: everywhere({
      group: CONNECTION,
      text:
        "TLS SNI and the name the certificate must match (an IP host is matched against the certificate's IP SANs)",
      default: "URL host",
    }, ALL),
  },
  {
    name: "max-outage",
    type: "string",
    value: "S",
    uses: {
      run: {
        group: CONNECTION,
        text: "wait up to S seconds for a lost Redis, then exit 3",
        default: D.maxOutage,
      },
    },
  },
  {
    name: "wait-lock",
    type: "string",
    value: "S",
    uses: {
      run: {
        group: SAFETY,
        text:
          "wait up to S seconds for another run's lock to expire (a crashed run's lock lasts 30 s), then exit 4; 0 = refuse at once",
        default: D.waitLockSeconds,
      },
      verify: {
        group: FULL,
        text: "wait up to S seconds for P:verify:lock, then exit 4",
        default: D.waitLockSeconds,
        needsFull: true,
      },
    },
  },
  {
    name: "max-call-ms",
    type: "string",
    value: "MS",
    uses: {
      run: {
        group: PACE,
        text: "size each script call to hold Redis at most MS (> 0)",
        default: D.maxCallMs,
      },
      verify: {
        group: FULL,
        text: "size each script call to hold Redis at most MS (> 0)",
        default: D.maxCallMs,
        needsFull: true,
      },
    },
  },
  {
    name: "call-clock",
    type: "string",
    value: "C",
    uses: {
      run: {
        group: PACE,
        text:
          "time calls by the script's clock where the server lets time pass in a script, else on the client (auto); or always on the client (client)",
        default: D.callClock,
      },
      verify: {
        group: FULL,
        text: "auto or client, as a run's --call-clock",
        default: D.callClock,
        needsFull: true,
      },
    },
  },
  {
    name: "max-latency",
    type: "string",
    value: "MS",
    uses: {
      run: {
        group: PACE,
        text:
          "never hold more than MS of work in front of an application command: calls in flight per master x a call's Redis time; 0 = raw speed (deep pipeline, no yield)",
        default: D.maxLatencyMs,
      },
      verify: {
        group: FULL,
        text: "as a run's (calls in flight x call time); 0 = raw speed",
        default: D.maxLatencyMs,
        needsFull: true,
      },
    },
  },
  {
    name: "critical-load",
    type: "string",
    value: "P",
    uses: {
      run: {
        group: PACE,
        text:
          "while the application alone keeps Redis at least P% busy (INFO cpu), yield to 10% of Redis's time (1-100)",
        default: D.criticalLoadPct,
      },
      verify: { group: FULL, text: "as a run's", default: D.criticalLoadPct, needsFull: true },
    },
  },
  {
    name: "max-replica-lag",
    type: "string",
    value: "L",
    uses: {
      run: {
        group: PACE,
        text:
          "pause while a replica is more than L behind: bytes (512k, 16M, 1G) or seconds (10s); 0 = off",
        default: D.maxReplicaLag,
      },
    },
  },
  {
    name: "max-memory-pct",
    type: "string",
    value: "P",
    uses: {
      run: {
        group: SAFETY,
        text: "refuse / pause when Redis memory would pass P% of maxmemory",
        default: D.maxMemoryPct,
      },
    },
  },
  {
    name: "json",
    type: "boolean",
    uses: {
      run: {
        group: OUTPUT,
        text: "print the summary as one JSON object on stdout (and nothing else on stdout)",
      },
      verify: { group: VERIFY_OUTPUT, text: "print the report as one JSON object on stdout" },
      control: { group: CONTROL, text: "status only: print the status as one JSON object" },
    },
  },
  {
    name: "quiet",
    type: "boolean",
    short: "q",
    uses: {
      run: { group: OUTPUT, text: "summary only (no progress, no info logs)" },
      verify: { group: VERIFY_OUTPUT, text: "report only (no progress, no info logs)" },
    },
  },
  {
    name: "log-format",
    type: "string",
    value: "F",
    uses: output({
      text: "text | json (one object per line on stderr)",
      default: D.logFormat,
    }),
  },
  {
    name: "progress-interval",
    type: "string",
    value: "S",
    uses: {
      run: {
        group: OUTPUT,
        text: "seconds between progress lines when stderr is not a TTY",
        default: D.progressInterval,
      },
    },
  },
  {
    name: "metrics-port",
    type: "string",
    value: "N",
    uses: {
      run: {
        group: OUTPUT,
        text: "serve Prometheus /metrics and /healthz on port N while running",
      },
      verify: { group: VERIFY_OUTPUT, text: "serve Prometheus /metrics on port N" },
    },
  },
  {
    name: "metrics-host",
    type: "string",
    value: "H",
    uses: output({
      text: "address the metrics server binds (e.g. 127.0.0.1)",
      default: "0.0.0.0",
    }),
  },
  {
    name: "metrics-linger",
    type: "string",
    value: "S",
    uses: output({
      text: "keep /metrics up S seconds after the end for a last scrape; 0 = close at once",
      default: D.metricsLinger,
    }),
  },
  {
    name: "metrics-workspace-label",
    type: "string",
    value: "B",
    uses: {
      run: {
        group: OUTPUT,
        text: `true | false: false collapses workspace_id to "_all"`,
        default: D.metricsWorkspaceLabel,
      },
    },
  },
  {
    name: "pushgateway",
    type: "string",
    value: "URL",
    uses: output({
      text: "push the metrics to a Prometheus Pushgateway (start, interval, end)",
    }),
  },
  {
    name: "push-interval",
    type: "string",
    value: "S",
    uses: output({
      text: "seconds between pushes while running; 0 = start and end only",
      default: D.pushInterval,
    }),
  },
  {
    name: "health-timeout",
    type: "string",
    value: "S",
    uses: {
      run: {
        group: OUTPUT,
        text:
          "/healthz answers 503 (and redis_up reads 0) when a Redis node has not answered for S seconds (>= 1)",
        default: D.healthTimeout,
      },
    },
  },
  {
    name: "help",
    type: "boolean",
    short: "h",
    uses: everywhere({ group: HELP, text: "print this help" }, ALL),
  },
  {
    name: "version",
    type: "boolean",
    short: "V",
    uses: everywhere({ group: HELP, text: "print the version" }, RUN_AND_VERIFY),
  },
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

/**
 * `verify`'s flags that are refused without `--full`, in table order: the converter checks them in
 * this order, so the one error reported when several are given stays the same.
 */
export function verifyFullOnlyFlags(): string[] {
  return flagsOf("verify").filter((flag) => flag.use.needsFull).map((flag) => flag.name);
}
