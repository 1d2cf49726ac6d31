/**
 * The "impact" section: what a backfill does to the application. The application's load
 * is the real `redis-benchmark` (GET/SET, 20 connections); its p99 comes from the open-loop client
 * (timed from the scheduled send, so stalls count); both are pinned to the client core.
 *
 * Each row runs on a fresh copy of the seeded data: restore, start the load, let Redis finish its
 * own rehashing (`DEBUG HTSTATS 0`), reset the statistics, then measure for the length of the
 * backfill run (or `seconds` for the idle row). Rows: idle; `--rps 5000`; `--rps 0 --max-latency
 * 0.5` (adaptive; "not available" while the CLI rejects the flag); `--rps 0`; and, for the
 * adaptive throughput target, `--rps 0` and the adaptive run again without the load.
 *
 * @module
 */
import { type BenchServer, resetStats, type ScriptCalls, scriptCalls } from "./server.ts";
import { waitRehashSettled } from "./server.ts";
import { type CliRun, startCli } from "./cli.ts";
import { type OpenLoopStats, startOpenLoop } from "./open_loop.ts";
import { type LoadThroughput, startAppLoad } from "./app_load.ts";
import { log } from "./report.ts";

/** One measured row. */
export interface ImpactRow {
  label: string;
  /** CLI arguments beyond `--execute --json --redis-url` (none for idle). */
  args?: string[];
  appLoad: boolean;
  /** False when the CLI rejected the arguments (a feature not built yet). */
  available: boolean;
  note?: string;
  openLoop?: OpenLoopStats;
  app?: LoadThroughput;
  backfill?: { keysPerSecond: number; scanned: number; exitCode: number; seconds: number };
  scripts?: ScriptCalls;
  settleMs?: number;
}

/** The impact section's targets, as differences and ratios within this run. */
export interface ImpactTarget {
  name: string;
  goal: string;
  value: string;
  pass: boolean | null;
}

