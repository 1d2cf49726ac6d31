/**
 * Writes docs/flags.md from the flag table (src/cli/flags.ts): `deno task flags-doc`. A test
 * (tests/flags_test.ts) fails when the page and the table disagree.
 *
 * @module
 */
import { COMMAND_NAMES, type CommandName, FLAGS, flagsOf, GROUPS } from "../src/cli/flags.ts";
import { flagDescription, flagLabel } from "../src/cli/help.ts";

/** Where the page lives, from the repository root. */
export const FLAGS_DOC_PATH = new URL("../docs/flags.md", import.meta.url);

/** How each command is invoked, as the page's section titles. */
const INVOCATION: Record<CommandName, string> = {
  run: "backfill (--dry-run | --execute)",
  verify: "backfill verify",
  control: "backfill pause | resume | set-rps N | stop | status",
};

/** The whole page. */
export function renderFlagsDoc(): string {
  const parts = [
    "# Flags",
    // Prose wrapped at 100 columns, as `deno fmt` wraps it.
    "This page is generated from the flag table in `src/cli/flags.ts` by `deno task flags-doc`; a test\n" +
    "keeps it, the parser and each command's `--help` in agreement. Edit the table, not this page.",
    "Bad input (an unknown flag, a value out of range, a combination that is not allowed) gets a one-line\n" +
    "`error: …` on stderr and exit code 2 before anything connects to Redis. Only a `--shard` other than\n" +
    "`0/1` against a standalone or Sentinel server is refused after connecting (the topology is known\n" +
    "only then), the same way and with nothing written.",
    "Environment: `REDIS_URL` (when there is no `--redis-url`), `TELEMETRY_ENABLED` (`false` turns the\n" +
    "metrics server and the Pushgateway push off; default on).",
    "## Which command takes which flag",
    "`run` is `backfill --dry-run | --execute`; `control` is `pause`, `resume`, `set-rps N`, `stop` and\n" +
    "`status`.",
    table(
      ["flag", ...COMMAND_NAMES],
      FLAGS.map((flag) => [
        code(flagLabel(flag)),
        ...COMMAND_NAMES.map((command) => flag.uses[command] === undefined ? "" : "yes"),
      ]),
    ),
  ];
  for (const command of COMMAND_NAMES) {
    parts.push(`## \`${INVOCATION[command]}\``);
    const flags = flagsOf(command);
    for (const group of GROUPS[command]) {
      parts.push(`### ${group}`);
      parts.push(table(
        ["flag", "default", "meaning"],
        flags.filter((flag) => flag.use.group === group).map((flag) => [
          code(flagLabel(flag)),
          flag.use.default === undefined ? "" : code(String(flag.use.default)),
          cell(flagDescription(flag.use)),
        ]),
      ));
    }
  }
  return parts.join("\n\n") + "\n";
}

function code(text: string): string {
  return `\`${text}\``;
}

/** Table cell text: a `|` would end the cell. */
function cell(text: string): string {
  return text.replaceAll("|", "\\|");
}

/** A Markdown table padded the way `deno fmt` pads it, so the page passes `deno fmt --check`. */
function table(header: string[], rows: string[][]): string {
  const widths = header.map((title, column) =>
    Math.max(3, title.length, ...rows.map((row) => (row[column] ?? "").length))
  );
  const line = (cells: string[]) =>
    `| ${cells.map((text, column) => text.padEnd(widths[column]!)).join(" | ")} |`;
  return [line(header), line(widths.map((width) => "-".repeat(width))), ...rows.map(line)]
    .join("\n");
}

if (import.meta.main) {
  await Deno.mkdir(new URL(".", FLAGS_DOC_PATH), { recursive: true });
  await Deno.writeTextFile(FLAGS_DOC_PATH, renderFlagsDoc());
}
