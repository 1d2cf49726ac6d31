/**
 * The two measured CLI runs on the full keyspace: `backfill --execute --rps 0` (throughput, Redis
 * CPU, peak RSS, slow calls) and `backfill verify --sample 1000` (latency on the migrated data).
 *
 * @module
 */
import {
  type BenchServer,
  type CommandStats,
  commandStats,
  redisCpuSeconds,
  resetStats,
  type SlowCall,
  slowCalls,
} from "./server.ts";
import { parseJson, runCli, unthrottledRun } from "./cli.ts";
import type { SeedStats } from "./seed.ts";
import type { Redis } from "../src/redis/ioredis.ts";

/** A correctness check on the bench's own data (a failure makes the bench exit 1). */
export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

/** One measured `backfill --execute --rps 0` run. */
export interface BackfillResult {
  wallSeconds: number;
  /** scanned / whole-process wall time (spawn to exit). */
  keysPerSecond: number;
  /** scanned / the summary's duration_seconds (without process start-up). */
  inProcessKeysPerSecond: number;
  summary: Record<string, unknown>;
  exitCode: number;
  /** Redis used_cpu_sys + used_cpu_user over the run, seconds. */
  redisCpuSeconds: number;
  redisCpuMicrosPerKey: number;
  peakRssMb: number;
  /** User + system CPU of the backfill process, seconds. */
  cliCpuSeconds: number;
  /**
   * CPU time the rest of the machine used during the run (all cores busy time from /proc/stat,
   * minus Redis and the backfill process), seconds: other work skews the run when this is large.
   */
  otherCpuSeconds: number;
  /** CPU time the hypervisor took from this VM during the run (/proc/stat steal), seconds. */
  stealSeconds: number;
  /** Redis calls slower than 2 ms during the run (top-level and inside scripts), slowest first. */
  slowCalls: SlowCall[];
  /** Commands Redis ran during the run (INFO commandstats + latencystats), most time first. */
  commands: Record<string, CommandStats>;
}

/** The measured `verify --sample 1000` runs on migrated data. */
export interface VerifyResult {
  wallMs: number[];
  medianMs: number;
  /** Median of the summaries' duration_seconds (without process start-up), ms. */
  inProcessMs: number;
  summary: Record<string, unknown>;
  exitCode: number;
}

async function withClient<T>(server: BenchServer, fn: (client: Redis) => Promise<T>): Promise<T> {
  const client = server.client();
  try {
    return await fn(client);
  } finally {
    client.disconnect();
  }
}

/** Busy and steal seconds of all cores so far, from the first line of /proc/stat. */
async function cpuTimes(): Promise<{ busy: number; steal: number }> {
  const line = (await Deno.readTextFile("/proc/stat").catch(() => "cpu 0")).split("\n")[0]!;
  const [user = 0, nice = 0, system = 0, _idle, _iowait, irq = 0, softirq = 0, steal = 0] = line
    .trim().split(/\s+/).slice(1).map(Number);
  const hz = 100; // USER_HZ
  return { busy: (user + nice + system + irq + softirq) / hz, steal: steal / hz };
}

/** Median of numbers (the upper one of the middle two for an even count). */
export function median(values: readonly number[]): number {
  return values.toSorted((a, b) => a - b)[Math.floor(values.length / 2)] ?? NaN;
}

