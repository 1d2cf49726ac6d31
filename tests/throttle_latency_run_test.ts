/**
 * The latency throttle end to end (issue 13): a real `--execute --rps 0 --max-latency 0.5` process
 * against a real redis-server that also serves the application's load (the real `redis-benchmark`,
 * SET and GET on 10 connections). Once the run is migrating at an adapted rate, another connection
 * makes Redis slow for everyone: `DEBUG SLEEP 0.05` every ~20 ms for 2 s. The run must log a cut
 * within 2 s, to a lower rate than before, keep the throttle on while the pulses last, lift it after
 * they stop, raise its rate again, and still migrate every job.
 *
 * Times come from the run's own log timestamps and from its `/metrics` and status, read every
 * 100 ms; nothing waits a fixed time that assumes a fast machine.
 */
import assert from "node:assert/strict";
import { delay } from "../src/async/delay.ts";
import type { Redis } from "../src/redis/ioredis.ts";
import { ExitCode } from "../src/errors.ts";
import { runCli, type RunningCli, spawnCli, waitFor } from "./support/cli.ts";
import { withRedis } from "./support/redis_server.ts";
import { countKeys, seedOldInServer } from "./support/seed.ts";
import { freePort, parseSamples } from "./support/telemetry.ts";

const P = "p:latency";
/**
 * The run must outlast its ramp, the pulses and the recovery: about 2 600 jobs on the development
 * machine (the cuts bring it to about 120/s), so 10 000 leave room for a faster host, and few
 * enough that the rest migrates in seconds at the recovering rate on a quiet one.
 */
const JOBS = 10_000;
/** Where an adaptive run starts (the controller's default). */
const START_RPS = 1000;
const MAX_LATENCY_MS = 0.5;
/**
 * The issue asks for a cut within ~1 s of latency rising; the controller needs 300 ms of it to
 * confirm and ticks every 200 ms (about 0.5 s measured). 2 s leaves room for a loaded CI host.
 */
const CUT_WITHIN_MS = 2000;

/** The application: `redis-benchmark` SET/GET in a loop until stopped. */
function startAppLoad(port: number): { stop(): Promise<void> } {
  const child = new Deno.Command("redis-benchmark", {
    args: ["-h", "127.0.0.1", "-p", String(port), "-t", "set,get", "-c", "10", "-r", "100000"]
      .concat(["-l", "-q"]),
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  return {
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch {
        // Already stopped.
      }
      await child.status;
    },
  };
}

/** One reading of the run's metrics and status, stamped when it arrived (wall clock, like logs). */
interface Reading {
  at: number;
  /** `relay_backfill_rate_limit{node="_all"}`: the throttle's effective rate. */
  rps: number;
  /** `relay_backfill_throttled{reason="latency"}` is 1. */
  latencyThrottled: boolean;
  /** `relay_backfill_migrated_total`. */
  migrated: number;
  /** `rate.throttled` of the published status (what `backfill status --json` prints). */
  statusThrottled: string[];
}

/** Reads `/metrics` and the status every 100 ms until the signal aborts; failed reads are skipped. */
function watchRun(
  options: { metricsPort: number; client: Redis; signal: AbortSignal },
): Reading[] {
  const readings: Reading[] = [];
  const { metricsPort, client, signal } = options;
  const sum = (text: string, name: string, label?: [string, string]) =>
    parseSamples(text)
      .filter((s) => s.name === name && (!label || s.labels[label[0]] === label[1]))
      .reduce((total, s) => total + s.value, 0);
  void (async () => {
    while (!signal.aborted) {
      try {
        const response = await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { signal });
        const text = await response.text();
        const status = JSON.parse(await client.get(`${P}:status`) ?? "null");
        readings.push({
          at: Date.now(),
          rps: sum(text, "relay_backfill_rate_limit", ["node", "_all"]),
          latencyThrottled: sum(text, "relay_backfill_throttled", ["reason", "latency"]) === 1,
          migrated: sum(text, "relay_backfill_migrated_total"),
          statusThrottled: status?.rate?.throttled ?? [],
        });
      } catch {
        // Not listening yet, or already gone.
      }
      await delay(100, { signal }).catch(() => {});
    }
  })();
  return readings;
}

