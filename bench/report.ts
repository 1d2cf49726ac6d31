/**
 * The bench's result: targets, the printed table, and the JSON file under `bench/results/`.
 * Output goes through {@linkcode print} / {@linkcode log} (stdout / stderr) rather than `console`.
 *
 * @module
 */
import type { SeedStats } from "./seed.ts";
import type { NaiveResult } from "./naive.ts";
import type { CeilingResult } from "./ceiling.ts";
import type { ConcurrentLatency, LimiterResult } from "./limiter_accuracy.ts";
import type { BackfillResult, Baseline, Check, VerifyResult } from "./backfill_run.ts";
import type { ProfileResult } from "./profile.ts";

const encoder = new TextEncoder();

function writeAll(file: { writeSync(p: Uint8Array): number }, text: string): void {
  const bytes = encoder.encode(text);
  for (let done = 0; done < bytes.length;) done += file.writeSync(bytes.subarray(done));
}

/** Writes a line to stdout. */
export function print(line = ""): void {
  writeAll(Deno.stdout, line + "\n");
}

/** Writes a progress line to stderr. */
export function log(line: string): void {
  writeAll(Deno.stderr, `[bench] ${line}\n`);
}

/** One target of the classic sections with the measured value. */
export interface Target {
  name: string;
  goal: string;
  value: string;
  /** `null` when the part was not measured. */
  pass: boolean | null;
}

/** Everything one bench run measured. */
export interface BenchResult {
  date: string;
  machine: Record<string, string | number>;
  options: {
    keys: number;
    naiveKeys: number;
    repeat: number;
    quick: boolean;
    pin: boolean;
    profile: boolean;
    /** redis-server on core 0, the bench and every client on core 1. */
    pinned: boolean;
    limiterSeconds: number;
  };
  seed: SeedStats;
  /** The median run of each (by keys/s); every run is in `runs`. */
  naive: NaiveResult;
  backfill?: BackfillResult;
  ceiling: CeilingResult;
  verify?: VerifyResult;
  runs: { naive: NaiveResult[]; backfill: BackfillResult[]; ceiling: CeilingResult[] };
  ratios: { backfillOverNaive?: number; backfillOverCeiling?: number; ceilingOverNaive: number };
  /** `main.ts --version`: what process start-up alone costs. */
  baseline?: Baseline;
  limiter: LimiterResult[];
  latency?: ConcurrentLatency;
  profile?: ProfileResult;
  targets: Target[];
  checks: Check[];
  notes: string[];
}

/** The 1/5/15-minute load averages (other work on the machine skews every number). */
export async function loadAverage(): Promise<string> {
  const text = await Deno.readTextFile("/proc/loadavg").catch(() => "");
  return text.split(" ").slice(0, 3).join(" ");
}

/** Facts about the machine the numbers come from. */
export async function machineInfo(redisVersion: string): Promise<Record<string, string | number>> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const meminfo = await Deno.readTextFile("/proc/meminfo").catch(() => "");
  return {
    cpu: cpuinfo.match(/^model name\s*:\s*(.*)$/m)?.[1]?.trim() ?? "unknown",
    cores: navigator.hardwareConcurrency,
    memGb: Math.round(Number(meminfo.match(/^MemTotal:\s+(\d+)/m)?.[1] ?? 0) / 1024 / 1024),
    kernel: Deno.osRelease(),
    deno: Deno.version.deno,
    redis: redisVersion,
  };
}

const num = (v: number | undefined, digits: number) =>
  v === undefined || Number.isNaN(v) ? "n/a" : v.toFixed(digits);

