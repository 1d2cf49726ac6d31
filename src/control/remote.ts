/**
 * Live control from anywhere: a run reads `<P>:control` about once a second and obeys the known
 * commands (`pause`, `resume`, `set-rps N`, `stop`). The value is plain text, so an operator
 * without this binary can also `redis-cli SET <P>:control pause`. Anything else is logged once and
 * ignored: a typo in a control key must never crash a migration.
 *
 * The value is a desired state, not a queue: a run applies it whenever it differs from what it
 * last applied, so `pause` survives a restart of the run (a supervisor's restart does not silently
 * resume). `stop` is the exception: the run that obeys it deletes it, and the writer gives it an
 * expiry, so a stop meant for a run long gone cannot stop tomorrow's run.
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

/** How long an unconsumed `stop` stays in the key. */
export const STOP_EXPIRY_MS = 60_000;

/** The control key of a progress key. */
export function controlKey(progressKey: string): string {
  return `${progressKey}:control`;
}

/** Parses a control value; a string describing the problem when it is not a known command. */
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

/** The value that stands for a command in the key. */
export function formatControl(command: ControlCommand): string {
  return command.kind === "set-rps" ? `set-rps ${command.rps}` : command.kind;
}

/** Writes a command to the control key (`stop` with {@linkcode STOP_EXPIRY_MS}). */
export async function writeControl(
  client: Redis | Cluster,
  progressKey: string,
  command: ControlCommand,
): Promise<void> {
  const key = controlKey(progressKey);
  if (command.kind === "stop") await client.set(key, "stop", "PX", STOP_EXPIRY_MS);
  else await client.set(key, formatControl(command));
}

const DELETE_IF = `if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1]) end return 0`;

/** Options of {@linkcode watchControl}. */
export interface ControlWatchOptions {
  /** Stops watching. */
  signal: AbortSignal;
  /** A new command. Called in order, never concurrently. */
  onCommand: (command: ControlCommand) => void;
  /** A value that is not a command: one call per distinct value, already sanitised. */
  onIgnored?: (event: { value: string; problem: string }) => void;
  /** Milliseconds between reads. Default 1000. */
  intervalMs?: number;
}

/**
 * Reads the control key until the signal aborts; resolves then. A failed read is skipped (an
 * unreachable Redis is the engine's outage handling, not a control problem).
 */
export async function watchControl(
  client: Redis | Cluster,
  progressKey: string,
  options: ControlWatchOptions,
): Promise<void> {
  const key = controlKey(progressKey);
  let last: string | null = null;
  while (!options.signal.aborted) {
    const value = await client.get(key).catch(() => last);
    if (value !== null && value !== last) {
      const command = parseControl(value);
      if (typeof command === "string") {
        options.onIgnored?.({ value: sanitise(value), problem: command });
      } else {
        if (command.kind === "stop") await client.eval(DELETE_IF, 1, key, value).catch(() => {});
        options.onCommand(command);
      }
    }
    last = value;
    await delay(options.intervalMs ?? 1000, { signal: options.signal }).catch(() => {});
  }
}

/** At most 40 printable characters: the value goes into a log line. */
function sanitise(value: string): string {
  const printable = value.replace(/[^\x20-\x7e]/g, "?");
  return printable.length > 40 ? `${printable.slice(0, 40)}…` : printable;
}