/** A latency line of the throttle: `throttle on: added p99 latency above 0.5 ms; rate 496/s`. */
interface ThrottleLine {
  at: number;
  on: boolean;
  rps: number;
}

const LATENCY_LINE = new RegExp(
  String.raw`^(\S+) \w+ throttle: throttle (on|off): added p99 latency (?:above|back under) ` +
    String.raw`${MAX_LATENCY_MS.toString().replace(".", "\\.")} ms; rate (\d+)/s$`,
  "gm",
);

function latencyLines(stderr: string): ThrottleLine[] {
  return [...stderr.matchAll(LATENCY_LINE)].map((m) => ({
    at: Date.parse(m[1]!),
    on: m[2] === "on",
    rps: Number(m[3]),
  }));
}

/** `DEBUG SLEEP` pulses on their own connection: the server stalls for every client. */
async function pulseLatency(
  client: Redis,
  options: { durationMs: number; sleepSeconds: number; gapMs: number },
): Promise<{ startedAt: number; endedAt: number; pulses: number }> {
  const startedAt = Date.now();
  let pulses = 0;
  while (Date.now() - startedAt < options.durationMs) {
    await client.call("DEBUG", "SLEEP", String(options.sleepSeconds));
    pulses++;
    await delay(options.gapMs);
  }
  return { startedAt, endedAt: Date.now(), pulses };
}

/** The measured numbers, on the test's output (the README quotes them). */
function note(text: string): void {
  Deno.stderr.writeSync(new TextEncoder().encode(`latency throttle: ${text}\n`));
}

/** What one pulse episode did to the run (times in ms, rates in jobs/s). */
interface Episode {
  pulses: { startedAt: number; endedAt: number; pulses: number };
  cut: ThrottleLine;
  /** The highest rate in force from just before the pulses to just before the cut. */
  before: number;
  off: ThrottleLine;
  /** The first reading after the throttle lifted with a rate above the lowest of the episode. */
  grown: Reading;
}

/**
 * Waits until the run migrates at an adapted rate well above the 20/s floor (a cut from there is
 * visible, and a new line), pulses, and follows the throttle through the cut and the recovery.
 */
async function pulseEpisode(
  run: { stderrSoFar(): string },
  readings: Reading[],
  pulser: Redis,
): Promise<Episode> {
  await waitFor("the run migrating at an adapted rate of 100/s or more, not throttled", () => {
    const last = readings.at(-1);
    const firstWrite = readings.find((r) => r.migrated > 0);
    if (last === undefined || firstWrite === undefined) return false;
    // Adapted: raised (or cut) from the start rate, or a few seconds at it.
    const adapted = last.rps !== START_RPS || last.at - firstWrite.at >= 3000;
    return adapted && !last.latencyThrottled && last.rps >= 100;
  }, 60_000);
  const pulsing = pulseLatency(pulser, { durationMs: 2000, sleepSeconds: 0.05, gapMs: 20 });
  const since = Date.now();
  const lines = () => latencyLines(run.stderrSoFar());
  const cutLine = () => lines().find((l) => l.on && l.at >= since);
  await waitFor("a latency cut after the pulses started", () => cutLine() !== undefined, 20_000);
  const cut = cutLine()!;
  const pulses = await pulsing;
  // A reading taken in the same tick as the cut may already show its rate: 20 ms of margin.
  const prior = readings.filter((r) => r.at < cut.at - 20);
  const before = Math.max(
    prior.at(-1)?.rps ?? 0,
    ...prior.filter((r) => r.at >= pulses.startedAt - 500).map((r) => r.rps),
  );
  const offLine = () => lines().find((l) => !l.on && l.at > cut.at);
  await waitFor("the throttle lifted after the pulses", () => offLine() !== undefined, 30_000);
  const off = offLine()!;
  const lowest = Math.min(
    off.rps,
    ...readings.filter((r) => r.at >= cut.at && r.at <= off.at).map((r) => r.rps),
  );
  // Recovery: after a throttle-off (this one, or a later one when a loaded host's noise cut again),
  // a reading above that off's rate before the next cut. A controller that never raises fails.
  const grownReading = () => {
    const all = lines();
    for (const lifted of all.filter((l) => !l.on && l.at >= off.at)) {
      const nextCut = all.find((l) => l.on && l.at > lifted.at)?.at ?? Infinity;
      const floor = lifted.at === off.at ? lowest : lifted.rps;
      const grown = readings.find((r) => r.at > lifted.at && r.at < nextCut && r.rps > floor);
      if (grown) return grown;
    }
    return undefined;
  };
  await waitFor("the rate growing again", () => grownReading() !== undefined, 60_000);
  return { pulses, cut, before, off, grown: grownReading()! };
}