/** Compares the measurements with the classic sections' targets. */
export function targets(result: Omit<BenchResult, "targets">): Target[] {
  const out: Target[] = [];
  const b = result.backfill;
  const runs = result.runs.backfill;
  out.push({
    name: "backfill / ceiling",
    goal: ">= 0.60",
    value: num(result.ratios.backfillOverCeiling, 2),
    pass: b ? result.ratios.backfillOverCeiling! >= 0.6 : null,
  });
  out.push({
    name: "backfill / naive",
    goal: ">= 40",
    value: num(result.ratios.backfillOverNaive, 1),
    pass: b ? result.ratios.backfillOverNaive! >= 40 : null,
  });
  out.push({
    name: "Redis CPU per migrated key",
    goal: "<= 8 us",
    value: b ? `${num(b.redisCpuMicrosPerKey, 2)} us` : "n/a",
    pass: b ? b.redisCpuMicrosPerKey <= 8 : null,
  });
  const rss = Math.max(...runs.map((r) => r.peakRssMb));
  out.push({
    name: "peak RSS of backfill (max of runs)",
    goal: "<= 150 MB",
    value: b ? `${num(rss, 1)} MB` : "n/a",
    pass: b ? rss <= 150 : null,
  });
  const slow = runs.flatMap((r) => r.slowCalls.filter((c) => !c.inScript))
    .sort((x, y) => y.micros - x.micros);
  out.push({
    name: "Redis calls > 2 ms (top-level, all rps 0 runs)",
    goal: "0",
    value: b
      ? `${slow.length}${slow[0] ? ` (max ${(slow[0].micros / 1000).toFixed(1)} ms)` : ""}`
      : "n/a",
    pass: b ? slow.length === 0 : null,
  });
  for (const l of result.limiter) {
    out.push({
      name: `limiter --rps ${l.rps} (achieved / requested)`,
      goal: "1 +/- 0.03",
      value: `${num(l.ratio, 3)} (${num(l.achievedRps, 0)}/s over ${num(l.windowSeconds, 1)} s)`,
      pass: Math.abs(l.ratio - 1) <= 0.03,
    });
  }
  const lat = result.latency;
  if (lat) {
    out.push({
      name: `PING p99 during --rps ${lat.rps} - idle`,
      goal: "<= 1 ms",
      value: `${num(lat.p99DeltaMs, 3)} ms`,
      pass: lat.p99DeltaMs <= 1,
    });
  }
  return out;
}

const int = (v: number) => Math.round(v).toLocaleString("en-US");

function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => [...(r[c] ?? "")].length)));
  return rows.map((r) =>
    r.map((cell, c) => cell + " ".repeat(widths[c]! - [...cell].length)).join("  ").trimEnd()
  );
}

function backfillDetails(result: BenchResult, backfill: BackfillResult): string[] {
  const { ceiling, runs } = result;
  const lines = [
    `backfill (median run): scanned ${backfill.summary.scanned}, migrated ` +
    `${backfill.summary.migrated}, skipped_invalid ${backfill.summary.skipped_invalid}, ` +
    `errors ${backfill.summary.errors}; Redis CPU ${backfill.redisCpuSeconds.toFixed(2)} s ` +
    `(${backfill.redisCpuMicrosPerKey.toFixed(2)} us/key; the ceiling used ` +
    `${ceiling.redisCpuMicrosPerKey.toFixed(2)} us/key), backfill process CPU ` +
    `${backfill.cliCpuSeconds.toFixed(2)} s, peak RSS ${backfill.peakRssMb.toFixed(1)} MB`,
  ];
  const ceilingCpu = ceiling.redisCpuMicrosPerKey * ceiling.migrated / 1e6;
  lines.push(
    `  Redis busy (CPU / wall): backfill ${
      (100 * backfill.redisCpuSeconds / backfill.wallSeconds).toFixed(0)
    }% of the whole process, ${
      (100 * backfill.redisCpuSeconds / Number(backfill.summary.duration_seconds)).toFixed(0)
    }% of the in-process run; ceiling ${(100 * ceilingCpu / ceiling.seconds).toFixed(0)}%`,
  );
  if (result.baseline) {
    lines.push(
      `  start-up baseline (main.ts --version): ${result.baseline.wallMs.toFixed(0)} ms, ` +
        `peak RSS ${result.baseline.rssMb.toFixed(1)} MB`,
    );
  }
  const commands = Object.entries(backfill.commands).slice(0, 4).map(([name, c]) =>
    `${name} ${int(c.calls)} calls, mean ${int(c.usecPerCall)} us` +
    (c.p99 === undefined ? "" : `, p99 ${int(c.p99)} us, p99.9 ${int(c.p999 ?? NaN)} us`)
  );
  lines.push(`  Redis commands (median run, incl. those inside scripts): ${commands.join("; ")}`);
  if (runs.backfill.length > 1) {
    const quiet = runs.backfill.reduce((a, b) => (b.otherCpuSeconds < a.otherCpuSeconds ? b : a));
    lines.push(
      `  quietest run (other processes used ${quiet.otherCpuSeconds.toFixed(2)} CPU-s): ` +
        `${int(quiet.keysPerSecond)} keys/s = ${
          (quiet.keysPerSecond / ceiling.keysPerSecond)
            .toFixed(2)
        } x ceiling, ${
          (quiet.keysPerSecond / result.naive.keysPerSecond)
            .toFixed(1)
        } x naive (medians); informational, the targets use the median run`,
    );
  }
  runs.backfill.forEach((run, i) => {
    const top = run.slowCalls.filter((c) => !c.inScript);
    const inner = run.slowCalls.length - top.length;
    lines.push(
      `  run ${i + 1}: ${int(run.keysPerSecond)} keys/s, RSS ${run.peakRssMb.toFixed(1)} MB, ` +
        `${top.length} top-level call(s) > 2 ms, ${inner} inside scripts; other processes used ` +
        `${run.otherCpuSeconds.toFixed(2)} CPU-s in ${run.wallSeconds.toFixed(2)} s ` +
        `(steal ${run.stealSeconds.toFixed(2)} s)`,
    );
    for (const call of top.slice(0, 3)) {
      lines.push(`    ${(call.micros / 1000).toFixed(2)} ms  ${call.command}`);
    }
  });
  return lines;
}

