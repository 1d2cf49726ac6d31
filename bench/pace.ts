/**
 * The pace section: what the shipped default pace (`--rps 0`, the default `--max-latency`) keeps
 * of a raw run (`--rps 0 --max-latency 0`) and what it costs the application, on the same data and
 * server, in the situations a user meets. Every run is the real CLI (`main.ts` as a subprocess,
 * with the compiled binary's flags) on a fresh copy of the seeded data (the server restarted from
 * its RDB snapshot); default and raw runs alternate (default, raw, default, raw) so the machine's
 * drift hits both alike. A run that is still going after the cap is stopped with SIGTERM (it
 * checkpoints and prints its summary); keys/s is always scanned ÷ the summary's duration.
 *
 * Rows:
 * 1. healthy standalone: default/raw keys/s, and the time from the process's spawn to the first
 *    COPY Redis executes (`INFO commandstats` polled every 5 ms);
 * 2. a 3-master cluster holding the same data (every node restarted from its own snapshot);
 * 3. an open-loop prober (bench/open_loop.ts) on Redis's core: added p99 against idle windows
 *    taken once Redis's rehashing settled;
 * 4. the backfill's core starved: a busy loop on the client core, then a CPU quota of 250m (the
 *    CFS bandwidth limit a pod's CPU limit sets: cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us`);
 * 5. latency spikes that are not the backfill's: another client's `DEBUG SLEEP 0.002` every
 *    50 ms, from 0.5 s after the first copy; the rate is Redis's new keys while the spikes run;
 * 6. `backfill set-rps` on a healthy run: new keys per 250 ms from Redis's side, time until the
 *    rolling 1 s rate stays within ±10% of the cap; then `set-rps 800`, `pause`, `resume`;
 * 7. a store the application saturates (redis-benchmark, pipelined): Redis's busy share from
 *    `INFO cpu` main-thread time before the backfill starts, and the backfill's share of Redis's
 *    time (script usec from `INFO commandstats` ÷ main-thread CPU) over the run;
 * 8. `verify --full` with its defaults under the same prober as row 3.
 *
 * Targets are reported met or missed; only correctness (errors, counts) fails the bench.
 *
 * @module
 */
import { Redis } from "../src/redis/ioredis.ts";
import { type BenchServer, commandStats, resetStats, waitRehashSettled } from "./server.ts";
import { type CliRun, runCli, spawnTracked, startCli } from "./cli.ts";
import { type OpenLoopStats, startOpenLoop } from "./open_loop.ts";
import { copyData, startBenchCluster, stopAllClusterNodes } from "./cluster.ts";
import { runCeiling } from "./ceiling.ts";
import { pingRtt } from "./rtt.ts";
import { pinProcess } from "./pin.ts";
import type { Check } from "./backfill_run.ts";
import type { SeedStats } from "./seed.ts";
import type { RedisServer } from "../tests/support/redis_server.ts";

/** The two ways a run is started. */
export type PaceMode = "default" | "raw";

const MODE_ARGS: Record<PaceMode, readonly string[]> = {
  default: ["--rps", "0"],
  raw: ["--rps", "0", "--max-latency", "0"],
};

/** One CLI run of the section. */
export interface PaceRun {
  mode: PaceMode | "verify --full";
  /** Old keys scanned ÷ the summary's duration_seconds. */
  keysPerSecond: number;
  scanned: number;
  migrated: number;
  errors: number;
  seconds: number;
  /** Spawn to exit. */
  wallSeconds: number;
  exitCode: number;
  /** Stopped by the bench's cap (SIGTERM) rather than finished. */
  capped: boolean;
  /** Spawn of the process to the first COPY Redis executed (standalone rows). */
  firstCopyMs?: number;
  /** The run's own log lines beyond progress, invalid keys and start-up: why it paced. */
  logLines: string[];
  openLoop?: OpenLoopStats;
  /** Row 5: new keys per second while the spikes ran (Redis's DBSIZE). */
  spikeKeysPerSecond?: number;
  spikes?: number;
  /** Row 7: Redis busy share before the run, and the backfill's share of Redis time in it. */
  redisBusyBefore?: { cpu: number; demand: number };
  redisBusyDuring?: number;
  backfillShare?: number;
}

/** One figure of a row, with its target. */
export interface PaceFigure {
  name: string;
  value: string;
  goal: string;
  /** `null`: informational, or not measured. */
  pass: boolean | null;
}

/** One row of the section. */
export interface PaceRow {
  id: string;
  title: string;
  runs: PaceRun[];
  figures: PaceFigure[];
  notes: string[];
  /** Row 3 and 8: the idle windows' prober stats. */
  idle?: OpenLoopStats[];
  /** Row 6: the phases of the live-control run. */
  phases?: ControlPhase[];
  /** Row 6: Redis's DBSIZE every ~250 ms, as `[ms after the first command, keys]`. */
  samples?: [number, number][];
  /** The machine's 1-minute load average when the row started (other work skews it). */
  loadAverage: number;
}

/** Row 6: one control command and what Redis saw after it. */
export interface ControlPhase {
  command: string;
  /** New keys per second the command asks for (its jobs/s × the valid share), 0 for pause. */
  targetKeysPerSecond: number;
  /** From the command's exit to the start of the last stretch within ±10% (or stopped). */
  settleMs?: number;
  /** Mean new keys/s over the last second of the phase. */
  endKeysPerSecond: number;
  observedMs: number;
}

