/**
 * The parser, each command's `--help` and docs/flags.md agree: the same flags, and the defaults the
 * help shows are the ones the parser applies.
 */
import assert from "node:assert/strict";
import { parseCommand } from "../src/cli/args.ts";
import { COMMAND_NAMES, type CommandName, FLAGS, parseArgsOptions } from "../src/cli/flags.ts";
import { helpText } from "../src/cli/help.ts";
import { UsageError } from "../src/errors.ts";
import { FLAGS_DOC_PATH, renderFlagsDoc } from "../script/flags_doc.ts";

const doc = await Deno.readTextFile(FLAGS_DOC_PATH);

/** What a command's argv starts with; the flag under test follows. */
const PREFIX: Record<CommandName, string[]> = {
  run: ["--dry-run"],
  verify: ["verify"],
  control: ["status"],
};

/** A flag as written in help or docs: `--rps N`, `--quiet, -q`. */
interface Written {
  name: string;
  takesValue: boolean;
  short?: string;
}

const LABEL = /^--([a-z][a-z-]*)( [A-Z][A-Z/=]*)?(?:, -([A-Za-z]))?$/;

function written(label: string): Written {
  const match = label.match(LABEL);
  assert.ok(match, `not a flag label: '${label}'`);
  return { name: match[1]!, takesValue: match[2] !== undefined, short: match[3] };
}

/** The flags a help text lists: lines `  --name VALUE   description`. */
function helpFlags(command: CommandName): Written[] {
  return helpText(command).split("\n").flatMap((line) => {
    const label = line.match(/^ {2}(--[a-z][^ ]*(?: [A-Z][A-Z/=]*)?(?:, -[A-Za-z])?)(?: {2}|$)/)
      ?.[1];
    return label === undefined ? [] : [written(label)];
  });
}

