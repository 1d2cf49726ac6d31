/**
 * Each command's `--help`: a fixed head and tail around the flags rendered from the flag table,
 * so the help lists exactly what the parser accepts.
 *
 * @module
 */
import { type CommandName, type Flag, flagsOf, type FlagUse, GROUPS } from "./flags.ts";

const HEAD: Record<CommandName, string> = {
  run: `backfill — copy jobs from ai:jobs:<job_id> to ai:job:<workspace_id>:<job_id>, live

Usage:
  backfill (--dry-run | --execute) [options]
  backfill verify [--sample N] [--min-parity PCT] [options]     (backfill verify --help)
  backfill pause | resume | set-rps N | stop | status [--json]  (backfill status --help)
  backfill --help | --version
`,
  verify: `backfill verify — read-only parity check between the old and the new schema

Usage:
  backfill verify [--sample N] [--min-parity PCT] [options]
  backfill verify --full [--orphans] [--report FILE] [--min-parity PCT] [options]
`,
  control: `backfill pause | resume | set-rps N | stop | status — control a running backfill

Usage:
  backfill pause            the run stops admitting work within ~1 s (it keeps its lock)
  backfill resume           the run goes on
  backfill set-rps N        cap the run's rate at N jobs/s (0 = no cap) within ~1 s
  backfill stop             graceful stop, like SIGTERM: checkpoint, summary, exit
  backfill status [--json]  what the run publishes every second: mode, holder, rate and
                            throttle reason, counts, estimate and ETA, cursors, last update;
                            with --shard runners, one block per shard and a total line
`,
};

const TAIL: Record<CommandName, string> = {
  run: `Environment: REDIS_URL, TELEMETRY_ENABLED (false: no metrics server, no push).
Exit codes: 0 done · 1 per-key errors · 2 usage · 3 Redis unreachable · 4 refused by a safety
check · 5 stopped by backfill stop · 130 SIGINT · 143 SIGTERM.
`,
  verify: `Writes nothing to Redis (--full writes only P:verify:lock and P:verify:state).
Exit codes: 0 parity reached and no orphans · 1 below --min-parity or orphans found · 2 usage ·
3 Redis unreachable.
`,
  control:
    `The commands append to the stream <P>:control; every live runner of P (every --shard) obeys each
command once, in order. A command reaches only the runs alive when it is issued: a later run
ignores it, so its cap is --rps until a set-rps of its own (a run that replaces one that died
paused starts paused). status writes nothing, and says when no run is active or when the last
update is stale (the holder died).
Exit codes: 0 written / printed · 2 usage (nothing written) · 3 Redis unreachable.
`,
};

const WIDTH = 100;
/** Where a flag's description starts. */
const COLUMN = 28;

export function helpText(command: CommandName): string {
  const flags = flagsOf(command);
  const sections = GROUPS[command].map((group) => {
    const lines = flags.filter((flag) => flag.use.group === group).flatMap((flag) =>
      flagLines(flag, flag.use)
    );
    return `${group}:\n${lines.join("\n")}\n`;
  });
  return [HEAD[command], ...sections, TAIL[command]].join("\n");
}

/** How a flag is written: `--rps N`, `--quiet, -q`. */
export function flagLabel(flag: Flag): string {
  const value = flag.value === undefined ? "" : ` ${flag.value}`;
  const short = flag.short === undefined ? "" : `, -${flag.short}`;
  return `--${flag.name}${value}${short}`;
}

/** What a flag does for one command, with the `--full` condition where there is one. */
export function flagDescription(use: FlagUse): string {
  return use.needsFull ? `with --full: ${use.text}` : use.text;
}

/** A flag's help lines: label, description wrapped at {@linkcode WIDTH}, default in brackets. */
function flagLines(flag: Flag, use: FlagUse): string[] {
  const label = `  ${flagLabel(flag)}`;
  const words = flagDescription(use).split(" ");
  if (use.default !== undefined) words.push(` [${use.default}]`);
  const lines: string[] = [];
  let line = label.length + 2 <= COLUMN ? label.padEnd(COLUMN) : `${label}  `;
  let empty = true;
  for (const word of words) {
    if (!empty && line.length + 1 + word.length > WIDTH) {
      lines.push(line);
      line = " ".repeat(COLUMN);
      empty = true;
    }
    line += empty ? word.trimStart() : ` ${word}`;
    empty = false;
  }
  lines.push(line);
  return lines;
}