/** The whole section. */
export interface PaceResult {
  date: string;
  loadAverageBefore: string;
  loadAverageAfter: string;
  keys: number;
  pairs: number;
  capSeconds: number;
  idleSeconds: number;
  rows: PaceRow[];
}

/** Options of {@linkcode measurePace}. */
export interface PaceOptions {
  seeded: SeedStats;
  checks: Check[];
  quick: boolean;
  /** Core of redis-server and the prober (and the cluster's nodes); undefined: not pinned. */
  redisCpu?: number;
  /** Core of the bench and every CLI run. */
  clientCpu?: number;
  log: (line: string) => void;
  signal?: AbortSignal;
  /** Only these rows (ids such as "1", "4b"); all when undefined. */
  only?: readonly string[];
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Log events every run writes that say nothing about its pace. */
const ROUTINE_EVENTS = new Set([
  "progress",
  "invalid_key",
  "invalid_keys",
  "connected",
  "lock_acquired",
  "memory_estimate",
  "call_clock",
  "metrics_listening",
  "metrics_linger",
  "preflight",
  "verify_start",
  "verify_done",
  "verify_sampled",
  "verify_resumed",
  "verify_progress",
]);

/** The log lines (JSON, one per line) that are not routine, as `+S.SSs event: message`. */
export function paceLogLines(stderr: string, startedAt: number): string[] {
  const out: string[] = [];
  for (const line of stderr.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      const entry = JSON.parse(line) as { time?: string; event?: string; message?: string };
      if (!entry.event || ROUTINE_EVENTS.has(entry.event)) continue;
      const at = entry.time ? (Date.parse(entry.time) - startedAt) / 1000 : NaN;
      out.push(`+${at.toFixed(2)}s ${entry.event}: ${entry.message ?? ""}`);
    } catch {
      // not a log line
    }
  }
  return out;
}

/** Mean of numbers (NaN for none). */
function mean(values: readonly number[]): number {
  return values.length ? values.reduce((a, b) => a + b, 0) / values.length : NaN;
}

/** Redis main-thread CPU seconds so far (INFO cpu). */
async function mainThreadCpu(client: Redis): Promise<number> {
  const info = await client.info("cpu");
  const field = (name: string) => Number(info.match(new RegExp(`^${name}:([0-9.]+)`, "m"))?.[1]);
  const main = field("used_cpu_sys_main_thread") + field("used_cpu_user_main_thread");
  return Number.isNaN(main) ? field("used_cpu_sys") + field("used_cpu_user") : main;
}

/** Redis's main thread's time on a CPU and waiting for one, ns (/proc/<pid>/schedstat). */
async function schedTimes(pid: number): Promise<[number, number]> {
  const text = await Deno.readTextFile(`/proc/${pid}/task/${pid}/schedstat`).catch(() => "");
  const [run, wait] = text.split(" ").map(Number);
  return [run ?? NaN, wait ?? NaN];
}

/**
 * Redis's busy share over `ms`: main-thread CPU ÷ wall (`INFO cpu`), and its demand: on a CPU or
 * runnable and waiting for one (`/proc/<pid>/schedstat`) ÷ wall. On a shared machine the two differ
 * by the time other processes held Redis's core: demand is the share Redis was not idle.
 */
async function busyShare(client: Redis, ms: number): Promise<{ cpu: number; demand: number }> {
  const pid = Number((await client.info("server")).match(/^process_id:(\d+)/m)?.[1]);
  const cpu0 = await mainThreadCpu(client), sched0 = await schedTimes(pid);
  const t0 = performance.now();
  await sleep(ms);
  const cpu1 = await mainThreadCpu(client), sched1 = await schedTimes(pid);
  const wall = (performance.now() - t0) / 1000;
  return {
    cpu: (cpu1 - cpu0) / wall,
    demand: (sched1[0] - sched0[0] + sched1[1] - sched0[1]) / 1e9 / wall,
  };
}

/**
 * Rolling 1 s rates of `samples` (`[ms, count]`, ~every 250 ms) and the time after `from` from
 * which every rate up to `to` stays within `band` of `target` (at least 1 s of them): the settle
 * time. For a target of 0, the time from which the count no longer grows.
 */
export function settleTime(
  samples: readonly (readonly [number, number])[],
  from: number,
  to: number,
  target: number,
  band = 0.1,
): { settleMs?: number; endRate: number } {
  const inPhase = samples.filter(([t]) => t >= from && t <= to);
  const rateAt = (i: number): number => {
    const [t, n] = samples[i]!;
    let j = i;
    while (j > 0 && t - samples[j - 1]![0] <= 1000 + 125) j--;
    const [t0, n0] = samples[j]!;
    return t > t0 ? (n - n0) * 1000 / (t - t0) : NaN;
  };
  const last = inPhase.at(-1);
  const endRate = last ? rateAt(samples.indexOf(last)) : NaN;
  if (!last || last[0] - from < 1000) return { endRate };
  if (target === 0) {
    let k = inPhase.length - 1;
    while (k > 0 && inPhase[k - 1]![1] === last[1]) k--;
    return inPhase[k]![1] === last[1] && last[0] - inPhase[k]![0] >= 500
      ? { settleMs: inPhase[k]![0] - from, endRate }
      : { endRate };
  }
  let first: number | undefined;
  for (let k = inPhase.length - 1; k >= 0; k--) {
    const r = rateAt(samples.indexOf(inPhase[k]!));
    if (Math.abs(r - target) > band * target) break;
    first = k;
  }
  if (first === undefined || last[0] - inPhase[first]![0] < 1000) return { endRate };
  return { settleMs: inPhase[first]![0] - from, endRate };
}