/** The flags docs/flags.md lists in a command's section. */
function docFlags(command: CommandName): Written[] {
  const sections = doc.split(/^## /m);
  const index = 2 + COMMAND_NAMES.indexOf(command);
  const section = sections[index];
  assert.ok(section !== undefined, `docs/flags.md has no section for ${command}`);
  return [...section.matchAll(/^\| `(--[^`]+)` +\|/gm)].map((match) => written(match[1]!));
}

/** Does the real parser take `flag` for `command`? Any error but "unknown flag" means it does. */
function parserAccepts(command: CommandName, flag: string, takesValue: boolean): boolean {
  const argv = [...PREFIX[command], takesValue ? `${flag}=1` : flag];
  try {
    parseCommand(argv, {});
    return true;
  } catch (error) {
    assert.ok(error instanceof UsageError, `${argv.join(" ")}: ${error}`);
    return !/unknown flag/.test(error.message);
  }
}

function names(flags: Written[]): string[] {
  return flags.map((flag) => flag.name).sort();
}

Deno.test("docs/flags.md is the page the flag table makes (deno task flags-doc)", () => {
  assert.equal(doc, renderFlagsDoc(), "docs/flags.md is stale: run `deno task flags-doc`");
});

Deno.test("each command's parser, --help and docs/flags.md list the same flags", async (t) => {
  // Every flag any command or page knows, and one no command knows.
  const candidates = new Map<string, Written>();
  for (const command of COMMAND_NAMES) {
    for (const flag of [...helpFlags(command), ...docFlags(command)]) {
      candidates.set(flag.name, flag);
    }
  }
  for (const flag of FLAGS) {
    candidates.set(flag.name, {
      name: flag.name,
      takesValue: flag.type === "string",
      short: flag.short,
    });
  }
  candidates.set("no-such-flag", { name: "no-such-flag", takesValue: false });
  for (const command of COMMAND_NAMES) {
    await t.step(command, () => {
      const help = helpFlags(command);
      const docs = docFlags(command);
      assert.equal(new Set(names(help)).size, help.length, "a flag listed twice in --help");
      assert.equal(new Set(names(docs)).size, docs.length, "a flag listed twice in docs/flags.md");
      const accepted = [...candidates.values()].filter((flag) =>
        parserAccepts(command, `--${flag.name}`, flag.takesValue)
      );
      assert.deepEqual(names(help), names(accepted), "--help vs the parser");
      assert.deepEqual(names(docs), names(accepted), "docs/flags.md vs the parser");
      assert.deepEqual(names(help), Object.keys(parseArgsOptions(command)).sort());
      // Same value placeholders and short forms in both places, and the parser takes the shorts.
      const byName = (flags: Written[]) =>
        Object.fromEntries(flags.map((flag) => [flag.name, flag]));
      assert.deepEqual(byName(docs), byName(help));
      for (const flag of help) {
        if (flag.short === undefined) continue;
        assert.ok(parserAccepts(command, `-${flag.short}`, false), `-${flag.short}`);
      }
      assert.equal(parserAccepts(command, "-Z", false), false);
    });
  }
});

/** Option fields whose name is not the flag's in camelCase. */
const FIELD: Record<string, string> = {
  "max-latency": "maxLatencyMs",
  "critical-load": "criticalLoadPct",
  "wait-lock": "waitLockSeconds",
  "recheck-delay": "recheckDelayMs",
};

/** Defaults shown as text that the options hold in another form, and how to check them. */
const SHOWN_AS_TEXT: Record<string, (options: Record<string, unknown>) => boolean> = {
  "redis-url": (options) =>
    JSON.stringify(options.redisUrls) === JSON.stringify(["redis://127.0.0.1:6379"]),
  "tls-ca": (options) => (options.tls as { ca?: string }).ca === undefined,
  "tls-servername": (options) => (options.tls as { servername?: string }).servername === undefined,
  "metrics-host": (options) => options.metricsHost === undefined,
  cursor: (options) => options.cursor === undefined,
  shard: (options) => JSON.stringify(options.shard) === JSON.stringify({ index: 0, count: 1 }),
  "workspace-pattern": (options) => (options.keys as { isDefaultRule: boolean }).isDefaultRule,
  from: (options) => (options.keys as { isDefaultMapping: boolean }).isDefaultMapping,
  to: (options) => (options.keys as { isDefaultMapping: boolean }).isDefaultMapping,
  "max-replica-lag": (options) =>
    JSON.stringify(options.maxReplicaLag) ===
      JSON.stringify({ kind: "bytes", bytes: 16 * 1024 * 1024 }),
  "metrics-workspace-label": (options) => options.metricsWorkspaceLabel === true,
};

Deno.test("the defaults --help and docs/flags.md show are the ones the parser applies", () => {
  for (const command of COMMAND_NAMES) {
    const parsed = parseCommand(command === "control" ? ["status"] : PREFIX[command], {});
    assert.ok(parsed.kind !== "help" && parsed.kind !== "version");
    const options = parsed.options as unknown as Record<string, unknown>;
    for (const flag of FLAGS) {
      const shown = flag.uses[command]?.default;
      if (shown === undefined) continue;
      const where = `${command} --${flag.name} [${shown}]`;
      const check = SHOWN_AS_TEXT[flag.name];
      if (check !== undefined) {
        assert.ok(check(options), where);
        continue;
      }
      const field = FIELD[flag.name] ??
        flag.name.replace(/-([a-z])/g, (_, letter: string) => letter.toUpperCase());
      assert.ok(field in options, `${where}: no option '${field}'`);
      assert.equal(String(options[field]), String(shown), where);
    }
  }
});

Deno.test("help lines fit in 100 columns", () => {
  for (const command of COMMAND_NAMES) {
    for (const line of helpText(command).split("\n")) {
      assert.ok(line.length <= 100, `${command}: '${line}'`);
    }
  }
});

Deno.test("the converter reads every flag of the table, and no other", async () => {
  // A flag in the table that no converter reads would be accepted and ignored; one a converter
  // reads that the table lacks could never be given.
  const read = new Set<string>();
  for (const file of ["args.ts", "control_args.ts", "flag_values.ts"]) {
    const source = await Deno.readTextFile(new URL(`../src/cli/${file}`, import.meta.url));
    const patterns = [
      /values\["([a-z-]+)"\]/g,
      /(?<!\w)values\.([a-z]+)\b/g,
      /\(values, "([a-z-]+)"/g,
    ];
    for (const pattern of patterns) {
      for (const match of source.matchAll(pattern)) read.add(match[1]!);
    }
  }
  assert.deepEqual([...read].sort(), FLAGS.map((flag) => flag.name).sort());
});
