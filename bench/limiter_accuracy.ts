/**
 * Limiter accuracy and concurrent latency, both against a `backfill --execute --rps R` subprocess.
 *
 * Accuracy: a second connection polls DBSIZE every 10 ms while the CLI runs with
 * `--max-keys R*(S+4)`, which gives the count of migrated keys as a function of time, N(t). The
 * achieved rate is the mean of N(a+S) - N(a) over window starts `a` spread evenly across the second
 * that begins 1 s after the first new key, divided by S (default S = 10). Skipping the first second
 * leaves out the burst a sliding window allows at the start; averaging over a whole second of start
 * times cancels the phase of a limiter that releases keys in bursts (a staircase), so a perfect
 * limiter measures 1.000 whether it paces smoothly or in bursts. DBSIZE counts migrated keys only;
 * the limiter counts every processed job (invalid ones too), so the rate is scaled by
 * scanned / migrated from the run's summary.
 *
 * @module
 */
import type { BenchServer } from "./server.ts";
import { type CliRun, parseJson, startCli } from "./cli.ts";
import { type LatencyStats, runPinger, startPinger } from "./latency.ts";

interface Sample {
  /** Seconds (performance clock), the midpoint of the DBSIZE call. */
  t: number;
  /** New keys so far. */
  n: number;
}

/** N(t): the count of the last sample taken at or before `t`. */
function countAt(samples: readonly Sample[], t: number): number {
  let lo = 0, hi = samples.length - 1, found = 0;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (samples[mid]!.t <= t) {
      found = samples[mid]!.n;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return found;
}

/** Accuracy of one `--rps` setting. */
export interface LimiterResult {
  rps: number;
  maxKeys: number;
  scanned: number;
  migrated: number;
  /** Length of the measuring window, seconds. */
  windowSeconds: number;
  /** Jobs per second in the steady state (new keys/s x scanned/migrated); NaN if the run was too short. */
  achievedRps: number;
  /** achievedRps / rps. */
  ratio: number;
  /** Most jobs seen in any <=1 s span of DBSIZE samples, / rps (<= 1 when the window holds). */
  peakWindowRatio: number;
  /** scanned / duration_seconds / rps over the whole run (includes the first-second burst). */
  wholeRunRatio: number;
  cli: Omit<CliRun, "stdout">;
}

const args = (url: string, rps: number, maxKeys: number) => [
  "--execute",
  "--rps",
  String(rps),
  "--max-latency",
  "0",
  "--max-keys",
  String(maxKeys),
  "--json",
  "--redis-url",
  url,
];

/** Measures how closely `--rps rps` is held over about `seconds` seconds of steady state. */
export async function limiterAccuracy(
  server: BenchServer,
  rps: number,
  seconds: number,
): Promise<LimiterResult> {
  const client = server.client();
  try {
    const base = await client.dbsize();
    const maxKeys = rps * (seconds + 4);
    const cli = startCli(args(server.url, rps, maxKeys));
    const samples: Sample[] = [];
    let finished = false;
    const done = cli.done.finally(() => finished = true);
    done.catch(() => {}); // handled where it is awaited below
    while (!finished) {
      const before = performance.now();
      const n = await client.dbsize() - base;
      samples.push({ t: (before + performance.now()) / 2000, n });
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const run = await done;
    const summary = parseJson(run);
    const scanned = Number(summary.scanned), migrated = Number(summary.migrated);
    const perJob = migrated ? scanned / migrated : 1;
    const first = samples.find((s) => s.n > 0);
    const last = samples.find((s) => s.n === samples.at(-1)!.n);
    let achievedRps = NaN;
    if (first && last && last.t >= first.t + 2 + seconds) {
      let sum = 0;
      const starts = 100;
      for (let i = 0; i < starts; i++) {
        const a = first.t + 1 + i / starts;
        sum += countAt(samples, a + seconds) - countAt(samples, a);
      }
      achievedRps = sum / starts / seconds * perJob;
    }
    let peak = 0;
    for (let i = 0, j = 0; j < samples.length; j++) {
      while (samples[j]!.t - samples[i]!.t > 1) i++;
      peak = Math.max(peak, samples[j]!.n - samples[i]!.n);
    }
    const { stdout: _, ...cliRun } = run;
    return {
      rps,
      maxKeys,
      scanned,
      migrated,
      windowSeconds: seconds,
      achievedRps,
      ratio: achievedRps / rps,
      peakWindowRatio: peak * perJob / rps,
      wholeRunRatio: scanned / Number(summary.duration_seconds) / rps,
      cli: cliRun,
    };
  } finally {
    client.disconnect();
  }
}

/** PING latency idle, then during a `--rps rps` run (from its first new key to its exit). */
export interface ConcurrentLatency {
  rps: number;
  idle: LatencyStats;
  during: LatencyStats;
  /** during.p99 - idle.p99, ms. */
  p99DeltaMs: number;
  cliCode: number;
}

/**
 * Measures the latency a concurrent client sees, idle and during a throttled run. The pinger is its
 * own process, on core `pinCpu` when given (the bench puts it on Redis's core, away from the CLI,
 * as a client on another host would be).
 */
export async function concurrentLatency(
  server: BenchServer,
  rps: number,
  options: { seconds: number; pinCpu?: number },
): Promise<ConcurrentLatency> {
  const { seconds, pinCpu } = options;
  const idle = await runPinger(server.port, { durationMs: seconds * 1000, cpu: pinCpu });
  const client = server.client();
  try {
    const base = await client.dbsize();
    const cli = startCli(args(server.url, rps, rps * (seconds + 1)));
    let finished = false;
    const done = cli.done.finally(() => finished = true);
    done.catch(() => {}); // handled where it is awaited below
    while (!finished && await client.dbsize() === base) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const pinger = startPinger(server.port, { durationMs: 3_600_000, cpu: pinCpu });
    const run = await done;
    const during = await pinger.stop();
    parseJson(run);
    return { rps, idle, during, p99DeltaMs: during.p99Ms - idle.p99Ms, cliCode: run.code };
  } finally {
    client.disconnect();
  }
}
