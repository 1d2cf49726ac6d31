/**
 * Live control from anywhere: the CLI appends commands (`pause`, `resume`, `set-rps N`, `stop`) to
 * the stream `<P>:control`, and every run of the progress key reads the entries added since it last
 * looked, about once a second, and obeys them in order. An entry that is no command is logged
 * once and ignored: a typo must never crash a migration.
 *
 * Addressing. A command is meant for the runs alive when it is issued, all of them:
 * - Every runner of the progress key (every `--shard`) reads the one stream, each from its own
 *   last-seen entry id; no reader removes anything, so no runner can take a command from another.
 * - A run starts reading after the last entry that existed when it started listening (one step on
 *   the key's server). Entries before that were meant for earlier runs and are never obeyed, so a
 *   `set-rps 0` or a `stop` left behind (by a run that ended, or was killed -9) cannot reach a
 *   later run, and nothing has to clean it up. Stream ids only grow, whatever the server's clock.
 * - Commands issued in quick succession all arrive, in order (a pause followed at once by a
 *   `set-rps` keeps the pause).
 * The stream keeps its last {@linkcode CONTROL_HISTORY} entries.
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

/** Entries the control stream keeps (a run reads every entry added within a second). */
const CONTROL_HISTORY = 100;

/** The stream entry field that holds a command's text. */
const FIELD = "command";

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

/** The text that stands for a command in an entry. */
export function formatControl(command: ControlCommand): string {
  return command.kind === "set-rps" ? `set-rps ${command.rps}` : command.kind;
}

/**
 * Appends ARGV[1] as a command. A plain value an older version stored in the key is replaced (it
 * was a desired state, not meant for runs that start now).
 */
const WRITE_LUA = `local kind = redis.call("TYPE", KEYS[1]).ok
if kind ~= "stream" and kind ~= "none" then redis.call("DEL", KEYS[1]) end
return redis.call("XADD", KEYS[1], "MAXLEN", ARGV[2], "*", "${FIELD}", ARGV[1])`;

/**
 * The entries after ARGV[1] ("" = none: only the last entry's id), oldest first, at most ARGV[2].
 * Not a stream (absent, or an older version's plain value): no entries.
 */
const READ_LUA = `if redis.call("TYPE", KEYS[1]).ok ~= "stream" then return {} end
if ARGV[1] == "" then return redis.call("XREVRANGE", KEYS[1], "+", "-", "COUNT", ARGV[2]) end
return redis.call("XRANGE", KEYS[1], "(" .. ARGV[1], "+", "COUNT", ARGV[2])`;

/** Appends a command to the control stream; returns its entry id. */
export async function writeControl(
  client: Redis | Cluster,
  progressKey: string,
  command: ControlCommand,
): Promise<string> {
  const id = await client.eval(
    WRITE_LUA,
    1,
    controlKey(progressKey),
    formatControl(command),
    String(CONTROL_HISTORY),
  );
  return String(id);
}

/** One entry of the stream as read. */
export interface ControlEntry {
  id: string;
  /** The command, or a string saying why the entry is not one. */
  command: ControlCommand | string;
  /** The entry's text (for a log line: sanitise it). */
  text: string;
}

/** Where a run's listening begins. */
export interface ControlOpening {
  /** Entries up to this id are an earlier run's ("0-0": none). */
  since: string;
  /** Those earlier entries, newest first (at most {@linkcode CONTROL_HISTORY}). */
  earlier: ControlEntry[];
}

/** Reads where a run's listening begins (one step on the key's server). */
export async function openControl(
  client: Redis | Cluster,
  progressKey: string,
): Promise<ControlOpening> {
  const earlier = await readEntries(client, progressKey, "");
  return { since: earlier[0]?.id ?? "0-0", earlier };
}

async function readEntries(
  client: Redis | Cluster,
  progressKey: string,
  after: string,
): Promise<ControlEntry[]> {
  const raw = await client.eval(
    READ_LUA,
    1,
    controlKey(progressKey),
    after,
    String(CONTROL_HISTORY),
  ) as [string, string[]][];
  return raw.map(([id, fields]) => {
    const at = fields.findIndex((field, i) => i % 2 === 0 && field === FIELD);
    const text = at < 0 ? "" : fields[at + 1] ?? "";
    return { id, text, command: at < 0 ? `no '${FIELD}' field` : parseControl(text) };
  });
}

/** Options of {@linkcode watchControl}. */
export interface ControlWatchOptions {
  /** Stops watching. */
  signal: AbortSignal;
  /**
   * Where listening began ({@linkcode openControl}): only later entries are read. Absent when that
   * read failed: the first read that succeeds opens the stream (what is there then is older).
   */
  opening?: ControlOpening;
  /** A new command. Called in order, never concurrently. */
  onCommand: (command: ControlCommand) => void;
  /** An entry that is no command: one call per entry, already sanitised. */
  onIgnored?: (event: { value: string; problem: string }) => void;
  /** Milliseconds between reads. Default 1000. */
  intervalMs?: number;
}

/**
 * Reads the entries added since the opening until the signal aborts; resolves then. Each entry is
 * handled once, in order. A failed read is retried at the next interval (an unreachable Redis is
 * the engine's outage handling, not a control problem).
 */
export async function watchControl(
  client: Redis | Cluster,
  progressKey: string,
  options: ControlWatchOptions,
): Promise<void> {
  let seen = options.opening?.since;
  while (!options.signal.aborted) {
    if (seen === undefined) {
      seen = (await openControl(client, progressKey).catch(() => undefined))?.since;
    }
    const entries = seen === undefined
      ? []
      : await readEntries(client, progressKey, seen).catch(() => []);
    for (const entry of entries) {
      seen = entry.id;
      if (typeof entry.command === "string") {
        options.onIgnored?.({ value: sanitise(entry.text), problem: entry.command });
      } else options.onCommand(entry.command);
    }
    await delay(options.intervalMs ?? 1000, { signal: options.signal }).catch(() => {});
  }
}

/** At most 40 printable characters: the value goes into a log line. */
function sanitise(value: string): string {
  const printable = value.replace(/[^\x20-\x7e]/g, "?");
  return printable.length > 40 ? `${printable.slice(0, 40)}…` : printable;
}
