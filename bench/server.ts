/**
 * The benchmark's own redis-server: no persistence, a Lua time limit high enough for the ceiling
 * script, and the slow log set to catch any call over 2 ms. Every measurement gets a fresh copy of the
 * seeded data by restarting the server from a snapshot of it (an RDB file).
 *
 * @module
 */
import { type RedisServer, startRedis } from "../tests/support/redis_server.ts";
import type { Redis } from "../src/redis/ioredis.ts";
import { pinProcess } from "./pin.ts";

/** Slow-log threshold: calls slower than this many microseconds are reported. */
export const SLOWLOG_THRESHOLD_US = 2000;

/** A redis-server that can be reset to the seeded data. */
export interface BenchServer {
  port: number;
  url: string;
  /** A new client (the caller quits it). */
  client(): Redis;
  /** Saves the current data as the snapshot every {@linkcode BenchServer.restore} goes back to. */
  snapshot(): Promise<void>;
  /** Restarts the server from the snapshot (SIGKILL, copy the RDB, start, wait until loaded). */
  restore(): Promise<void>;
  /** Stops the server and removes its directory (and the snapshot). */
  stop(): Promise<void>;
}

/** Starts the benchmark's redis-server (empty), pinned to core `pinCpu` when given. */
export async function startBenchServer(pinCpu?: number): Promise<BenchServer> {
  const server: RedisServer = await startRedis({
    args: [
      "--busy-reply-threshold",
      "600000",
      "--slowlog-log-slower-than",
      String(SLOWLOG_THRESHOLD_US),
      "--slowlog-max-len",
      "10000",
      "--dbfilename",
      "dump.rdb",
      // DEBUG HTSTATS (is the main hash table rehashing?) and DEBUG SLEEP pulses.
      "--enable-debug-command",
      "yes",
    ],
  });
  const pin = async () => {
    if (pinCpu === undefined) return;
    const client = server.client();
    try {
      const pid = (await client.info("server")).match(/^process_id:(\d+)/m)?.[1];
      if (!pid) throw new Error("INFO server has no process_id");
      await pinProcess(Number(pid), pinCpu);
    } finally {
      client.disconnect();
    }
  };
  await pin();
  const rdb = `${server.dir}/dump.rdb`;
  const saved = `${server.dir}/seed.rdb`;
  return {
    port: server.port,
    url: server.url,
    client: () => server.client(),
    async snapshot() {
      const client = server.client();
      try {
        await client.save();
      } finally {
        client.disconnect();
      }
      await Deno.copyFile(rdb, saved);
    },
    async restore() {
      await server.kill();
      await Deno.copyFile(saved, rdb);
      await server.start();
      await pin();
    },
    stop: () => server.stop(),
  };
}

/** `used_cpu_sys + used_cpu_user` of the server, in seconds. */
export async function redisCpuSeconds(client: Redis): Promise<number> {
  const info = await client.info("cpu");
  const field = (name: string): number => {
    const match = info.match(new RegExp(`^${name}:([0-9.]+)`, "m"));
    if (!match?.[1]) throw new Error(`INFO cpu has no ${name}`);
    return Number(match[1]);
  };
  return field("used_cpu_sys") + field("used_cpu_user");
}

/** One SLOWLOG entry: how long the call ran and what it was (arguments cut short). */
export interface SlowCall {
  micros: number;
  command: string;
  /** Called from inside a script (Redis logs a script's inner calls with client `?:0`). */
  inScript: boolean;
}

/** The slow log, slowest first. */
export async function slowCalls(client: Redis): Promise<SlowCall[]> {
  const entries = await client.call("SLOWLOG", "GET", "-1") as [
    number,
    number,
    number,
    (string | Uint8Array)[],
    string,
    string,
  ][];
  return entries
    .map(([, , micros, args, addr]) => ({
      micros,
      command: args.slice(0, 3).map((arg) => String(arg).slice(0, 40)).join(" "),
      inScript: addr === "?:0",
    }))
    .sort((a, b) => b.micros - a.micros);
}

/** Per-command figures from INFO commandstats and INFO latencystats (since the last reset). */
export interface CommandStats {
  calls: number;
  usec: number;
  usecPerCall: number;
  /** Latency percentiles in microseconds (Redis's HDR histogram, approximate). */
  p50?: number;
  p99?: number;
  p999?: number;
}

/** Clears the slow log and the command and latency statistics. */
export async function resetStats(client: Redis): Promise<void> {
  await client.call("SLOWLOG", "RESET");
  await client.call("CONFIG", "RESETSTAT");
}

