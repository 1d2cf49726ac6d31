/**
 * The live-control subcommands: `pause`, `resume`, `set-rps N` and `stop` write `<P>:control` and
 * print one line saying which run will obey; `status [--json]` prints what the running run
 * publishes in `<P>:status`, and every `--shard` runner in `<P>:status:<I>/<N>`. They write
 * nothing else, and `status` writes nothing at all.
 *
 * @module
 */
import type { ControlCommandLine } from "../cli/control_args.ts";
import {
  type ControlCommand,
  controlKey,
  STOP_EXPIRY_MS,
  writeControl,
} from "../control/remote.ts";
import type { ReadStatus } from "../control/status.ts";
import { allStatusesJson, readAllStatuses, renderAllStatuses } from "../control/status_all.ts";
import { ExitCode } from "../errors.ts";
import { connectRedis } from "../redis/connect.ts";
import type { CommandIo } from "./io.ts";

/** Runs a control subcommand; returns the exit code (0 unless an error is thrown). */
export async function controlCommand(options: ControlCommandLine, io: CommandIo): Promise<number> {
  const target = await connectRedis(options.redisUrls, { tls: options.tls, signal: io.signal });
  try {
    const action = options.action;
    if (action.kind === "status") {
      const reads = await readAllStatuses(target.client, options.progressKey);
      io.stdout(
        options.json ? JSON.stringify(allStatusesJson(reads)) + "\n" : renderAllStatuses(reads),
      );
      return ExitCode.ok;
    }
    await writeControl(target.client, options.progressKey, action);
    // Every runner of the progress key (every shard) obeys the one control key.
    const reads = await readAllStatuses(target.client, options.progressKey);
    const read = reads.find((r) => r.state === "active") ?? reads[0];
    io.stdout(`${describeWrite(action, controlKey(options.progressKey), read)}\n`);
    return ExitCode.ok;
  } finally {
    await target.close();
  }
}

/** The one line a control write prints (pure). */
export function describeWrite(
  command: ControlCommand,
  key: string,
  read: ReadStatus | undefined,
): string {
  const written = `${
    command.kind === "set-rps" ? `set-rps ${command.rps}` : command.kind
  } written to ${key}`;
  if (read?.state === "active") {
    const run = `the run (${read.status.holder.host} pid ${read.status.holder.pid})`;
    const effect = {
      pause: "pauses",
      resume: "resumes",
      stop: "stops gracefully (checkpoint, summary)",
      "set-rps": command.kind === "set-rps" && command.rps === 0
        ? "drops its rate cap"
        : `caps its rate at ${command.kind === "set-rps" ? command.rps : 0}/s`,
    }[command.kind];
    return `${written}; ${run} ${effect} within ~1 s`;
  }
  const nobody = read?.state === "stale"
    ? `no live run (the last status, from ${read.status.holder.host} pid ${read.status.holder.pid}, is ${
      Math.round(read.age_seconds)
    } s old)`
    : "no run is active";
  const later = {
    pause: "the next run starts paused",
    resume: "the next run starts unpaused",
    stop: `it expires unread in ${STOP_EXPIRY_MS / 1000} s`,
    "set-rps": "the next run applies it",
  }[command.kind];
  return `${written}; ${nobody}: ${later}`;
}