/** What a run needs besides its mode. */
interface RunSetup {
  url: string;
  args: readonly string[];
  mode: PaceRun["mode"];
  capSeconds: number;
  /** A client of the (standalone) server: the first COPY is watched through it. */
  watch?: Redis;
  wrap?: readonly string[];
  /** Called once the first COPY was seen (or at once without `watch`); its cleanup at the end. */
  during?: (run: LiveRun) => Promise<() => Promise<void>>;
}

/** A run in flight, as {@linkcode RunSetup.during} sees it. */
interface LiveRun {
  running(): boolean;
  /** Stops the run now (SIGTERM), as the cap would. */
  stop(): void;
}

/** Runs the CLI once, stopping it (SIGTERM) at the cap; parses its summary and log. */
async function paceRun(setup: RunSetup, checks: Check[], label: string): Promise<PaceRun> {
  const startedWall = Date.now();
  const spawnedAt = performance.now();
  const cli = startCli(
    [...setup.args, "--json", "--log-format", "json", "--redis-url", setup.url],
    [],
    { wrap: setup.wrap },
  );
  let capped = false;
  const stop = () => {
    capped = true;
    cli.kill();
  };
  const cap = setTimeout(stop, setup.capSeconds * 1000);
  let exited = false;
  const done = cli.done.finally(() => {
    exited = true;
    clearTimeout(cap);
  });
  let firstCopyMs: number | undefined;
  if (setup.watch) {
    while (!exited) {
      const stats = await setup.watch.info("commandstats");
      if (/^cmdstat_copy:calls=[1-9]/m.test(stats)) {
        firstCopyMs = performance.now() - spawnedAt;
        break;
      }
      await sleep(5);
    }
  }
  let stopDuring: (() => Promise<void>) | undefined;
  try {
    stopDuring = exited ? undefined : await setup.during?.({ running: () => !exited, stop });
  } catch (error) {
    stop();
    await done.catch(() => {});
    throw error;
  }
  let run: CliRun;
  try {
    run = await done;
  } finally {
    await stopDuring?.();
  }
  let summary: Record<string, unknown>;
  try {
    summary = JSON.parse(run.stdout) as Record<string, unknown>;
  } catch {
    // verify --full prints no summary when stopped: its rows need only the prober's figures.
    if (!capped) {
      throw new Error(`${label}: exited ${run.code} without a summary\n${run.stderrTail}`);
    }
    summary = {};
  }
  const scanned = Number(summary.scanned ?? summary.checked);
  const seconds = Number(summary.duration_seconds);
  const errors = Number(summary.errors ?? 0);
  const okExit = run.code === 0 || (capped && (run.code === 143 || run.code === 130));
  if (!okExit || errors !== 0) {
    checks.push({
      name: `pace ${label}: exit 0 (or 143 when stopped at the cap), errors 0`,
      ok: false,
      detail: `exit ${run.code}, errors ${errors}\n${run.stderrTail}`,
    });
  }
  return {
    mode: setup.mode,
    keysPerSecond: scanned / seconds,
    scanned,
    migrated: Number(summary.migrated ?? summary.matched ?? 0),
    errors,
    seconds,
    wallSeconds: run.wallSeconds,
    exitCode: run.code,
    capped,
    firstCopyMs,
    logLines: paceLogLines(run.stderr, startedWall),
  };
}

const k = (v: number | undefined) =>
  v === undefined || Number.isNaN(v) ? "n/a" : Math.round(v).toLocaleString("en-US");
const ratioFigure = (name: string, a: number, b: number, goal: number): PaceFigure => {
  const r = a / b;
  return {
    name,
    value: Number.isFinite(r) ? `${r.toFixed(2)} (${k(a)} / ${k(b)} keys/s)` : "n/a",
    goal: `≥ ${goal}`,
    pass: Number.isFinite(r) ? r >= goal : null,
  };
};
const rateOf = (runs: readonly PaceRun[], mode: PaceRun["mode"]) =>
  mean(runs.filter((r) => r.mode === mode).map((r) => r.keysPerSecond));
const ms = (v: number | undefined, digits = 2) =>
  v === undefined || Number.isNaN(v) ? "n/a" : `${v >= 0 ? "+" : ""}${v.toFixed(digits)} ms`;

/** The default, raw, default, raw… order of a row. */
function alternate(pairs: number): PaceMode[] {
  return Array.from({ length: pairs }, () => ["default", "raw"] as PaceMode[]).flat();
}

/** Checks a run that finished (not stopped at the cap) saw every seeded key. */
function checkComplete(run: PaceRun, seeded: SeedStats, checks: Check[], label: string): void {
  if (run.capped || run.mode === "verify --full") return;
  const ok = run.scanned === seeded.keys && run.migrated === seeded.valid;
  if (!ok) {
    checks.push({
      name: `pace ${label}: a finished run scanned every seeded key and migrated the valid ones`,
      ok,
      detail:
        `scanned ${run.scanned} of ${seeded.keys}, migrated ${run.migrated} of ${seeded.valid}`,
    });
  }
}

/** A busy loop (`sh`) on core `cpu`, until stopped. */
function startBusyLoop(cpu: number | undefined) {
  const script = ["sh", "-c", "while :; do :; done"];
  const [cmd, ...args] = cpu === undefined ? script : ["taskset", "-c", String(cpu), ...script];
  const child = spawnTracked(new Deno.Command(cmd!, { args, stdout: "null", stderr: "null" }));
  return async () => {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await child.status;
  };
}

