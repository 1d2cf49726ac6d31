/**
 * The application's load: the real `redis-benchmark` (GET and SET, 20 connections, random keys
 * from a 100,000-key app keyspace), looping (`-l`) until the bench stops it, pinned to a core when
 * asked. Each finished test prints one CSV row (`--csv`, line-buffered through `stdbuf -oL`); the
 * bench timestamps every row as it arrives, so the throughput of a window is what redis-benchmark
 * itself reported for the tests that finished inside it.
 *
 * @module
 */
import { spawnTracked } from "./cli.ts";

/** One finished redis-benchmark test (one `-n` round of SET or GET). */
export interface LoadRow {
  test: string;
  rps: number;
  /** redis-benchmark's own (closed-loop) p99, ms. */
  p99Ms: number;
  /** When the row arrived (performance.now(), ms). */
  at: number;
}

/** The application's throughput over a window, from redis-benchmark's own rows. */
export interface LoadThroughput {
  /** Requests per second over the tests that finished in the window (sum n / sum time). */
  rps: number;
  tests: number;
  /** The worst of redis-benchmark's own p99 over those tests (closed loop: understates stalls). */
  worstP99Ms: number;
}

/** A redis-benchmark process in flight. */
export interface AppLoad {
  /** Throughput of the tests that finished after `since` (performance.now() ms). */
  throughput(since: number): LoadThroughput;
  /** Stops redis-benchmark. */
  stop(): Promise<void>;
}

/** Requests per redis-benchmark test: ~0.2 s each at 100k/s, so a window holds many. */
const REQUESTS_PER_TEST = 20_000;

/** Parses one `--csv` row (`"SET","84033.61","0.130",...,"p99","max"`). */
export function parseRow(line: string, at: number): LoadRow | undefined {
  const cells = line.split(",").map((cell) => cell.replaceAll('"', ""));
  const rps = Number(cells[1]);
  if (cells.length < 8 || !Number.isFinite(rps) || rps <= 0) return undefined;
  return { test: cells[0]!, rps, p99Ms: Number(cells[6]), at };
}

/** Combines rows: total requests over total time. */
export function combine(rows: readonly LoadRow[]): LoadThroughput {
  const seconds = rows.reduce((sum, row) => sum + REQUESTS_PER_TEST / row.rps, 0);
  return {
    rps: rows.length ? rows.length * REQUESTS_PER_TEST / seconds : NaN,
    tests: rows.length,
    worstP99Ms: rows.length ? Math.max(...rows.map((row) => row.p99Ms)) : NaN,
  };
}

/** Starts redis-benchmark against 127.0.0.1:`port`, on core `cpu` when given. */
export function startAppLoad(port: number, cpu?: number): AppLoad {
  const args = [
    "-oL",
    "redis-benchmark",
    "-h",
    "127.0.0.1",
    "-p",
    String(port),
    "-t",
    "set,get",
    "-c",
    "20",
    "-n",
    String(REQUESTS_PER_TEST),
    "-r",
    "100000",
    "-l",
    "--csv",
  ];
  const command = cpu === undefined
    ? new Deno.Command("stdbuf", { args, stdout: "piped", stderr: "null" })
    : new Deno.Command("taskset", {
      args: ["-c", String(cpu), "stdbuf", ...args],
      stdout: "piped",
      stderr: "null",
    });
  const child = spawnTracked(command);
  const rows: LoadRow[] = [];
  const reading = (async () => {
    let tail = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      const lines = (tail + chunk).split("\n");
      tail = lines.pop() ?? "";
      const at = performance.now();
      for (const line of lines) {
        const row = parseRow(line.trim(), at);
        if (row) rows.push(row);
      }
    }
  })();
  return {
    throughput: (since) => combine(rows.filter((row) => row.at >= since)),
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch {
        // already gone
      }
      await child.status;
      await reading.catch(() => {});
    },
  };
}
