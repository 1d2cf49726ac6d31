/**
 * How busy a master is, read from the master itself (`TIME`, `INFO cpu`, `INFO commandstats`,
 * `CLIENT LIST` in one pipeline), never from a client timer, which a CPU-starved client stretches:
 * - the main thread's CPU time says how busy Redis is;
 * - the `usec` of the backfill's scripts says its own share (an application's own Lua scripts
 *   count as ours, which only lowers the rate while yielding);
 * - `CLIENT LIST` says whether anyone else is served (see {@linkcode othersActiveIn}). Above
 *   {@linkcode CLIENT_LIST_MAX} connections (it costs Redis time per client) or where it is
 *   refused, the store counts as shared.
 *
 * @module
 */
import type { Redis } from "../redis/ioredis.ts";
import { CLIENT_NAME } from "../redis/options.ts";

/** Commands whose time is the backfill's own (its SCANs run inside a script). */
const OWN_COMMANDS = ["evalsha", "evalsha_ro", "eval", "eval_ro"] as const;

const CLIENT_LIST_MAX = 32;

/** The counters of one reading, µs since the server started: its clock, CPU and own commands. */
export interface LoadCounters {
  timeMicros: number;
  cpuMicros: number;
  ownMicros: number;
  /** `INFO clients`, when read. */
  connectedClients?: number;
  /** Undefined when not known (the list was not read or was refused): counts as shared. */
  othersActive?: boolean;
}

/** One interval between two readings, µs: its length, main-thread CPU, own commands' time. */
export interface LoadDelta {
  elapsedMicros: number;
  busyMicros: number;
  ownMicros: number;
  /** Another client was active at the interval's end (undefined: not known). */
  othersActive?: boolean;
}

/** Parses `INFO cpu`: main-thread CPU µs (before 6.0 the process's, which errs busy). */
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
 * Parses `CLIENT LIST`: whether a client not named `CLIENT_NAME` (redis/options.ts) nor a
 * Sentinel's is active: idle at most a second (its resolution, so a client reads active a little
 * longer, the protected side) or with a command waiting. A client blocked in a command (`BLPOP`)
 * waits for data, not for Redis, and does not count.
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

/** Reads a master's counters now; `CLIENT LIST` only when `lastConnected` allows it. */
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