const cgroups = new Set<string>();

/** Removes the CPU-quota cgroups the section made (cleanup, also on a signal). */
export async function removePaceCgroups(): Promise<void> {
  for (const dir of cgroups) await Deno.remove(dir).catch(() => {});
  cgroups.clear();
}

/** A CPU quota of `quotaUs` per 100 ms: a cgroup the CLI moves itself into, or why not. */
async function cpuQuotaCgroup(
  quotaUs: number,
): Promise<{ wrap: string[]; remove: () => Promise<void>; kind: string } | { error: string }> {
  const name = `backfill-bench-${Deno.pid}`;
  const candidates = [
    { root: "/sys/fs/cgroup", file: "cpu.max", value: `${quotaUs} 100000`, kind: "cgroup v2" },
    { root: "/sys/fs/cgroup/cpu", file: "cpu.cfs_quota_us", value: String(quotaUs), kind: "v1" },
  ];
  const reasons: string[] = [];
  for (const c of candidates) {
    const controllers = await Deno.readTextFile(`${c.root}/cgroup.controllers`).catch(() => "");
    if (c.kind === "cgroup v2" && !controllers.split(/\s+/).includes("cpu")) {
      reasons.push(`${c.root}: no cgroup v2 cpu controller`);
      continue;
    }
    const dir = `${c.root}/${name}`;
    try {
      await Deno.mkdir(dir);
      if (c.kind === "v1") await Deno.writeTextFile(`${dir}/cpu.cfs_period_us`, "100000");
      await Deno.writeTextFile(`${dir}/${c.file}`, c.value);
    } catch (error) {
      await Deno.remove(dir).catch(() => {});
      reasons.push(`${dir}: ${error instanceof Error ? error.message : error}`);
      continue;
    }
    cgroups.add(dir);
    return {
      // The wrapper moves itself into the cgroup, then becomes the CLI's command line.
      wrap: ["sh", "-c", 'echo $$ > "$0" && exec "$@"', `${dir}/cgroup.procs`],
      remove: async () => {
        await Deno.remove(dir).catch(() => {});
        cgroups.delete(dir);
      },
      kind: c.kind === "v1"
        ? `cgroup v1 cpu controller, cpu.cfs_quota_us ${quotaUs} / cpu.cfs_period_us 100000 ` +
          "(the same CFS bandwidth limit as v2 cpu.max, which this host's cgroup v2 lacks)"
        : `cgroup v2 cpu.max "${c.value}"`,
    };
  }
  return { error: reasons.join("; ") };
}

/** Spikes: `DEBUG SLEEP 0.002` every 50 ms on a client of its own, until stopped. */
function startSpikes(server: BenchServer): { stop: () => Promise<number> } {
  const client = server.client();
  let sent = 0;
  const timer = setInterval(() => {
    sent++;
    client.call("DEBUG", "SLEEP", "0.002").catch(() => {});
  }, 50);
  return {
    async stop() {
      clearInterval(timer);
      await client.quit().catch(() => {});
      return sent;
    },
  };
}

/**
 * The application's work per request when it saturates Redis: 100 INCRs in one function call, so
 * that redis-benchmark, on the other core with the CLI, keeps Redis's core busy (plain pipelined
 * GET/SET left it 55-70% busy: the client's core ran out first). A function (FCALL), so that
 * every script call in `INFO commandstats` (EVALSHA, EVAL and their _RO forms) is the backfill's.
 */
const SATURATING_LIBRARY = `#!lua name=benchapp
redis.register_function('saturate', function(keys)
  local n = 0
  for i = 1, 100 do n = n + redis.call('INCR', keys[1]) end
  return n
end)`;

/** Loads {@linkcode SATURATING_LIBRARY}, then starts redis-benchmark calling it, until stopped. */
async function startSaturatingLoad(client: Redis, port: number, cpu: number | undefined) {
  await client.call("FUNCTION", "LOAD", "REPLACE", SATURATING_LIBRARY);
  const args = [
    "-h",
    "127.0.0.1",
    "-p",
    String(port),
    "-c",
    "50",
    "-P",
    "16",
    "-r",
    "100000",
    "-n",
    "2000000000",
    "-q",
    "FCALL",
    "saturate",
    "1",
    "app:saturate:__rand_int__",
  ];
  const [cmd, ...rest] = cpu === undefined
    ? ["redis-benchmark", ...args]
    : ["taskset", "-c", String(cpu), "redis-benchmark", ...args];
  const child = spawnTracked(
    new Deno.Command(cmd!, { args: rest, stdout: "null", stderr: "null" }),
  );
  return async () => {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await child.status;
  };
}