/** The human-readable report (also what docs/benchmarks.md quotes). */
export function render(result: BenchResult): string[] {
  const { seed, naive, ceiling, backfill, verify, machine, runs } = result;
  const lines = [
    `backfill bench, ${result.date}`,
    `machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memGb} GB; ` +
    `Linux ${machine.kernel}; Deno ${machine.deno}; Redis ${machine.redis}; ` +
    `load average before ${machine.loadAverageBefore}, after ${machine.loadAverageAfter}; ` +
    (result.options.pinned
      ? "redis-server pinned to core 0, bench + CLI to core 1, PING client on core 0"
      : "not pinned"),
    `data: N=${int(seed.keys)} old keys (${int(seed.valid)} valid, ${int(seed.invalid)} invalid, ` +
    `${int(seed.withTtl)} with TTL, ~${seed.meanHashBytes} B/hash in 8 fields), ` +
    `each measurement on a fresh copy (server restarted from the seeded RDB); ` +
    `keys/s = old keys processed per second, median of ${result.options.repeat} run(s)`,
    "",
  ];
  const all = (xs: { keysPerSecond: number }[]) =>
    xs.length > 1 ? `; runs ${xs.map((x) => int(x.keysPerSecond)).join(" / ")}` : "";
  const rows = [["measurement", "keys/s", "time", "notes"]];
  rows.push([
    "naive (awaited HGET+EXISTS+COPY)",
    int(naive.keysPerSecond),
    `${naive.seconds.toFixed(2)} s`,
    `${int(naive.keys)}-key subset${all(runs.naive)}`,
  ]);
  if (backfill) {
    rows.push([
      "backfill --execute --rps 0",
      int(backfill.keysPerSecond),
      `${backfill.wallSeconds.toFixed(2)} s`,
      `whole process (in-process ${int(backfill.inProcessKeysPerSecond)})${all(runs.backfill)}`,
    ]);
  }
  rows.push([
    "ceiling (server-side Lua)",
    int(ceiling.keysPerSecond),
    `${ceiling.seconds.toFixed(2)} s`,
    `no network${all(runs.ceiling)}`,
  ]);
  if (verify) {
    rows.push([
      "verify --sample 1000",
      "",
      `${verify.medianMs.toFixed(0)} ms`,
      `whole process, median of ${verify.wallMs.length} (in-process ${
        verify.inProcessMs.toFixed(0)
      } ms); parity ${verify.summary.parity}`,
    ]);
  }
  lines.push(...table(rows), "");
  lines.push(
    `ceiling / naive = ${result.ratios.ceilingOverNaive.toFixed(1)} ` +
      `(the most any client could reach over the naive loop on this machine)`,
  );
  lines.push(
    `noise gauge: during the ceiling runs Redis stalled ${
      runs.ceiling.map((c) => c.stalls).join(" / ")
    } time(s) for > 2 ms inside the script (max ${
      Math.max(...runs.ceiling.map((c) => c.maxStallMs)).toFixed(1)
    } ms) in ${runs.ceiling.map((c) => c.seconds.toFixed(1)).join(" / ")} s of busy time`,
  );
  if (backfill) lines.push(...backfillDetails(result, backfill));
  for (const l of result.limiter) {
    lines.push(
      `limiter --rps ${l.rps}: ${num(l.achievedRps, 0)} jobs/s steady state ` +
        `(ratio ${num(l.ratio, 3)}); informational: busiest 1 s of writes ` +
        `${l.peakWindowRatio.toFixed(3)}x, whole run ${l.wholeRunRatio.toFixed(3)}x ` +
        `(incl. the first-second burst)`,
    );
  }
  if (result.latency) {
    const { idle, during, rps } = result.latency;
    const f = (s: typeof idle) =>
      `p50 ${s.p50Ms.toFixed(3)} ms, p99 ${s.p99Ms.toFixed(3)} ms, ` +
      `max ${s.maxMs.toFixed(2)} ms (${s.samples} PINGs)`;
    lines.push(`PING idle: ${f(idle)}`, `PING during --rps ${rps}: ${f(during)}`);
  }
  if (result.profile) {
    lines.push(`profile (${result.profile.dir}):`);
    for (const l of result.profile.v8Summary) lines.push(`  backfill V8 ticks: ${l}`);
    for (const l of result.profile.redisTop.slice(0, 8)) lines.push(`  redis-server perf: ${l}`);
  }
  lines.push("");
  const targetRows = [["target", "goal", "measured", "result"]];
  for (const t of result.targets) {
    targetRows.push([t.name, t.goal, t.value, t.pass === null ? "n/a" : t.pass ? "pass" : "MISS"]);
  }
  lines.push(...table(targetRows));
  const failed = result.checks.filter((c) => !c.ok);
  lines.push("", `checks: ${result.checks.length - failed.length}/${result.checks.length} ok`);
  for (const c of failed) lines.push(`  FAILED ${c.name}: ${c.detail}`);
  for (const note of result.notes) lines.push(`note: ${note}`);
  return lines;
}

