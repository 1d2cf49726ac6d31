/**
 * `deno task bench`: throughput of `backfill` side by side with a naive client loop and a
 * server-side Lua ceiling, plus limiter accuracy, concurrent latency and verify latency.
 *
 * ```
 * deno task bench [--keys N] [--naive-keys N] [--repeat N] [--limiter-seconds S] [--quick]
 * ```
 *
 * Starts its own redis-server, seeds it once, snapshots the data as an RDB file and restarts the
 * server from that snapshot before every measurement. Prints a table, writes JSON to
 * `bench/results/`. Exits 1 when a correctness check fails (never for a missed target).
 *
 * @module
 */
import { type CallClockBenchResult, measureCallClock, renderCallClock } from "./call_clock.ts";
import { parseArgs } from "node:util";
import { type BenchServer, startBenchServer } from "./server.ts";
import { seed } from "./seed.ts";
import { type NaiveResult, runNaive } from "./naive.ts";
import { type CeilingResult, runCeiling } from "./ceiling.ts";
import { killAllClis } from "./cli.ts";
import { canPin, CLIENT_CPU, pinProcess, REDIS_CPU } from "./pin.ts";
import { profileBackfill, type ProfileResult } from "./profile.ts";
import {
  type BackfillResult,
  type Check,
  measureBackfill,
  measureBaseline,
  measureVerify,
  median,
  type VerifyResult,
} from "./backfill_run.ts";
import {
  type ConcurrentLatency,
  concurrentLatency,
  limiterAccuracy,
  type LimiterResult,
} from "./limiter_accuracy.ts";
import { type ImpactResult, measureImpact, renderImpact } from "./impact.ts";
import { measureRtt, renderRtt, type RttResult } from "./rtt.ts";
import {
  type ClusterBenchResult,
  measureCluster,
  renderCluster,
  stopAllClusterNodes,
} from "./cluster.ts";
import { measureAgainst, renderAgainst } from "./against.ts";
import { measureVerifyFull, renderVerifyFull, type VerifyFullBenchResult } from "./verify_full.ts";
import { measurePace, type PaceResult, removePaceCgroups, renderPace } from "./pace.ts";
import {
  type BenchResult,
  loadAverage,
  log,
  machineInfo,
  print,
  render,
  targets,
  writeResult,
} from "./report.ts";

const USAGE =
  `usage: deno task bench [--keys N] [--naive-keys N] [--repeat N] [--limiter-seconds S] [--quick]
                       [--no-pin] [--profile] [--impact] [--impact-seconds S] [--rtt MS] [--cluster]
                       [--verify-full] [--verify-full-keys N,N] [--verify-full-before DIR]
                       [--call-clock] [--call-clock-keys N]
                       [--pace] [--pace-rows L] [--against DIR]
  --keys N             old keys to seed (default 300000)
  --naive-keys N       keys the naive loop processes (default 20000)
  --repeat N           runs of naive, backfill and ceiling; the median is reported (default 3)
  --limiter-seconds S  measuring window of the limiter runs (default 10)
  --quick              smoke run: 40000 keys, 2000 naive keys, 1 repeat, 3 s limiter window
  --no-pin             do not pin redis-server to core 0 and the clients to core 1
  --profile            one more backfill run under V8's profiler and perf (redis-server);
                       reports in bench/results/<timestamp>-profile/
  --impact             only the impact section (app p99 and throughput during backfill runs)
  --impact-seconds S   idle window and --rps 5000 window of the impact rows (default 10)
  --rtt MS             only the RTT section: backfill through a proxy adding MS each way
  --cluster            only the cluster section: 3-master cluster vs standalone
  --verify-full        only the verify --full section: keys/s vs its in-server ceiling, Redis time
                       per call (each size on its own fresh server)
  --verify-full-keys L sizes of the verify --full rows (default 300000,1000000; --quick: 40000)
  --verify-full-before DIR
                       also run the verify --full of the checkout in DIR (e.g. a worktree of
                       the commit before a change), alternated with this one's on the same data
  --call-clock         only the call-clock section: backfill and verify --full timed by the
                       script's clock vs the client's, alternated on one fresh server
  --call-clock-keys N  jobs of the call-clock section (default 200000; --quick: 40000)
  --pace               only the pace section: the shipped default pace vs --max-latency 0 on a
                       healthy store, a cluster, under an app prober, a starved client, app
                       latency spikes, set-rps/pause/resume, a saturated store, verify --full
                       (~10 min; --quick: ~2 min on 100000 keys)
  --pace-rows L        only these rows of the pace section (e.g. 1,4b,7; default: all)
  --against DIR        only backfill --execute --rps 0, alternating this checkout and the one in
                       DIR (same snapshot, --repeat pairs): throughput and Redis CPU per key
  With none of --impact, --rtt, --cluster, --verify-full, --call-clock, --pace: every standalone
  section, impact, --rtt 0.25, verify --full and the call clock. A run of only some sections
  replaces just those sections in bench/results/latest.json.`;

