/**
 * The live-control subcommands: `pause`, `resume`, `set-rps N` and `stop` write `<P>:control` and
 * say which runs will obey; `status [--json]` prints what the runners publish, writing nothing.
 *
 * @module
 */
import type { ControlCommandLine } from "../cli/control_args.ts";
import {
  allStatusesJson,
  type ControlCommand,
  controlKey,
  formatControl,
  readAllStatuses,
  renderAllStatuses,
  type RunnerStatus,
  writeControl,
} from "../control/remote.ts";
import { ExitCode } from "../errors.ts";
import { connectRedis } from "../redis/connect.ts";
import { shardLabel } from "../redis/shard.ts";
import type { CommandIo } from "./io.ts";

/** Runs a control subcommand; returns 0 (errors are thrown). */
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
    // Every live runner of the progress key (every shard) obeys the one control key.
    const reads = await readAllStatuses(target.client, options.progressKey);
    io.stdout(`${describeWrite(action, controlKey(options.progressKey), reads)}\n`);
    return ExitCode.ok;
  } finally {
    await target.close();
  }
}

/** The one line a control write prints (pure): which runs obey it, or that none will. */
function describeWrite(
  command: ControlCommand,
  key: string,
  reads: readonly RunnerStatus[],
): string {
  const written = `${formatControl(command)} written to ${key}`;
  const active = reads.filter((read) => read.state === "active");
  if (active.length > 0) {
    const holder = (read: RunnerStatus) => {
      const { host, pid } = read.status.holder;
      return `${read.shard ? `shard ${shardLabel(read.shard)} ` : ""}${host} pid ${pid}`;
    };
    const runs = active.length === 1
      ? `the run (${holder(active[0]!)})`
      : `each of the ${active.length} live runners (${active.map(holder).join(", ")})`;
    const effect = {
      pause: "pauses",
      resume: "resumes",
      stop: "stops gracefully (checkpoint, summary)",
      "set-rps": command.kind === "set-rps" && command.rps === 0
        ? "drops its rate cap"
        : `caps its rate at ${command.kind === "set-rps" ? command.rps : 0}/s`,
    }[command.kind];
    const scope = command.kind === "set-rps" ? " (for this run only)" : "";
    return `${written}; ${runs} ${effect} within ~1 s${scope}`;
  }
  const stale = reads.find((read) => read.state === "stale");
  const nobody = stale
    ? `no live run (the last status, from ${stale.status.holder.host} pid ${stale.status.holder.pid}, is ${
      Math.round(stale.age_seconds)
    } s old)`
    : "no run is active";
  return `${written}; ${nobody}: nothing obeys it (a command reaches only the runs alive ` +
    `when it is issued)`;
}