/** Runs every row of the section on `server` (seeded and snapshotted). */
export async function measurePace(
  server: BenchServer,
  options: PaceOptions,
): Promise<Omit<PaceResult, "date" | "loadAverageBefore" | "loadAverageAfter">> {
  const { seeded, checks, log, quick } = options;
  const pairs = quick ? 1 : 2;
  const capSeconds = quick ? 6 : 15;
  const idleSeconds = quick ? 3 : 5;
  const rows: PaceRow[] = [];
  const standaloneArgs = (mode: PaceMode) => ["--execute", ...MODE_ARGS[mode]];

  /** A fresh copy of the data and a client of it, for one run. */
  const fresh = async <T>(fn: (client: Redis) => Promise<T>): Promise<T> => {
    options.signal?.throwIfAborted();
    await server.restore();
    const client = server.client();
    // The bench's own instrument (it polls every 5 ms for the first COPY) is named like the
    // backfill's connections, so the pace does not read it as an application: production has no
    // such client.
    await client.call("CLIENT", "SETNAME", "backfill");
    try {
      return await fn(client);
    } finally {
      client.disconnect();
    }
  };
  const row = async (id: string, title: string, fn: (row: PaceRow) => Promise<void>) => {
    if (options.only && !options.only.includes(id) && !options.only.includes(id.slice(0, 1))) {
      return;
    }
    log(`pace ${id}: ${title}`);
    const load = await Deno.readTextFile("/proc/loadavg").catch(() => "NaN");
    const r: PaceRow = {
      id,
      title,
      runs: [],
      figures: [],
      notes: [],
      loadAverage: Number(load.split(" ")[0]),
    };
    try {
      await fn(r);
    } catch (error) {
      if (options.signal?.aborted) throw error;
      const message = error instanceof Error ? error.message : String(error);
      log(`pace ${id} failed: ${message}`);
      checks.push({ name: `pace ${id} ran`, ok: false, detail: message });
      r.notes.push(`failed: ${message.split("\n")[0]}`);
    }
    rows.push(r);
  };
  const prober = (port: number) =>
    startOpenLoop(port, { cpu: options.redisCpu, intervalMs: 1, connections: 4 });

  await row("1", "healthy standalone", async (r) => {
    // Not counted: the section's first run ran slower than every later one, whichever its mode
    // (two whole runs of 16-17k keys/s against 28-44k), which would be charged to one side.
    await fresh((watch) =>
      paceRun(
        { url: server.url, args: standaloneArgs("raw"), mode: "raw", capSeconds: 3, watch },
        [],
        "row 1 warm-up",
      )
    );
    for (const mode of alternate(pairs)) {
      const run = await fresh((watch) =>
        paceRun(
          { url: server.url, args: standaloneArgs(mode), mode, capSeconds, watch },
          checks,
          `row 1 ${mode}`,
        )
      );
      checkComplete(run, seeded, checks, `row 1 ${mode}`);
      r.runs.push(run);
    }
    r.figures.push(
      ratioFigure("default / raw keys/s", rateOf(r.runs, "default"), rateOf(r.runs, "raw"), 0.8),
    );
    const first = (mode: PaceMode) =>
      r.runs.filter((x) => x.mode === mode).map((x) => x.firstCopyMs);
    const worst = Math.max(...first("default").map((v) => v ?? NaN));
    r.figures.push({
      name: "process start → first COPY, default (worst run)",
      value: Number.isNaN(worst) ? "n/a" : `${Math.round(worst)} ms`,
      goal: "≤ 1000 ms",
      pass: Number.isNaN(worst) ? null : worst <= 1000,
    });
    r.figures.push({
      name: "process start → first COPY, raw (reference)",
      value: first("raw").map((v) => v === undefined ? "n/a" : `${Math.round(v)} ms`).join(" / "),
      goal: "-",
      pass: null,
    });
  });

  await row("2", "3-master cluster, the same data", async (r) => {
    await server.restore();
    const nodes = await startBenchCluster(3, options.redisCpu);
    try {
      const copied = await copyData(server, nodes);
      if (copied !== seeded.keys) {
        checks.push({
          name: "pace row 2: cluster holds the seeded keys",
          ok: false,
          detail: `${copied} of ${seeded.keys}`,
        });
      }
      await Promise.all(nodes.map(async (n) => {
        const c = n.client();
        try {
          await c.save();
        } finally {
          c.disconnect();
        }
        await Deno.copyFile(`${n.dir}/dump.rdb`, `${n.dir}/seed.rdb`);
      }));
      for (const mode of alternate(pairs)) {
        await restoreCluster(nodes, options.redisCpu);
        const run = await paceRun(
          { url: nodes[0]!.url, args: standaloneArgs(mode), mode, capSeconds },
          checks,
          `row 2 ${mode}`,
        );
        checkComplete(run, seeded, checks, `row 2 ${mode}`);
        r.runs.push(run);
      }
    } finally {
      await stopAllClusterNodes();
    }
    r.figures.push(
      ratioFigure("default / raw keys/s", rateOf(r.runs, "default"), rateOf(r.runs, "raw"), 0.7),
    );
  });

  /** An idle window of the prober once the rehashing settled. */
  const idleWindow = (client: Redis) => async () => {
    await waitRehashSettled(client);
    const p = prober(server.port);
    await sleep(300 + idleSeconds * 1000);
    return await p.stop();
  };
  /** One run under the prober (started after the rehashing settled). */
  const probedRun = async (client: Redis, setup: Omit<RunSetup, "url">, label: string) => {
    await waitRehashSettled(client);
    const p = prober(server.port);
    let stats: OpenLoopStats | undefined;
    try {
      await sleep(300);
      const run = await paceRun({ url: server.url, ...setup }, checks, label);
      stats = await p.stop();
      return { ...run, openLoop: stats };
    } finally {
      if (!stats) await p.stop().catch(() => {});
    }
  };

  await row("3", "open-loop prober on Redis's core", async (r) => {
    r.idle = [];
    /** Per default run: the backfill's calls as Redis counted them. */
    const calls: { calls: number; usec: number; seconds: number }[] = [];
    for (let i = 0; i < pairs; i++) {
      r.idle.push(await fresh((c) => idleWindow(c)()));
      for (const mode of ["default", "raw"] as const) {
        const run = await fresh(async (c) => {
          await resetStats(c);
          const run = await probedRun(
            c,
            { args: standaloneArgs(mode), mode, capSeconds },
            `row 3 ${mode}`,
          );
          if (mode === "default") {
            // The backfill's commands: its script calls and SCANs (the prober sends PINGs).
            const stats = await commandStats(c);
            const mine = ["evalsha", "eval", "scan"].map((name) => stats[name]);
            calls.push({
              calls: mine.reduce((n, s) => n + (s?.calls ?? 0), 0),
              usec: mine.reduce((n, s) => n + (s?.usec ?? 0), 0),
              seconds: run.seconds,
            });
          }
          return run;
        });
        checkComplete(run, seeded, checks, `row 3 ${mode}`);
        r.runs.push(run);
      }
    }
    // Why the rate is what it is: with one call in flight, Redis waits a round trip and the
    // client's turn-around after each call.
    const rtt = await pingRtt(server.port);
    for (const c of calls) {
      r.notes.push(
        `default: ${c.calls} calls of ${(c.usec / c.calls).toFixed(0)} µs, one every ` +
          `${(c.seconds * 1000 / c.calls).toFixed(3)} ms: Redis busy with the backfill ` +
          `${(100 * c.usec / (c.seconds * 1e6)).toFixed(0)}% of the run`,
      );
    }
    r.notes.push(`loopback round trip (sequential PINGs, median): ${rtt.toFixed(3)} ms`);
    const idle = mean(r.idle.map((s) => s.p99Ms));
    const added = (mode: PaceMode) =>
      mean(r.runs.filter((x) => x.mode === mode).map((x) => x.openLoop!.p99Ms)) - idle;
    r.figures.push({
      name: "app p99 added by the default (vs idle)",
      value: `${ms(added("default"))} (idle p99 ${idle.toFixed(3)} ms)`,
      goal: "≤ +0.5 ms",
      pass: Number.isNaN(added("default")) ? null : added("default") <= 0.5,
    });
    r.figures.push(
      ratioFigure("default / raw keys/s", rateOf(r.runs, "default"), rateOf(r.runs, "raw"), 0.5),
    );
    r.figures.push({
      name: "app p99 added by raw (reference)",
      value: ms(added("raw")),
      goal: "-",
      pass: null,
    });
  });

  await row("4a", "busy loop on the backfill's core", async (r) => {
    for (const mode of alternate(pairs)) {
      const run = await fresh(async () => {
        const stop = startBusyLoop(options.clientCpu);
        try {
          return await paceRun(
            { url: server.url, args: standaloneArgs(mode), mode, capSeconds },
            checks,
            `row 4a ${mode}`,
          );
        } finally {
          await stop();
        }
      });
      checkComplete(run, seeded, checks, `row 4a ${mode}`);
      r.runs.push(run);
    }
    if (options.clientCpu === undefined) r.notes.push("not pinned: the busy loop runs anywhere");
    r.figures.push(
      ratioFigure("default / raw keys/s", rateOf(r.runs, "default"), rateOf(r.runs, "raw"), 0.5),
    );
  });

  await row("4b", "CPU quota of 250m (CFS bandwidth)", async (r) => {
    const quota = await cpuQuotaCgroup(25_000);
    if ("error" in quota) {
      r.notes.push(`no CPU quota possible here: ${quota.error}`);
      r.figures.push({ name: "default / raw keys/s", value: "n/a", goal: "≥ 0.5", pass: null });
      return;
    }
    r.notes.push(`quota: ${quota.kind}; the CLI (and GNU time around it) in the cgroup`);
    try {
      for (const mode of alternate(pairs)) {
        const run = await fresh(() =>
          paceRun(
            { url: server.url, args: standaloneArgs(mode), mode, capSeconds, wrap: quota.wrap },
            checks,
            `row 4b ${mode}`,
          )
        );
        checkComplete(run, seeded, checks, `row 4b ${mode}`);
        r.runs.push(run);
      }
    } finally {
      await quota.remove();
    }
    r.figures.push(
      ratioFigure("default / raw keys/s", rateOf(r.runs, "default"), rateOf(r.runs, "raw"), 0.5),
    );
  });

  await row("5", "app latency spikes not caused by the backfill", async (r) => {
    for (const mode of alternate(pairs)) {
      const run = await fresh(async (watch) => {
        let spikeStats: { keys: number; ms: number; sent: number } | undefined;
        const run = await paceRun(
          {
            url: server.url,
            args: standaloneArgs(mode),
            mode,
            capSeconds,
            watch,
            during: async (live) => {
              await sleep(500);
              if (!live.running()) return () => Promise.resolve();
              const c = server.client();
              const keys0 = await c.dbsize(), t0 = performance.now();
              const spikes = startSpikes(server);
              return async () => {
                const sent = await spikes.stop();
                spikeStats = { keys: await c.dbsize() - keys0, ms: performance.now() - t0, sent };
                c.disconnect();
              };
            },
          },
          checks,
          `row 5 ${mode}`,
        );
        return {
          ...run,
          spikeKeysPerSecond: spikeStats ? spikeStats.keys * 1000 / spikeStats.ms : undefined,
          spikes: spikeStats?.sent,
        };
      });
      checkComplete(run, seeded, checks, `row 5 ${mode}`);
      r.runs.push(run);
    }
    const spikeRate = (mode: PaceMode) =>
      mean(r.runs.filter((x) => x.mode === mode).map((x) => x.spikeKeysPerSecond ?? NaN));
    r.figures.push(ratioFigure(
      "default / raw new keys/s while the spikes ran",
      spikeRate("default"),
      spikeRate("raw"),
      0.3,
    ));
    const lines = r.runs.filter((x) => x.mode === "default").flatMap((x) => x.logLines);
    r.figures.push({
      name: "default's log lines on why it slowed",
      value: `${lines.length} line(s)`,
      goal: "says why, if it slowed",
      pass: null,
    });
  });

  await row("6", "set-rps, pause, resume on a healthy run", async (r) => {
    const validShare = seeded.valid / seeded.keys;
    const n = 5000;
    const plan: { command: string[]; rps: number; observeMs: number }[] = [
      { command: ["set-rps", String(n)], rps: n, observeMs: quick ? 4000 : 5000 },
      { command: ["set-rps", "800"], rps: 800, observeMs: quick ? 4000 : 5000 },
      { command: ["pause"], rps: 0, observeMs: 2500 },
      { command: ["resume"], rps: 800, observeMs: quick ? 4000 : 5000 },
    ];
    r.phases = [];
    const run = await fresh(async (watch) => {
      const samples: [number, number][] = [];
      const marks: number[] = [];
      const out = await paceRun(
        {
          url: server.url,
          args: standaloneArgs("default"),
          mode: "default",
          capSeconds: 120,
          watch,
          during: async (live) => {
            const c = server.client();
            let sampling = true;
            const sampler = (async () => {
              while (sampling) {
                // Redis counted somewhere between the send and the reply: the midpoint.
                const sent = performance.now();
                const keys = await c.dbsize();
                samples.push([(sent + performance.now()) / 2, keys]);
                await sleep(250 - (performance.now() % 250));
              }
            })();
            await sleep(1000);
            for (const phase of plan) {
              const control = await runCli([
                ...phase.command,
                "--redis-url",
                server.url,
              ]);
              if (control.code !== 0) {
                throw new Error(`${phase.command.join(" ")}: exit ${control.code}`);
              }
              marks.push(performance.now());
              await sleep(phase.observeMs);
            }
            marks.push(performance.now());
            live.stop();
            return async () => {
              sampling = false;
              await sampler;
              c.disconnect();
            };
          },
        },
        checks,
        "row 6",
      );
      return { out, samples, marks };
    });
    r.runs.push(run.out);
    const t0 = run.marks[0] ?? 0;
    r.samples = run.samples.map(([t, n]) => [Math.round(t - t0), n]);
    plan.forEach((phase, i) => {
      const from = run.marks[i], to = run.marks[i + 1];
      if (from === undefined || to === undefined) return;
      const target = phase.rps * validShare;
      const settled = settleTime(run.samples, from, to, target);
      r.phases!.push({
        command: phase.command.join(" "),
        targetKeysPerSecond: target,
        settleMs: settled.settleMs,
        endKeysPerSecond: settled.endRate,
        observedMs: to - from,
      });
    });
    if (!run.out.capped) {
      r.notes.push("the run finished before the plan did: later phases are not measured");
    }
    for (const p of r.phases) {
      const goal = p.targetKeysPerSecond === 0 ? 1000 : 3000;
      r.figures.push({
        name: p.targetKeysPerSecond === 0
          ? `${p.command}: time to no new keys`
          : `${p.command}: settle within ±10% of ${k(p.targetKeysPerSecond)} new keys/s`,
        value:
          `${p.settleMs === undefined ? "not settled" : `${(p.settleMs / 1000).toFixed(2)} s`}` +
          ` (last 1 s: ${k(p.endKeysPerSecond)}/s)`,
        goal: `≤ ${goal / 1000} s`,
        pass: p.settleMs === undefined ? false : p.settleMs <= goal,
      });
    }
  });

  await row("7", "store saturated by the application", async (r) => {
    for (const mode of ["default", "raw"] as const) {
      const run = await fresh(async (client) => {
        const stop = await startSaturatingLoad(client, server.port, options.clientCpu);
        try {
          await sleep(1500);
          const before = await busyShare(client, 1000);
          await resetStats(client);
          const cpu0 = await mainThreadCpu(client), t0 = performance.now();
          const run = await paceRun(
            { url: server.url, args: standaloneArgs(mode), mode, capSeconds: quick ? 5 : 10 },
            checks,
            `row 7 ${mode}`,
          );
          const cpu = await mainThreadCpu(client) - cpu0;
          const wall = (performance.now() - t0) / 1000;
          const stats = await commandStats(client);
          const scriptUsec = ["evalsha", "evalsha_ro", "eval", "eval_ro"]
            .reduce((sum, name) => sum + (stats[name]?.usec ?? 0), 0);
          return {
            ...run,
            redisBusyBefore: before,
            redisBusyDuring: cpu / wall,
            backfillShare: scriptUsec / 1e6 / cpu,
          };
        } finally {
          await stop();
        }
      });
      r.runs.push(run);
    }
    const d = r.runs.find((x) => x.mode === "default");
    const raw = r.runs.find((x) => x.mode === "raw");
    const pct = (v: number | undefined) => v === undefined ? "n/a" : `${(100 * v).toFixed(1)}%`;
    r.figures.push({
      name: "Redis busy before the backfill: on CPU or waiting for it (INFO cpu: on CPU)",
      value: r.runs.map((x) => `${pct(x.redisBusyBefore?.demand)} (${pct(x.redisBusyBefore?.cpu)})`)
        .join(" / "),
      goal: "≥ 90% (precondition)",
      pass: r.runs.every((x) => (x.redisBusyBefore?.demand ?? 0) >= 0.9),
    });
    r.figures.push({
      name: "backfill's share of Redis time, default",
      value: `${pct(d?.backfillShare)} (${k(d?.keysPerSecond)} keys/s)`,
      goal: "≤ 10%",
      pass: d?.backfillShare === undefined ? null : d.backfillShare <= 0.1,
    });
    r.figures.push({
      name: "backfill's share of Redis time, raw (reference)",
      value: `${pct(raw?.backfillShare)} (${k(raw?.keysPerSecond)} keys/s)`,
      goal: "-",
      pass: null,
    });
    r.figures.push({
      name: "default's log lines on yielding",
      value: `${d?.logLines.length ?? 0} line(s)`,
      goal: "says it yields",
      pass: null,
    });
  });

  await row("8", "verify --full with its defaults", async (r) => {
    r.idle = [];
    for (let i = 0; i < pairs; i++) {
      const [idle, run] = await fresh(async (client) => {
        await runCeiling(client);
        const idle = await idleWindow(client)();
        const run = await probedRun(
          client,
          // A cap only against a run that never ends: verify --full prints no summary when stopped.
          { args: ["verify", "--full"], mode: "verify --full", capSeconds: quick ? 30 : 60 },
          "row 8",
        );
        return [idle, run] as const;
      });
      r.idle.push(idle);
      r.runs.push(run);
    }
    const idle = mean(r.idle.map((s) => s.p99Ms));
    const added = mean(r.runs.map((x) => x.openLoop!.p99Ms)) - idle;
    r.figures.push({
      name: "app p99 added by verify --full (vs idle)",
      value: `${ms(added)} (idle p99 ${idle.toFixed(3)} ms; ${
        k(rateOf(r.runs, "verify --full"))
      } keys/s)`,
      goal: "≤ +0.5 ms",
      pass: Number.isNaN(added) ? null : added <= 0.5,
    });
  });

  return { keys: seeded.keys, pairs, capSeconds, idleSeconds, rows };
}