/** Command statistics since the last {@linkcode resetStats}, busiest (most time) first. */
export async function commandStats(client: Redis): Promise<Record<string, CommandStats>> {
  const stats: Record<string, CommandStats> = {};
  const commands = await client.info("commandstats");
  for (
    const m of commands.matchAll(/^cmdstat_(\S+?):calls=(\d+),usec=(\d+),usec_per_call=([\d.]+)/gm)
  ) {
    stats[m[1]!] = { calls: Number(m[2]), usec: Number(m[3]), usecPerCall: Number(m[4]) };
  }
  const latency = await client.info("latencystats");
  for (
    const m of latency.matchAll(
      /^latency_percentiles_usec_(\S+?):p50=([\d.]+),p99=([\d.]+),p99\.9=([\d.]+)/gm,
    )
  ) {
    const entry = stats[m[1]!];
    if (entry) Object.assign(entry, { p50: Number(m[2]), p99: Number(m[3]), p999: Number(m[4]) });
  }
  delete stats.info;
  delete stats["config|resetstat"];
  delete stats["slowlog|reset"];
  return Object.fromEntries(Object.entries(stats).sort(([, a], [, b]) => b.usec - a.usec));
}

/**
 * Waits until no hash table of db 0 is rehashing (`DEBUG HTSTATS 0` shows no "rehashing target"),
 * so that an idle measurement does not include Redis's own incremental rehash. Returns the ms
 * waited; throws after `timeoutMs`.
 */
export async function waitRehashSettled(client: Redis, timeoutMs = 30_000): Promise<number> {
  const started = performance.now();
  for (;;) {
    const stats = String(await client.call("DEBUG", "HTSTATS", "0"));
    if (!stats.includes("rehashing target")) return performance.now() - started;
    if (performance.now() - started > timeoutMs) {
      throw new Error(`db 0 still rehashing after ${timeoutMs} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Redis's own view of the script calls (EVALSHA, EVALSHA_RO, EVAL, FCALL) since the last reset. */
export interface ScriptCalls {
  calls: number;
  /** Mean Redis time per call (INFO commandstats usec / calls). */
  usecPerCall: number;
  /** Upper bound of the slowest call: the top non-empty bucket of LATENCY HISTOGRAM (power of 2). */
  maxUsecBound: number;
  /**
   * Per command name; `callsOver264`: calls in the LATENCY HISTOGRAM buckets above the one that
   * holds 250 µs (it ends at 264), the default `--max-call-ms`.
   */
  byCommand: Record<
    string,
    { calls: number; usecPerCall: number; maxUsecBound: number; callsOver264: number }
  >;
}

const SCRIPT_COMMANDS = ["evalsha", "evalsha_ro", "eval", "eval_ro", "fcall", "fcall_ro"];

/** Script calls since the last {@linkcode resetStats} (commandstats and LATENCY HISTOGRAM). */
export async function scriptCalls(client: Redis): Promise<ScriptCalls> {
  const stats = await commandStats(client);
  const histogram = await client.call("LATENCY", "HISTOGRAM", ...SCRIPT_COMMANDS) as unknown[];
  const maxBound: Record<string, number> = {};
  const over264: Record<string, number> = {};
  for (let i = 0; i + 1 < histogram.length; i += 2) {
    const fields = histogram[i + 1] as unknown[];
    // Bucket bounds and cumulative counts, alternating.
    const buckets = fields[fields.indexOf("histogram_usec") + 1] as number[];
    const name = String(histogram[i]);
    maxBound[name] = Number(buckets.at(-2) ?? NaN);
    let upTo264 = 0;
    for (let j = 0; j + 1 < buckets.length && Number(buckets[j]) <= 264; j += 2) {
      upTo264 = Number(buckets[j + 1]);
    }
    over264[name] = Number(buckets.at(-1) ?? 0) - upTo264;
  }
  const byCommand: ScriptCalls["byCommand"] = {};
  for (const name of SCRIPT_COMMANDS) {
    const s = stats[name];
    if (!s) continue;
    byCommand[name] = {
      calls: s.calls,
      usecPerCall: s.usecPerCall,
      maxUsecBound: maxBound[name] ?? NaN,
      callsOver264: over264[name] ?? 0,
    };
  }
  const all = Object.values(byCommand);
  const calls = all.reduce((sum, c) => sum + c.calls, 0);
  return {
    calls,
    usecPerCall: calls ? all.reduce((sum, c) => sum + c.usecPerCall * c.calls, 0) / calls : NaN,
    maxUsecBound: all.length ? Math.max(...all.map((c) => c.maxUsecBound)) : NaN,
    byCommand,
  };
}
