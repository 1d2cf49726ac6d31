/**
 * How busy a master is, read from the master itself: `TIME`, `INFO cpu` and `INFO commandstats`
 * in one pipeline, so all three are read at the same moment of the server. Between two readings:
 * - the server's clock gives the interval (no client timer: a client waiting for its CPU must not
 *   stretch or shrink it);
 * - `used_cpu_sys_main_thread + used_cpu_user_main_thread` (µs resolution) give the time Redis's
 *   main thread, the one that runs every command, spent on the CPU;
 * - the `usec` of the commands the backfill sends give the backfill's own share: its scripts (its
 *   SCANs run inside one, and a script's own commands are inside its time already, so `scan` is
 *   not added again). An application that runs Lua scripts of its own is counted as the backfill
 *   here, which only lowers the rate while the backfill yields.
 * - `CLIENT LIST` says whether Redis serves anyone else: a client that is not the backfill's
 *   (every connection the backfill opens is named `CLIENT_NAME`, redis/options.ts) nor a
 *   Sentinel's, and that sent or received something within the last second or has a command
 *   waiting. Nobody waits behind the backfill's calls while no such client exists, so the pace
 *   may keep a deeper window then (control/pace.ts). Its idle time has a resolution of a second;
 *   a client that went quiet reads active for one to two seconds more, which errs on the
 *   protected side. With more than {@linkcode CLIENT_LIST_MAX} connections the list is not read
 *   (it costs Redis time per client) and the store counts as shared; so does a server that
 *   refuses `CLIENT LIST`.
 *
 * @module
 */
import type { Redis } from "../redis/ioredis.ts";
import { CLIENT_NAME } from "../redis/options.ts";

/** Commands whose time is the backfill's own: its scripts and `verify --full`'s. */
export const OWN_COMMANDS = ["evalsha", "evalsha_ro", "eval", "eval_ro"] as const;

/** Above this many connections `CLIENT LIST` is not read and the store counts as shared. */
export const CLIENT_LIST_MAX = 32;

/** The counters of one reading (cumulative since the server started). */
export interface LoadCounters {
  /** The server's clock, µs. */
  timeMicros: number;
  /** Main-thread CPU time, µs. */
  cpuMicros: number;
  /** {@linkcode OWN_COMMANDS}' time, µs. */
  ownMicros: number;
  /** Connections to the server (`INFO clients`), when read. */
  connectedClients?: number;
  /**
   * Another client is active now (see the module comment); undefined when not known (the list was
   * not read or was refused): the pace treats that as shared.
   */
  othersActive?: boolean;
}

/** One interval between two readings. */
export interface LoadDelta {
  /** The interval's length by the server's clock (TIME), µs. */
  elapsedMicros: number;
  /** µs Redis's main thread was on the CPU in the interval (`INFO cpu`). */
  busyMicros: number;
  /** µs the backfill's own commands ran in the interval (`INFO commandstats`). */
  ownMicros: number;
  /** Another client was active at the interval's end (`CLIENT LIST`; undefined: not known). */
  othersActive?: boolean;
}

/**
 * Parses `INFO cpu`: the main thread's CPU time in µs. Servers before 6.0 have no per-thread
 * fields; the process's time stands in (it also counts background threads, so it errs busy).
 */
export function parseCpuMicros(info: string): number | undefined {
  const field = (name: string) => {
    const match = info.match(new RegExp(`^${name}:([0-9.]+)`, "m"));
    return match ? Number(match[1]) : undefined;
  };
  const sys = field("used_cpu_sys_main_thread") ?? field("used_cpu_sys");
  const user = field("used_cpu_user_main_thread") ?? field("used_cpu_user");
  if (sys === undefined || user === undefined) return undefined;
  return Math.round((sys + user) * 1_000_000);
}