/** Restarts every node from its snapshot, pins it again and waits for `cluster_state:ok`. */
async function restoreCluster(nodes: readonly RedisServer[], cpu: number | undefined) {
  for (const n of nodes) {
    await n.kill();
    await Deno.copyFile(`${n.dir}/seed.rdb`, `${n.dir}/dump.rdb`);
    await n.start();
    if (cpu !== undefined) {
      const c = n.client();
      const pid = (await c.info("server")).match(/^process_id:(\d+)/m)?.[1];
      c.disconnect();
      await pinProcess(Number(pid), cpu);
    }
  }
  const deadline = Date.now() + 30_000;
  for (;;) {
    const ok = await Promise.all(nodes.map(async (n) => {
      const c = n.client();
      try {
        return String(await c.call("CLUSTER", "INFO")).includes("cluster_state:ok");
      } finally {
        c.disconnect();
      }
    }));
    if (ok.every(Boolean)) return;
    if (Date.now() > deadline) throw new Error("cluster not ok within 30 s of its restart");
    await sleep(100);
  }
}

/** The section's lines for the printed report. */
export function renderPace(result: PaceResult): string[] {
  const lines = [
    `pace: shipped default (--rps 0) vs raw (--rps 0 --max-latency 0), ${k(result.keys)} jobs, ` +
    `alternated ${result.pairs} pair(s) per row on fresh data, runs capped at ` +
    `${result.capSeconds} s; load average ${result.loadAverageBefore} before, ` +
    `${result.loadAverageAfter} after`,
  ];
  const table: string[][] = [["row", "figure", "measured", "target", ""]];
  for (const row of result.rows) {
    for (const f of row.figures) {
      table.push([
        `${row.id} ${row.title}`,
        f.name,
        f.value,
        f.goal,
        f.pass === null ? "" : f.pass ? "✓" : "✗",
      ]);
    }
    if (row.figures.length === 0) table.push([`${row.id} ${row.title}`, "-", "n/a", "", ""]);
  }
  const widths = table[0]!.map((_, c) => Math.max(...table.map((r) => [...r[c]!].length)));
  lines.push(
    ...table.map((r) =>
      r.map((cell, c) => cell + " ".repeat(widths[c]! - [...cell].length)).join("  ").trimEnd()
    ),
  );
  for (const row of result.rows) {
    const runs = row.runs.map((x) =>
      `${x.mode} ${k(x.keysPerSecond)}${x.capped ? " (capped)" : ""}` +
      (x.openLoop ? ` p99 ${x.openLoop.p99Ms.toFixed(3)}` : "") +
      (x.spikeKeysPerSecond !== undefined ? ` spikes ${k(x.spikeKeysPerSecond)}/s` : "")
    );
    const idle = row.idle?.length
      ? `; idle p99 ${row.idle.map((s) => s.p99Ms.toFixed(3)).join(" / ")} ms`
      : "";
    lines.push(`  row ${row.id} (load average ${row.loadAverage.toFixed(2)} at its start${idle})`);
    if (runs.length) lines.push(`    runs (keys/s): ${runs.join("; ")}`);
    for (const note of row.notes) lines.push(`    note: ${note}`);
    for (const x of row.runs.filter((x) => x.mode !== "raw")) {
      for (const line of x.logLines.slice(0, 6)) {
        lines.push(`    ${x.mode} log: ${line}`);
      }
      if (x.logLines.length > 6) {
        lines.push(`    ${x.mode} log: … ${x.logLines.length - 6} more line(s)`);
      }
    }
  }
  return lines;
}
