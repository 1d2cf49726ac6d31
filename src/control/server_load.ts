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
 *
 * @module
 */
import type { Redis } from "../redis/ioredis.ts";

/** Commands whose time is the backfill's own: its scripts and `verify --full`'s. */
export const OWN_COMMANDS = ["evalsha", "evalsha_ro", "eval", "eval_ro"] as const;

/** The counters of one reading (cumulative since the server started). */
export interface LoadCounters {
  /** The server's clock, µs. */
  timeMicros: number;
  /** Main-thread CPU time, µs. */
  cpuMicros: number;
  /** {@linkcode OWN_COMMANDS}' time, µs. */
  ownMicros: number;
}

/** One interval between two readings. */
export interface LoadDelta {
  elapsedMicros: number;
  busyMicros: number;
  ownMicros: number;
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

/** The interval between two readings; undefined when the server restarted in between. */
export function loadDelta(before: LoadCounters, after: LoadCounters): LoadDelta | undefined {
  const elapsedMicros = after.timeMicros - before.timeMicros;
  const busyMicros = after.cpuMicros - before.cpuMicros;
  const ownMicros = after.ownMicros - before.ownMicros;
  // Counters that went back: a restart (or a failover to another server, or CONFIG RESETSTAT).
  if (!(elapsedMicros > 0) || busyMicros < 0 || ownMicros < 0) return undefined;
  return { elapsedMicros, busyMicros, ownMicros };
}

/** Reads a master's counters now. @throws what the client throws (the caller keeps its verdict). */
export async function readLoadCounters(client: Redis): Promise<LoadCounters | undefined> {
  const replies = await client.pipeline().time().info("cpu").info("commandstats").exec();
  if (!replies) return undefined;
  for (const [error] of replies) if (error) throw error;
  const [time, cpu, stats] = replies.map(([, value]) => value) as [
    [string, string],
    string,
    string,
  ];
  const cpuMicros = parseCpuMicros(cpu);
  if (cpuMicros === undefined) return undefined;
  return {
    timeMicros: Number(time[0]) * 1_000_000 + Number(time[1]),
    cpuMicros,
    ownMicros: parseOwnMicros(stats),
  };
}