/** Parses `INFO commandstats`: the summed `usec` of {@linkcode OWN_COMMANDS}. */
export function parseOwnMicros(info: string): number {
  let total = 0;
  for (const match of info.matchAll(/^cmdstat_([a-z_|]+):.*?usec=(\d+)/gm)) {
    if ((OWN_COMMANDS as readonly string[]).includes(match[1]!)) total += Number(match[2]);
  }
  return total;
}

/** Parses `INFO clients`: `connected_clients`. */
export function parseConnectedClients(info: string): number | undefined {
  const match = info.match(/^connected_clients:(\d+)/m);
  return match ? Number(match[1]) : undefined;
}

/**
 * Parses `CLIENT LIST`: whether a client other than the backfill's and Sentinel's is active (idle
 * at most a second, or a command waiting in its buffer). A client blocked in a command (`BLPOP`)
 * waits for data, not for Redis, and is not counted while it waits.
 */
export function othersActiveIn(list: string): boolean {
  for (const line of list.split("\n")) {
    const fields = new Map<string, string>();
    for (const pair of line.trim().split(" ")) {
      const at = pair.indexOf("=");
      if (at > 0) fields.set(pair.slice(0, at), pair.slice(at + 1));
    }
    if (!fields.has("id")) continue;
    const name = fields.get("name") ?? "";
    if (name === CLIENT_NAME || name.startsWith("sentinel-")) continue;
    if ((fields.get("flags") ?? "").includes("b")) continue;
    if (Number(fields.get("idle") ?? 0) <= 1 || Number(fields.get("qbuf") ?? 0) > 0) return true;
  }
  return false;
}

/** The interval between two readings; undefined when the server restarted in between. */
export function loadDelta(before: LoadCounters, after: LoadCounters): LoadDelta | undefined {
  const elapsedMicros = after.timeMicros - before.timeMicros;
  const busyMicros = after.cpuMicros - before.cpuMicros;
  const ownMicros = after.ownMicros - before.ownMicros;
  // Counters that went back: a restart (or a failover to another server, or CONFIG RESETSTAT).
  if (!(elapsedMicros > 0) || busyMicros < 0 || ownMicros < 0) return undefined;
  const delta: LoadDelta = { elapsedMicros, busyMicros, ownMicros };
  if (after.othersActive !== undefined) delta.othersActive = after.othersActive;
  return delta;
}

/**
 * Reads a master's counters now. `CLIENT LIST` is read only when the last reading counted at most
 * {@linkcode CLIENT_LIST_MAX} connections (`lastConnected`; none known reads it).
 * @throws what the client throws (the caller keeps its verdict).
 */
export async function readLoadCounters(
  client: Redis,
  lastConnected?: number,
): Promise<LoadCounters | undefined> {
  const listed = lastConnected === undefined || lastConnected <= CLIENT_LIST_MAX;
  const pipeline = client.pipeline().time().info("cpu").info("commandstats").info("clients");
  if (listed) pipeline.call("CLIENT", "LIST", "TYPE", "normal");
  const replies = await pipeline.exec();
  if (!replies) return undefined;
  // A refused `CLIENT LIST` (an ACL, a managed service) leaves the store counted as shared.
  for (const [error] of replies.slice(0, 4)) if (error) throw error;
  const [time, cpu, stats, clients] = replies.map(([, value]) => value) as [
    [string, string],
    string,
    string,
    string,
  ];
  const cpuMicros = parseCpuMicros(cpu);
  if (cpuMicros === undefined) return undefined;
  const [listError, list] = replies[4] ?? [new Error("not read")];
  const connectedClients = parseConnectedClients(clients);
  return {
    timeMicros: Number(time[0]) * 1_000_000 + Number(time[1]),
    cpuMicros,
    ownMicros: parseOwnMicros(stats),
    ...(connectedClients === undefined ? {} : { connectedClients }),
    ...(listError || typeof list !== "string" ? {} : { othersActive: othersActiveIn(list) }),
  };
}