/** The whole section. */
export interface ImpactResult {
  seconds: number;
  rows: ImpactRow[];
  targets: ImpactTarget[];
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function parseSummary(run: CliRun): Record<string, unknown> | undefined {
  try {
    return JSON.parse(run.stdout) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

async function measureRow(
  server: BenchServer,
  row: ImpactRow,
  options: { seconds: number; keys: number; clientCpu?: number },
): Promise<ImpactRow> {
  await server.restore();
  const client = server.client();
  const load = row.appLoad ? startAppLoad(server.port, options.clientCpu) : undefined;
  let openLoop: ReturnType<typeof startOpenLoop> | undefined;
  try {
    if (load) await sleep(1000); // the app's keys exist (and the table has grown) before idle
    const settleMs = await waitRehashSettled(client);
    await resetStats(client);
    openLoop = startOpenLoop(server.port, { cpu: options.clientCpu });
    await sleep(300); // the client is connected and on schedule
    const since = performance.now();
    let run: CliRun | undefined;
    if (row.args) {
      const cli = startCli(["--execute", "--json", "--redis-url", server.url, ...row.args]);
      // A run that is still going after 4 windows is stopped gracefully (it prints its summary).
      const cap = setTimeout(() => cli.kill(), Math.max(4 * options.seconds, 20) * 1000);
      run = await cli.done.finally(() => clearTimeout(cap));
    } else {
      await sleep(options.seconds * 1000);
    }
    const stats = await openLoop.stop();
    openLoop = undefined;
    const app = load?.throughput(since);
    const scripts = await scriptCalls(client);
    if (run) {
      const summary = parseSummary(run);
      if (run.code === 2 && !summary) {
        const reason = run.stderrTail.split("\n").find((l) => l.trim()) ?? "usage error";
        return { ...row, available: false, note: `not available: ${reason.trim()}` };
      }
      if (!summary) throw new Error(`backfill exited ${run.code} without a summary`);
      const scanned = Number(summary.scanned);
      const seconds = Number(summary.duration_seconds);
      return {
        ...row,
        openLoop: stats,
        app,
        scripts,
        settleMs,
        backfill: { keysPerSecond: scanned / seconds, scanned, exitCode: run.code, seconds },
        note: run.code === 0 ? undefined : `backfill exited ${run.code}`,
      };
    }
    return { ...row, openLoop: stats, app, scripts, settleMs };
  } finally {
    await openLoop?.stop().catch(() => {});
    await load?.stop();
    client.disconnect();
  }
}

/** Runs every impact row on `server` (seeded and snapshotted) and compares with the targets. */
export async function measureImpact(
  server: BenchServer,
  options: { seconds: number; keys: number; clientCpu?: number },
): Promise<ImpactResult> {
  const adaptive = ["--rps", "0", "--max-latency", "0.5"];
  // The latency throttle is on by default: the fixed-rate rows turn it off.
  const UNTHROTTLED = ["--rps", "0", "--max-latency", "0"];
  const plan: ImpactRow[] = [
    { label: "idle", appLoad: true, available: true },
    {
      label: "--rps 5000",
      args: ["--rps", "5000", "--max-latency", "0", "--max-keys", String(5000 * options.seconds)],
      appLoad: true,
      available: true,
    },
    { label: "--rps 0 --max-latency 0.5", args: adaptive, appLoad: true, available: true },
    { label: "--rps 0", args: UNTHROTTLED, appLoad: true, available: true },
    { label: "--rps 0, no app load", args: UNTHROTTLED, appLoad: false, available: true },
    {
      label: "--rps 0 --max-latency 0.5, no app load",
      args: adaptive,
      appLoad: false,
      available: true,
    },
  ];
  const rows: ImpactRow[] = [];
  for (const row of plan) {
    log(`impact: ${row.label}`);
    rows.push(await measureRow(server, row, options));
  }
  return { seconds: options.seconds, rows, targets: impactTargets(rows) };
}

const ms = (v: number | undefined) => v === undefined || Number.isNaN(v) ? "n/a" : v.toFixed(3);

/** The impact section's targets from the rows: differences against idle and a throughput ratio. */
export function impactTargets(rows: readonly ImpactRow[]): ImpactTarget[] {
  const find = (label: string) => rows.find((r) => r.label === label && r.available);
  const idle = find("idle")?.openLoop?.p99Ms;
  const out: ImpactTarget[] = [];
  const delta = (label: string, limit: number) => {
    const p99 = find(label)?.openLoop?.p99Ms;
    const d = p99 === undefined || idle === undefined ? undefined : p99 - idle;
    out.push({
      name: `app p99 during ${label} - idle`,
      goal: `<= ${limit} ms`,
      value: d === undefined ? "n/a" : `${d >= 0 ? "+" : ""}${ms(d)} ms`,
      pass: d === undefined ? null : d <= limit,
    });
  };
  delta("--rps 5000", 0.3);
  delta("--rps 0 --max-latency 0.5", 0.5);
  const a = find("--rps 0 --max-latency 0.5, no app load")?.backfill?.keysPerSecond;
  const u = find("--rps 0, no app load")?.backfill?.keysPerSecond;
  out.push({
    name: "adaptive / unthrottled keys/s (no app load)",
    goal: ">= 0.5",
    value: a === undefined || u === undefined ? "n/a" : (a / u).toFixed(2),
    pass: a === undefined || u === undefined ? null : a / u >= 0.5,
  });
  const scripted = rows.filter((r) => r.available && r.scripts?.calls);
  const worst = scripted.reduce<ImpactRow | undefined>(
    (w, r) => (!w || r.scripts!.usecPerCall > w.scripts!.usecPerCall ? r : w),
    undefined,
  );
  out.push({
    name: "mean Redis time per script call (worst row)",
    goal: "<= 250 us",
    value: worst ? `${worst.scripts!.usecPerCall.toFixed(0)} us (${worst.label})` : "n/a",
    pass: worst ? worst.scripts!.usecPerCall <= 250 : null,
  });
  return out;
}

/** The section's lines for the printed report. */
export function renderImpact(result: ImpactResult): string[] {
  const int = (v: number | undefined) =>
    v === undefined || Number.isNaN(v) ? "n/a" : Math.round(v).toLocaleString("en-US");
  const rows = [[
    "impact run",
    "app p50/p99/p99.9/max ms (open loop)",
    "app ops/s (redis-benchmark)",
    "backfill keys/s",
    "script calls: n, mean us, max us (<=)",
  ]];
  for (const r of result.rows) {
    if (!r.available) {
      rows.push([r.label, r.note ?? "not available", "", "", ""]);
      continue;
    }
    const o = r.openLoop;
    const s = r.scripts;
    rows.push([
      r.label,
      o ? `${ms(o.p50Ms)} / ${ms(o.p99Ms)} / ${ms(o.p999Ms)} / ${ms(o.maxMs)}` : "n/a",
      r.app ? int(r.app.rps) : "-",
      r.backfill ? int(r.backfill.keysPerSecond) : "-",
      s?.calls ? `${int(s.calls)}, ${s.usecPerCall.toFixed(0)}, ${int(s.maxUsecBound)}` : "-",
    ]);
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const lines = [
    "impact: open-loop GET/SET every 1 ms over 4 connections, timed from the " +
    "scheduled send; app load = redis-benchmark -t set,get -c 20; each row on fresh data after " +
    "Redis's rehashing settled",
    ...rows.map((r) => r.map((cell, c) => cell.padEnd(widths[c]!)).join("  ").trimEnd()),
  ];
  const lag = Math.max(...result.rows.map((r) => r.openLoop?.sendLag.p99Ms ?? 0));
  lines.push(
    `  open-loop client's own send lag p99 (worst row): ${ms(lag)} ms (client-side noise floor)`,
  );
  for (const r of result.rows) {
    if (r.note && r.available) lines.push(`  ${r.label}: ${r.note}`);
  }
  lines.push("");
  const t = [["impact target", "goal", "measured", "result"]];
  for (const x of result.targets) {
    t.push([x.name, x.goal, x.value, x.pass === null ? "n/a" : x.pass ? "met" : "missed"]);
  }
  const tw = t[0]!.map((_, c) => Math.max(...t.map((r) => r[c]!.length)));
  lines.push(...t.map((r) => r.map((cell, c) => cell.padEnd(tw[c]!)).join("  ").trimEnd()));
  return lines;
}