/** Runs `backfill --execute --rps 0 --json` on the (fresh) server and checks its summary. */
export async function measureBackfill(
  server: BenchServer,
  seeded: SeedStats,
  checks: Check[],
  root?: string,
): Promise<BackfillResult> {
  return await withClient(server, async (client) => {
    await resetStats(client);
    const dbBefore = await client.dbsize();
    const cpuBefore = await redisCpuSeconds(client);
    const machineBefore = await cpuTimes();
    const run = await runCli(unthrottledRun(server.url), [], { root });
    const machineAfter = await cpuTimes();
    const cpu = await redisCpuSeconds(client) - cpuBefore;
    const slow = await slowCalls(client);
    const commands = await commandStats(client);
    const dbAfter = await client.dbsize();
    const summary = parseJson(run);
    const scanned = Number(summary.scanned), migrated = Number(summary.migrated);
    const check = (name: string, ok: boolean, detail: string) => {
      if (!ok || !checks.some((c) => c.name === name)) checks.push({ name, ok, detail });
    };
    check("backfill exit code 0", run.code === 0, `exit ${run.code}\n${run.stderrTail}`);
    check("backfill completed", summary.completed === true, `completed=${summary.completed}`);
    check("backfill scanned = seeded", scanned === seeded.keys, `${scanned} vs ${seeded.keys}`);
    check(
      "backfill migrated = valid seeded",
      migrated === seeded.valid,
      `${migrated} vs ${seeded.valid}`,
    );
    check(
      "backfill skipped_invalid = invalid seeded",
      summary.skipped_invalid === seeded.invalid,
      `${summary.skipped_invalid} vs ${seeded.invalid}`,
    );
    check("backfill errors = 0", summary.errors === 0, `errors=${summary.errors}`);
    check(
      "DBSIZE grew by migrated (+ a few checkpoint keys)",
      dbAfter - dbBefore >= migrated && dbAfter - dbBefore <= migrated + 10,
      `DBSIZE grew by ${dbAfter - dbBefore}, migrated ${migrated}`,
    );
    return {
      wallSeconds: run.wallSeconds,
      keysPerSecond: scanned / run.wallSeconds,
      inProcessKeysPerSecond: scanned / Number(summary.duration_seconds),
      summary,
      exitCode: run.code,
      redisCpuSeconds: cpu,
      redisCpuMicrosPerKey: migrated ? cpu * 1e6 / migrated : NaN,
      peakRssMb: run.peakRssMb,
      cliCpuSeconds: run.cpuSeconds,
      otherCpuSeconds: Math.max(0, machineAfter.busy - machineBefore.busy - cpu - run.cpuSeconds),
      stealSeconds: machineAfter.steal - machineBefore.steal,
      slowCalls: slow,
      commands,
    };
  });
}

/** What a run that does nothing costs: `main.ts --version`, median of 3 by wall time. */
export interface Baseline {
  wallMs: number;
  rssMb: number;
}

/** Measures the process start-up baseline (`main.ts --version`, 3 runs, the median one). */
export async function measureBaseline(): Promise<Baseline> {
  const runs: Baseline[] = [];
  for (let i = 0; i < 3; i++) {
    const run = await runCli(["--version"]);
    runs.push({ wallMs: run.wallSeconds * 1000, rssMb: run.peakRssMb });
  }
  return runs.sort((a, b) => a.wallMs - b.wallMs)[1]!;
}

/** Runs `verify --sample 1000 --json` `times` times on migrated data; whole-process wall time. */
export async function measureVerify(
  server: BenchServer,
  checks: Check[],
  times = 3,
): Promise<VerifyResult> {
  const wallMs: number[] = [];
  const inProcessMs: number[] = [];
  let summary: Record<string, unknown> = {};
  let code = 0;
  for (let i = 0; i < times; i++) {
    const run = await runCli(["verify", "--sample", "1000", "--json", "--redis-url", server.url]);
    wallMs.push(run.wallSeconds * 1000);
    summary = parseJson(run);
    code = run.code;
    inProcessMs.push(Number(summary.duration_seconds) * 1000);
  }
  checks.push({
    name: "verify parity = 1 after backfill",
    ok: code === 0 && summary.parity === 1,
    detail: `exit ${code}, ${JSON.stringify(summary)}`,
  });
  return {
    wallMs,
    medianMs: median(wallMs),
    inProcessMs: median(inProcessMs),
    summary,
    exitCode: code,
  };
}