function positiveInt(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) {
    throw new RangeError(`--${name} must be a positive integer, got "${value}"`);
  }
  return n;
}

function parseOptions(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      keys: { type: "string" },
      "naive-keys": { type: "string" },
      repeat: { type: "string" },
      "limiter-seconds": { type: "string" },
      quick: { type: "boolean", default: false },
      "no-pin": { type: "boolean", default: false },
      profile: { type: "boolean", default: false },
      impact: { type: "boolean", default: false },
      "impact-seconds": { type: "string" },
      rtt: { type: "string" },
      cluster: { type: "boolean", default: false },
      "verify-full": { type: "boolean", default: false },
      "verify-full-keys": { type: "string" },
      "verify-full-before": { type: "string" },
      "call-clock": { type: "boolean", default: false },
      "call-clock-keys": { type: "string" },
      pace: { type: "boolean", default: false },
      "pace-rows": { type: "string" },
      against: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const quick = values.quick ?? false;
  const rtt = values.rtt === undefined ? undefined : Number(values.rtt);
  if (rtt !== undefined && !(rtt >= 0 && rtt <= 100)) {
    throw new RangeError(`--rtt must be a number of ms in [0, 100], got "${values.rtt}"`);
  }
  const only = values.impact || rtt !== undefined || values.cluster || values["verify-full"] ||
    values["call-clock"] || values.pace || values.against !== undefined;
  const verifyFullKeys = (values["verify-full-keys"] ?? (quick ? "40000" : "300000,1000000"))
    .split(",").map((n) => positiveInt("verify-full-keys", n, 0));
  return {
    sections: {
      classic: !only,
      impact: !only || (values.impact ?? false),
      rttMs: only ? rtt : 0.25,
      cluster: values.cluster ?? false,
      verifyFull: !only || (values["verify-full"] ?? false),
      callClock: !only || (values["call-clock"] ?? false),
      pace: values.pace ?? false,
    },
    verifyFullKeys,
    against: values.against,
    verifyFullBefore: values["verify-full-before"],
    paceRows: values["pace-rows"]?.split(",").map((row) => row.trim()),
    callClockKeys: positiveInt(
      "call-clock-keys",
      values["call-clock-keys"],
      quick ? 40_000 : 200_000,
    ),
    impactSeconds: positiveInt("impact-seconds", values["impact-seconds"], quick ? 3 : 10),
    help: values.help ?? false,
    quick,
    pin: !(values["no-pin"] ?? false),
    profile: values.profile ?? false,
    // The pace rows need runs long enough to change pace in: 100000 keys even when quick.
    keys: positiveInt(
      "keys",
      values.keys,
      quick && !values.pace ? 40_000 : quick ? 100_000 : 300_000,
    ),
    naiveKeys: positiveInt("naive-keys", values["naive-keys"], quick ? 2_000 : 20_000),
    repeat: positiveInt("repeat", values.repeat, quick ? 1 : 3),
    limiterSeconds: positiveInt("limiter-seconds", values["limiter-seconds"], quick ? 3 : 10),
  };
}