/**
 * Lets the throttled run finish on its own (no errors, every job); if it has not within
 * `withinMs` (a host busy with other work reads as latency and can hold it near the 20/s floor),
 * stops it with `backfill stop` and finishes from its checkpoint with `--max-latency 0`. Returns
 * whether the throttled run finished alone.
 */
async function finishRun(
  run: RunningCli,
  common: string[],
  withinMs: number,
): Promise<boolean> {
  const timer = new AbortController();
  const ended = await Promise.race([
    run.done.then(() => true),
    delay(withinMs, { signal: timer.signal }).then(() => false, () => false),
  ]);
  timer.abort();
  if (ended) {
    const result = await run.done;
    assert.equal(result.code, 0, result.stderr);
    const summary = JSON.parse(result.stdout);
    assert.equal(summary.completed, true);
    assert.equal(summary.errors, 0);
    return true;
  }
  assert.equal((await runCli(["stop", ...common])).code, 0);
  const stopped = await run.done;
  assert.equal(stopped.code, ExitCode.stopped, stopped.stderr);
  assert.equal(JSON.parse(stopped.stdout).errors, 0);
  const rest = await runCli(["--execute", "--rps", "0", "--max-latency", "0", ...common]);
  assert.equal(rest.code, 0, rest.stderr);
  return false;
}

Deno.test("latency pulses under redis-benchmark load: the throttle cuts within 2 s, lifts after, every job migrates", async () => {
  await withRedis(async (server, client) => {
    await seedOldInServer(client, JOBS);
    const load = startAppLoad(server.port);
    const metricsPort = freePort();
    const stopWatching = new AbortController();
    const pulser = client.duplicate();
    const common = ["--progress-key", P, "--redis-url", server.url];
    const run = spawnCli(
      [
        ...["--execute", "--rps", "0", "--max-latency", String(MAX_LATENCY_MS), "--json"],
        ...["--metrics-port", String(metricsPort), "--metrics-host", "127.0.0.1"],
        ...["--metrics-linger", "0", ...common],
      ],
      {},
      300_000,
    );
    const readings = watchRun({ metricsPort, client, signal: stopWatching.signal });
    try {
      const { pulses, cut, before, off, grown } = await pulseEpisode(run, readings, pulser)
        .catch((error) => {
          const lines = run.stderrSoFar().split("\n").filter((l) => l.includes(" throttle: "));
          throw new Error(`${error.message}; the throttle's lines:\n${lines.join("\n")}`, {
            cause: error,
          });
        });
      const report = `cut ${cut.at - pulses.startedAt} ms after the pulses started, ` +
        `${before}/s -> ${cut.rps}/s; off ${off.at - pulses.endedAt} ms after they ended ` +
        `at ${off.rps}/s; ${grown.rps}/s ${grown.at - off.at} ms later`;
      note(report);
      assert.ok(cut.at - pulses.startedAt <= CUT_WITHIN_MS, report);
      assert.ok(cut.rps < before, report);
      assert.ok(off.at >= pulses.endedAt, `the throttle held while the pulses lasted: ${report}`);
      assert.ok(
        readings.some((r) =>
          r.at >= cut.at && r.at <= off.at + 1000 && r.statusThrottled.includes("latency")
        ),
        "the status showed the latency throttle",
      );

      await load.stop();
      const stoppedAt = Date.now();
      const alone = await finishRun(run, common, 90_000);
      note(
        alone
          ? `the run finished ${Date.now() - stoppedAt} ms after the load stopped`
          : "the run had not finished 90 s after the load stopped (host noise); finished from " +
            "its checkpoint with --max-latency 0",
      );
      assert.equal(await countKeys(client, "ai:job:*"), JOBS);
    } finally {
      stopWatching.abort();
      pulser.disconnect();
      await load.stop();
      try {
        run.child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      await run.done.catch(() => {});
    }
  }, { args: ["--enable-debug-command", "yes"] });
});
