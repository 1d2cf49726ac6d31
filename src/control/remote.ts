/**
 * Live control from anywhere: a run reads `<P>:control` about once a second and obeys the known
 * commands (`pause`, `resume`, `set-rps N`, `stop`). Anything else is logged once and ignored: a
 * typo in a control key must never crash a migration.
 *
 * Addressing. A command is meant for the runs alive when it is issued, all of them: every runner of
 * the progress key (every `--shard`) reads the one key, and none deletes it, so each runner keeps
 * the last value it saw and acts when the value changes. A run acts only on values written after
 * it started listening: the CLI stamps each command with the time of the Redis server that holds
 * the key (`pause @1733480000123456`, microseconds of `TIME`, taken inside the writing script), and
 * the run takes its own start from the same server's clock, atomically with its first read. A
 * value stamped at or before that start is an earlier run's and is not obeyed, so a `set-rps 0` or
 * a `stop` left behind (by a run that ended, or was killed -9) can never reach tomorrow's run, and
 * nothing has to clean it up. An unstamped value (`redis-cli SET <P>:control pause`) is obeyed
 * when it appears during the run; one already there at the start is treated as an earlier run's.
 *
 * @module
 */
import type { Cluster, Redis } from "../redis/ioredis.ts";
import { delay } from "../async/delay.ts";

/** A command the run obeys. */
export type ControlCommand =
  | { kind: "pause" }
  | { kind: "resume" }
  | { kind: "stop" }
  | { kind: "set-rps"; rps: number };

/** A control value as read: the command (or what is wrong with it) and its stamp, if any. */
export interface ControlValue {
  /** The command, or a string saying why the value is not one. */
  command: ControlCommand | string;
  /** When it was issued, in microseconds of the key's server clock (absent: written by hand). */
  issued?: bigint;
}

/** The control key of a progress key. */
export function controlKey(progressKey: string): string {
  return `${progressKey}:control`;
}

/** Parses a command's text; a string describing the problem when it is not a known command. */
export function parseControl(text: string): ControlCommand | string {
  const words = text.trim().split(/\s+/);
  const [verb, argument, ...rest] = words;
  if (rest.length > 0) return `too many words`;
  if ((verb === "pause" || verb === "resume" || verb === "stop") && argument === undefined) {
    return { kind: verb };
  }
  if (verb === "set-rps") {
    if (argument === undefined || !/^\d{1,9}$/.test(argument)) {
      return `set-rps needs a whole number >= 0 (0 = no cap)`;
    }
    return { kind: "set-rps", rps: Number(argument) };
  }
  return `not a known command (pause, resume, set-rps N, stop)`;
}

/** Parses a stored value: a command with an optional trailing stamp ` @<microseconds>`. */
export function parseControlValue(text: string): ControlValue {
  const stamped = text.match(/^(.*\S)\s+@(\d{1,20})\s*$/s);
  if (stamped === null) return { command: parseControl(text) };
  return { command: parseControl(stamped[1]!), issued: BigInt(stamped[2]!) };
}

/** The text that stands for a command (without its stamp). */
export function formatControl(command: ControlCommand): string {
  return command.kind === "set-rps" ? `set-rps ${command.rps}` : command.kind;
}

/** Microseconds of the server's `TIME`, as a decimal string (Lua numbers lose precision). */
const NOW_LUA = `local t = redis.call("TIME")
local now = t[1] .. string.format("%06d", tonumber(t[2]))`;

/** Stores `ARGV[1] @<now>` in KEYS[1] and returns the stamp. */
const WRITE_LUA = `${NOW_LUA}
redis.call("SET", KEYS[1], ARGV[1] .. " @" .. now)
return now`;

/** Returns the stamp of now and the value of KEYS[1] ("" when there is none), in one step. */
const OPEN_LUA = `${NOW_LUA}
return {now, redis.call("GET", KEYS[1]) or ""}`;

/**
 * Writes a command to the control key, stamped with the key's server clock; returns the stamp.
 * The value does not expire: a run that starts later ignores it (it is older than the run).
 */
export async function writeControl(
  client: Redis | Cluster,
  progressKey: string,
  command: ControlCommand,
): Promise<bigint> {
  const stamp = await client.eval(WRITE_LUA, 1, controlKey(progressKey), formatControl(command));
  return BigInt(String(stamp));
}

/** Where a run's listening begins: the server's clock and the value in the key then. */
export interface ControlOpening {
  /** Commands stamped at or before this are an earlier run's. */
  since: bigint;
  /** The value in the key at that moment (null: none). */
  value: string | null;
}

/** Reads the start of a run's listening (one script on the key's server: one clock, one read). */
export async function openControl(
  client: Redis | Cluster,
  progressKey: string,
): Promise<ControlOpening> {
  const [now, value] = await client.eval(OPEN_LUA, 1, controlKey(progressKey)) as [
    string,
    string,
  ];
  return { since: BigInt(now), value: value === "" ? null : value };
}

/** Why a value is not obeyed, or the command to obey. */
export type ControlVerdict =
  | { kind: "obey"; command: ControlCommand }
  | { kind: "ignore"; problem: string };

/**
 * What a run does with a value it has not seen before (pure): obey it, or ignore it because it is
 * no command or was issued before the run started listening (`since`).
 */
export function judgeControl(value: ControlValue, since: bigint): ControlVerdict {
  if (typeof value.command === "string") return { kind: "ignore", problem: value.command };
  if (value.issued !== undefined && value.issued <= since) {
    return { kind: "ignore", problem: "issued before this run started (meant for an earlier run)" };
  }
  return { kind: "obey", command: value.command };
}

/** Options of {@linkcode watchControl}. */
export interface ControlWatchOptions {
  /** Stops watching. */
  signal: AbortSignal;
  /** Where listening began ({@linkcode openControl}): that value counts as seen. */
  opening: ControlOpening;
  /** A new command. Called in order, never concurrently. */
  onCommand: (command: ControlCommand) => void;
  /** A value that is not obeyed: one call per distinct value, already sanitised. */
  onIgnored?: (event: { value: string; problem: string }) => void;
  /** Milliseconds between reads. Default 1000. */
  intervalMs?: number;
}

/**
 * Reads the control key until the signal aborts; resolves then. Each distinct value is judged
 * once; the key is never written (every runner must read the same value). A failed read is
 * skipped (an unreachable Redis is the engine's outage handling, not a control problem).
 */
export async function watchControl(
  client: Redis | Cluster,
  progressKey: string,
  options: ControlWatchOptions,
): Promise<void> {
  const key = controlKey(progressKey);
  let last = options.opening.value;
  while (!options.signal.aborted) {
    const value = await client.get(key).catch(() => last);
    if (value !== null && value !== last) {
      const verdict = judgeControl(parseControlValue(value), options.opening.since);
      if (verdict.kind === "obey") options.onCommand(verdict.command);
      else options.onIgnored?.({ value: sanitise(value), problem: verdict.problem });
    }
    last = value;
    await delay(options.intervalMs ?? 1000, { signal: options.signal }).catch(() => {});
  }
}

/** At most 40 printable characters: the value goes into a log line. */
export function sanitise(value: string): string {
  const printable = value.replace(/[^\x20-\x7e]/g, "?");
  return printable.length > 40 ? `${printable.slice(0, 40)}…` : printable;
}