/**
 * Writes the result as `bench/results/<timestamp>.json` and `bench/results/latest.json`. A run of
 * only some sections (`sections` given) replaces just those sections of `latest.json`, each with
 * its date in `sectionDates`, so the last whole run's figures stay next to them.
 */
export async function writeResult(
  result: { date: string },
  sections?: readonly string[],
): Promise<string> {
  const dir = decodeURIComponent(new URL("./results/", import.meta.url).pathname);
  await Deno.mkdir(dir, { recursive: true });
  const name = `${result.date.replaceAll(":", "-").replace(/\.\d+Z$/, "Z")}.json`;
  const text = JSON.stringify(result, null, 2) + "\n";
  await Deno.writeTextFile(dir + name, text);
  let latest: Record<string, unknown> = result;
  if (sections) {
    const previous = await Deno.readTextFile(dir + "latest.json")
      .then((t) => JSON.parse(t) as Record<string, unknown>, () => undefined);
    if (previous) {
      const own = result as unknown as Record<string, unknown>;
      const dates = { ...(previous.sectionDates as Record<string, string> | undefined) };
      latest = { ...previous };
      for (const section of sections) {
        latest[section] = own[section];
        dates[section] = result.date;
      }
      latest.sectionDates = dates;
    }
  }
  await Deno.writeTextFile(dir + "latest.json", JSON.stringify(latest, null, 2) + "\n");
  return dir + name;
}
