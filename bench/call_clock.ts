/**
 * The call-clock rows of the benchmark: what timing calls on the client costs, where a server
 * freezes time inside scripts (Redis ≥ 7.2; src/control/call_clock.ts). This machine's Redis 7.0
 * lets time pass, so `--call-clock client` stands in for such a server. One fresh server is seeded
 * and snapshotted; then, alternated in pairs (the machine's drift hits both alike), each clock
 * runs an unthrottled backfill from the snapshot and a `verify --full --rps 0` of its result.
 *
 * Redis time per call comes from Redis itself: INFO commandstats (usec_per_call) and LATENCY
 * HISTOGRAM (calls over 264 µs, the bucket above the one of the default 250 µs budget).
 *
 * @module
 */
import type { Check } from "./backfill_run.ts";
import { parseJson, runCli, unthrottledRun } from "./cli.ts";
import { seed } from "./seed.ts";
import { resetStats, scriptCalls, startBenchServer, waitRehashSettled } from "./server.ts";
import type { Redis } from "../src/redis/ioredis.ts";

/** One command's run under one clock. */
export interface ClockRun {
  keysPerSecond: number;
  /** Script calls (EVALSHA for the backfill, EVALSHA_RO for the verify), as Redis counts them. */
  calls: number;
  usecPerCall: number;
  callsOver264: number;
}

/** One clock's backfill and verify. */
export interface ClockPair {
  clock: "auto" | "client";
  backfill: ClockRun;
  verify: ClockRun;
}

/** The section's result. */
export interface CallClockBenchResult {
  keys: number;
  /** In the order run: auto, client, client, auto. */
  runs: ClockPair[];
}

const ORDER = ["auto", "client", "client", "auto"] as const;

async function scriptRun(client: Redis, command: string, keys: number, seconds: number) {
  const stats = (await scriptCalls(client)).byCommand[command];
  return {
    keysPerSecond: keys / seconds,
    calls: stats?.calls ?? 0,
    usecPerCall: stats?.usecPerCall ?? NaN,
    callsOver264: stats?.callsOver264 ?? 0,
  };
}

/** Measures both clocks on one fresh server of `keys` jobs (stopped afterwards). */
export async function measureCallClock(
  keys: number,
  options: { checks: Check[]; pinCpu?: number; log: (line: string) => void },
): Promise<CallClockBenchResult> {
  const server = await startBenchServer(options.pinCpu);
  const runs: ClockPair[] = [];
  try {
    const seeder = server.client();
    options.log(`call clock: seeding ${keys} keys`);
    const seeded = await seed(seeder, keys);
    await server.snapshot();
    seeder.disconnect();
    for (const [i, clock] of ORDER.entries()) {
      await server.restore();
      const client = server.client();
      try {
        await waitRehashSettled(client);
        await resetStats(client);
        options.log(`call clock ${clock} (${i + 1} of ${ORDER.length}): backfill --execute`);
        const run = await runCli([...unthrottledRun(server.url), "--call-clock", clock]);
        const summary = parseJson(run);
        const backfill = await scriptRun(client, "evalsha", keys, run.wallSeconds);
        await resetStats(client);
        options.log(`call clock ${clock} (${i + 1} of ${ORDER.length}): verify --full`);
        const verifyArgs = ["verify", "--full", "--rps", "0", "--json", "--redis-url", server.url];
        const check = await runCli([...verifyArgs, "--call-clock", clock]);
        const report = parseJson(check);
        const verify = await scriptRun(client, "evalsha_ro", keys, check.wallSeconds);
        options.checks.push({
          name: `call clock ${clock} (${i + 1}): backfill migrated = valid, verify parity 1`,
          ok: run.code === 0 && summary.migrated === seeded.valid && check.code === 0 &&
            report.parity === 1,
          detail: `backfill exit ${run.code}, migrated ${summary.migrated} of ${seeded.valid}; ` +
            `verify exit ${check.code}, parity ${report.parity}\n${check.stderrTail}`,
        });
        runs.push({ clock, backfill, verify });
      } finally {
        client.disconnect();
      }
    }
  } finally {
    await server.stop();
  }
  return { keys, runs };
}

/** The section as text lines. */
export function renderCallClock(result: CallClockBenchResult): string[] {
  const k = (v: number) => Math.round(v).toLocaleString("en-US");
  const line = (r: ClockRun) =>
    `${k(r.keysPerSecond)} keys/s, ${k(r.calls)} calls of ${r.usecPerCall.toFixed(0)} µs mean, ` +
    `${(100 * r.callsOver264 / Math.max(r.calls, 1)).toFixed(2)}% over 264 µs`;
  return [
    `call clock: the script's (auto) vs the client's (as where time stands still in a script), ` +
    `${k(result.keys)} keys, whole-process keys/s`,
    ...result.runs.flatMap((r) => [
      `  ${r.clock}: backfill ${line(r.backfill)}`,
      `  ${r.clock}: verify --full ${line(r.verify)}`,
    ]),
  ];
}