/** The run with the median `keysPerSecond`. */
function medianRun<T extends { keysPerSecond: number }>(runs: T[]): T {
  const mid = median(runs.map((r) => r.keysPerSecond));
  return runs.find((r) => r.keysPerSecond === mid)!;
}

/** The sections beyond the classic ones. */
interface ExtraSections {
  impact?: ImpactResult;
  rtt?: RttResult;
  cluster?: ClusterBenchResult;
  verifyFull?: VerifyFullBenchResult;
  callClock?: CallClockBenchResult;
  pace?: PaceResult;
}

/** Set by SIGINT/SIGTERM: cleanup is running, errors from the parts it tore down are expected. */
let interrupted = false;

async function main(): Promise<number> {
  const options = parseOptions(Deno.args);
  if (options.help) {
    print(USAGE);
    return 0;
  }
  const cliExists = await Deno.stat(new URL("../main.ts", import.meta.url)).then(
    () => true,
    () => false,
  );
  const loadBefore = await loadAverage();
  if (Number(loadBefore.split(" ")[0]) > 0.5) {
    log(`the machine is busy (load average ${loadBefore}): expect noisy numbers`);
  }
  const notes: string[] = [];
  const checks: Check[] = [];
  let server: BenchServer | undefined;
  const cleanup = async () => {
    await killAllClis();
    await stopAllClusterNodes();
    await removePaceCgroups();
    await server?.stop();
    server = undefined;
  };
  const onSignal = () => {
    interrupted = true;
    log("interrupted, cleaning up");
    cleanup().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  // A promise that rejects while the bench is being torn down must not kill it before cleanup.
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    log(`unhandled rejection: ${event.reason}`);
  });
  // A part that fails is recorded as a failed check; the other parts still run.
  const attempt = async <T>(name: string, fn: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await fn();
    } catch (error) {
      if (interrupted) throw error;
      const message = error instanceof Error ? error.message : String(error);
      log(`${name} failed: ${message}`);
      checks.push({ name: `${name} ran`, ok: false, detail: message });
      return undefined;
    }
  };
  /** Runs one of the sections beyond the classic ones and prints its lines (none if it failed). */
  const section = async <T>(
    name: string,
    fn: () => Promise<T>,
    lines: (result: T) => string[],
  ): Promise<T | undefined> => {
    const result = await attempt(name, fn);
    if (result !== undefined) { for (const line of ["", ...lines(result)]) print(line); }
    return result;
  };
  try {
    const pinned = options.pin && await canPin();
    if (pinned) await pinProcess(Deno.pid, CLIENT_CPU);
    else notes.push("not pinned: naive and latency numbers swing with scheduler placement");
    server = await startBenchServer(pinned ? REDIS_CPU : undefined);
    const srv = server;
    const client = srv.client();
    const redisVersion = (await client.info("server")).match(/^redis_version:(.*)$/m)?.[1]?.trim();
    log(`seeding ${options.keys} keys`);
    const seeded = await seed(client, options.keys);
    client.disconnect();
    await srv.snapshot();
    log(
      `seeded in ${seeded.seconds.toFixed(1)} s: ${seeded.valid} valid, ${seeded.invalid} invalid`,
    );

    if (options.against !== undefined) {
      const other = options.against;
      const opts = { other, repeat: options.repeat };
      await section("against", () => measureAgainst(srv, seeded, checks, opts), renderAgainst);
    }
    let classic: BenchResult | undefined;
    if (options.sections.classic) {
      const naiveRuns: NaiveResult[] = [];
      const backfillRuns: BackfillResult[] = [];
      const ceilingRuns: CeilingResult[] = [];
      let verify: VerifyResult | undefined;
      const onFresh = async <T>(fn: (c: ReturnType<BenchServer["client"]>) => Promise<T>) => {
        await srv.restore();
        const c = srv.client();
        try {
          return await fn(c);
        } finally {
          c.disconnect();
        }
      };
      for (let i = 1; i <= options.repeat; i++) {
        const of = `(${i}/${options.repeat})`;
        log(`naive loop over ${options.naiveKeys} keys ${of}`);
        naiveRuns.push(await onFresh((c) => runNaive(c, options.naiveKeys)));
        if (cliExists) {
          log(`backfill --execute --rps 0 ${of}`);
          await srv.restore();
          const run = await attempt("backfill", () => measureBackfill(srv, seeded, checks));
          if (run) backfillRuns.push(run);
          if (run && i === options.repeat) {
            log("verify --sample 1000 on the migrated data (3 runs)");
            verify = await attempt("verify", () => measureVerify(srv, checks));
          }
        }
        log(`ceiling (server-side Lua) ${of}`);
        const ceiling = await onFresh((c) => runCeiling(c));
        ceilingRuns.push(ceiling);
      }
      checks.push({
        name: "ceiling scanned = seeded, migrated = valid",
        ok: ceilingRuns.every((c) => c.scanned === seeded.keys && c.migrated === seeded.valid),
        detail: ceilingRuns.map((c) => `scanned ${c.scanned}, migrated ${c.migrated}`).join("; "),
      });
      if (!cliExists) {
        notes.push(
          "main.ts does not exist yet: backfill, verify, limiter and latency were skipped",
        );
      }

      const baseline = cliExists ? await attempt("--version", measureBaseline) : undefined;
      const limiter: LimiterResult[] = [];
      let latency: ConcurrentLatency | undefined;
      if (cliExists) {
        for (const rps of [1000, 5000]) {
          if (rps * (options.limiterSeconds + 4) > seeded.keys) {
            notes.push(
              `--rps ${rps} needs ${rps * (options.limiterSeconds + 4)} keys for a ` +
                `${options.limiterSeconds} s window; only ${seeded.keys} seeded: accuracy is n/a`,
            );
          }
          await srv.restore();
          log(`limiter accuracy --rps ${rps} (~${options.limiterSeconds + 3} s)`);
          const result = await attempt(
            `limiter --rps ${rps}`,
            () => limiterAccuracy(srv, rps, options.limiterSeconds),
          );
          if (result) limiter.push(result);
        }
        await srv.restore();
        log(`PING latency idle, then during --rps 5000 (~${2 * options.limiterSeconds + 3} s)`);
        latency = await attempt(
          "concurrent latency",
          () =>
            concurrentLatency(srv, 5000, {
              seconds: options.limiterSeconds,
              pinCpu: pinned ? REDIS_CPU : undefined,
            }),
        );
      }

      let profile: ProfileResult | undefined;
      if (cliExists && options.profile) {
        await srv.restore();
        const stamp = new Date().toISOString().replaceAll(":", "-").replace(/\.\d+Z$/, "Z");
        const dir = decodeURIComponent(
          new URL(`./results/${stamp}-profile`, import.meta.url).pathname,
        );
        await Deno.mkdir(dir, { recursive: true });
        log(`profiling one more backfill run into ${dir}`);
        profile = await attempt("profile", () => profileBackfill(srv, dir));
      }

      const naive = medianRun(naiveRuns);
      const backfill = backfillRuns.length ? medianRun(backfillRuns) : undefined;
      const ceiling = medianRun(ceilingRuns);
      const partial = {
        date: new Date().toISOString(),
        machine: {
          ...await machineInfo(redisVersion ?? "?"),
          loadAverageBefore: loadBefore,
          loadAverageAfter: await loadAverage(),
        },
        options: { ...options, pinned },
        seed: seeded,
        naive,
        backfill,
        ceiling,
        verify,
        runs: { naive: naiveRuns, backfill: backfillRuns, ceiling: ceilingRuns },
        ratios: {
          backfillOverNaive: backfill && backfill.keysPerSecond / naive.keysPerSecond,
          backfillOverCeiling: backfill && backfill.keysPerSecond / ceiling.keysPerSecond,
          ceilingOverNaive: ceiling.keysPerSecond / naive.keysPerSecond,
        },
        baseline,
        limiter,
        latency,
        profile,
        checks,
        notes,
      };
      classic = { ...partial, targets: targets(partial) };
      for (const line of render(classic)) print(line);
    }
    const extra: ExtraSections = {};
    const clientCpu = pinned ? CLIENT_CPU : undefined;
    if (!cliExists) notes.push("main.ts does not exist yet: impact, rtt and cluster were skipped");
    if (cliExists && options.sections.impact) {
      log(`impact section: 6 runs (~${6 * (options.impactSeconds + 3)} s or more)`);
      extra.impact = await section(
        "impact",
        () => measureImpact(srv, { seconds: options.impactSeconds, keys: options.keys, clientCpu }),
        renderImpact,
      );
    }
    if (cliExists && options.sections.rttMs !== undefined) {
      const delayMs = options.sections.rttMs;
      log(`rtt section: backfill --rps 0 on loopback and through a ${delayMs} ms-each-way proxy`);
      extra.rtt = await section(
        "rtt",
        () => measureRtt(srv, { delayMs, seeded, checks }),
        renderRtt,
      );
    }
    if (cliExists && options.sections.cluster) {
      log("cluster section: 3-master cluster vs standalone, same data");
      extra.cluster = await section(
        "cluster",
        () =>
          measureCluster(srv, {
            seeded,
            checks,
            rttMs: options.sections.rttMs,
            clusterCpu: pinned ? REDIS_CPU : undefined,
          }),
        renderCluster,
      );
    }
    const fresh = { checks, pinCpu: pinned ? REDIS_CPU : undefined, log };
    if (cliExists && options.sections.verifyFull) {
      log(`verify --full section: ${options.verifyFullKeys.join(", ")} keys`);
      extra.verifyFull = await section(
        "verify --full",
        () =>
          measureVerifyFull(options.verifyFullKeys, {
            ...fresh,
            variants: options.verifyFullBefore === undefined
              ? undefined
              : [{ name: "before", root: options.verifyFullBefore }, { name: "after" }],
          }),
        renderVerifyFull,
      );
    }
    if (cliExists && options.sections.callClock) {
      log(`call-clock section: ${options.callClockKeys} keys`);
      extra.callClock = await section(
        "call clock",
        () => measureCallClock(options.callClockKeys, fresh),
        renderCallClock,
      );
    }
    if (cliExists && options.sections.pace) {
      log(`pace section: ${options.keys} keys (~${options.quick ? 2 : 10} min)`);
      const loadAverageBefore = await loadAverage();
      extra.pace = await section(
        "pace",
        async () => ({
          date: new Date().toISOString(),
          loadAverageBefore,
          ...await measurePace(srv, {
            seeded,
            checks,
            quick: options.quick,
            redisCpu: pinned ? REDIS_CPU : undefined,
            clientCpu,
            log,
            only: options.paceRows,
          }),
          loadAverageAfter: await loadAverage(),
        }),
        renderPace,
      );
    }
    if (!classic) {
      const failed = checks.filter((c) => !c.ok);
      print("");
      print(`checks: ${checks.length - failed.length}/${checks.length} ok`);
      for (const c of failed) print(`  FAILED ${c.name}: ${c.detail}`);
      for (const note of notes) print(`note: ${note}`);
    }
    const result = classic ? { ...classic, ...extra } : {
      date: new Date().toISOString(),
      machine: {
        ...await machineInfo(redisVersion ?? "?"),
        loadAverageBefore: loadBefore,
        loadAverageAfter: await loadAverage(),
      },
      options: { ...options, pinned },
      seed: seeded,
      ...extra,
      checks,
      notes,
    };
    const path = await writeResult(result, classic ? undefined : Object.keys(extra));
    log(`wrote ${path}`);
    return checks.every((c) => c.ok) ? 0 : 1;
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    await cleanup();
  }
}

if (import.meta.main) {
  let code = 1;
  try {
    code = await main();
  } catch (error) {
    if (interrupted) await new Promise(() => {}); // the signal handler exits once cleanup is done
    log(error instanceof Error ? (error.stack ?? error.message) : String(error));
  }
  Deno.exit(code);
}
