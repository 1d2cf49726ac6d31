/**
 * `deno task demo`: the whole backfill on a throwaway Redis. Starts a local redis-server on a free
 * loopback port in a temporary directory, seeds sample jobs in the old schema (see `seed.ts`), then
 * runs the real CLI as child processes, exactly as an operator would:
 *
 * 1. `backfill --dry-run --rps 2000`, and checks that it wrote nothing;
 * 2. `backfill --execute --rps 2000 --metrics-port <port>`, with its live progress line on stderr,
 *    scraping `/metrics` once while it runs;
 * 3. `backfill verify --sample 1000`;
 *
 * checks each step's counts against what was seeded, and always stops Redis and removes its
 * directory (also after a failure or Ctrl-C). Exit code 0 when every step did what it should.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { BINARY_FLAGS } from "../tests/support/cli.ts";
import { freePort, type RedisServer, startRedis } from "../tests/support/redis_server.ts";
import { print, printError } from "./print.ts";
import { type SeedReport, seedSampleJobs } from "./seed.ts";

/** The project root: the CLI runs from there, so `-P=backfill` finds deno.json. */
const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** How the CLI is started: the permission set the tests and the compiled binary use. */
const CLI = ["run", "-q", ...BINARY_FLAGS, "--no-prompt", "main.ts"];

/** Jobs per second for both runs: quick here, yet visibly rate-limited (the default is 100). */
const RPS = 2000;
const VERIFY_SAMPLE = 1000;

/** A step did not do what it should. */
class DemoError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "DemoError";
  }
}

/** A signal arrived; the demo stops after cleaning up. */
class Interrupted extends Error {
  readonly exitCode: number;
  /** Creates the error for `signal`. */
  constructor(signal: Deno.Signal) {
    super(`${signal} received`);
    this.name = "Interrupted";
    this.exitCode = signal === "SIGINT" ? 130 : 143;
  }
}

/** Signals seen while the demo runs, and the CLI child that is running (if any). */
interface SignalTrap {
  received?: Deno.Signal;
  child?: Deno.ChildProcess;
  dispose(): void;
}

/**
 * Catches SIGINT/SIGTERM so cleanup always runs. Ctrl-C reaches the CLI child (and redis-server)
 * through the terminal's process group, so SIGINT is not forwarded; SIGTERM, which is sent to
 * this process alone, is.
 */
function trapSignals(): SignalTrap {
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  const trap: SignalTrap = {
    dispose() {
      for (const [signal, handler] of handlers) Deno.removeSignalListener(signal, handler);
    },
  };
  const handlers = signals.map((signal) => {
    const handler = () => {
      if (trap.received) return;
      trap.received = signal;
      printError(`\ndemo: ${signal} received, stopping and cleaning up...`);
      if (signal === "SIGTERM") {
        try {
          trap.child?.kill("SIGTERM");
        } catch {
          // already exited
        }
      }
    };
    Deno.addSignalListener(signal, handler);
    return [signal, handler] as const;
  });
  return trap;
}

/** `redis-server --version`'s version, or `undefined` when redis-server is not installed. */
async function redisServerVersion(): Promise<string | undefined> {
  try {
    const { stdout } = await new Deno.Command("redis-server", {
      args: ["--version"],
      stdout: "piped",
      stderr: "null",
    }).output();
    return new TextDecoder().decode(stdout).match(/v=(\S+)/)?.[1] ?? "(unknown version)";
  } catch (error: unknown) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

/** The outcome of one CLI run. */
interface CliRun {
  code: number;
  stdout: string;
  seconds: number;
}

/** Runs the CLI with `args`: stdout captured (the summary), stderr (progress, logs) passed through. */
async function runCli(
  trap: SignalTrap,
  args: string[],
  whileRunning?: (done: Promise<unknown>) => Promise<void>,
): Promise<CliRun> {
  if (trap.received) throw new Interrupted(trap.received);
  print(`$ backfill ${args.join(" ")}`);
  const started = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: [...CLI, ...args],
    cwd: ROOT,
    // Metrics on even if the caller's environment turns them off.
    env: { TELEMETRY_ENABLED: "true" },
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  trap.child = child;
  try {
    const output = child.output();
    const [result] = await Promise.all([output, whileRunning?.(output)]);
    return {
      code: result.code,
      stdout: new TextDecoder().decode(result.stdout),
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    trap.child = undefined;
  }
}

/** Prints a run's stdout indented and fails unless it exited with `expected`. */
function report(trap: SignalTrap, run: CliRun, expected = 0): void {
  const output = run.stdout.trimEnd();
  if (output) print(...output.split("\n").map((line) => line ? `  ${line}` : ""));
  print(`  (exit code ${run.code}, ${run.seconds.toFixed(1)} s)`);
  if (trap.received) throw new Interrupted(trap.received);
  if (run.code !== expected) {
    throw new DemoError(`expected exit code ${expected}, got ${run.code}`);
  }
}

/** The number after `label:` in a text summary, e.g. `Migrated:  4792`. */
function summaryNumber(stdout: string, label: string): number {
  const escaped = label.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const match = stdout.match(new RegExp(`^\\s*${escaped}\\s*:\\s*([\\d.]+)`, "mi"));
  if (!match?.[1]) throw new DemoError(`no "${label}:" line in the output`);
  return Number(match[1]);
}

/** Fails unless the summary's counts are the ones the seeded data implies. */
function checkCounts(stdout: string, seeded: SeedReport): void {
  const expected: Array<[string, number]> = [
    ["Scanned", seeded.oldKeys],
    ["Migrated", seeded.toMigrate],
    ["Repaired", seeded.partial],
    ["Errors", 0],
  ];
  for (const [label, want] of expected) {
    const got = summaryNumber(stdout, label);
    if (got !== want) throw new DemoError(`${label}: expected ${want}, got ${got}`);
  }
  print(`  OK: counts match the seeded data.`);
}

/** Runs `command` against the server with a short-lived client. */
async function withClient<T>(
  server: RedisServer,
  command: (redis: ReturnType<RedisServer["client"]>) => Promise<T>,
): Promise<T> {
  const redis = server.client();
  try {
    return await command(redis);
  } finally {
    redis.disconnect();
  }
}

/** Counts keys matching `pattern` with SCAN. */
function countKeys(server: RedisServer, pattern: string): Promise<number> {
  return withClient(server, async (redis) => {
    let count = 0;
    let cursor = "0";
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 1000);
      cursor = next;
      count += keys.length;
    } while (cursor !== "0");
    return count;
  });
}

/** Redis's count of writes since the last save (never saved here: every write since start). */
function writesSoFar(server: RedisServer): Promise<number> {
  return withClient(server, async (redis) => {
    const info = await redis.info("persistence");
    const match = info.match(/rdb_changes_since_last_save:(\d+)/);
    if (!match?.[1]) throw new DemoError("INFO persistence has no rdb_changes_since_last_save");
    return Number(match[1]);
  });
}

/** Sum of every sample of `metric` in Prometheus text. */
function metricSum(text: string, metric: string): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith(`${metric}{`) || line.startsWith(`${metric} `)) {
      sum += Number(line.slice(line.lastIndexOf(" ") + 1)) || 0;
    }
  }
  return sum;
}

/** A few `relay_backfill_*` samples worth showing (no histogram buckets, no help text). */
function interestingSamples(text: string): string[] {
  const wanted = [
    "relay_backfill_migrated_total",
    "relay_backfill_repaired_total",
    "relay_backfill_skipped_total",
    "relay_backfill_errors_total",
    "relay_backfill_duration_seconds_count",
  ];
  return text.split("\n")
    .filter((line) =>
      wanted.some((name) => line.startsWith(`${name}{`) || line.startsWith(`${name} `))
    )
    .slice(0, 12);
}

/**
 * Polls `/metrics` until the run has scanned at least `threshold` keys, and keeps that scrape.
 * Before that the server may not be listening yet; a failed poll is retried.
 */
async function scrapeMidRun(
  port: number,
  threshold: number,
  done: Promise<unknown>,
): Promise<{ text: string; scanned: number } | undefined> {
  let finished = false;
  void done.finally(() => finished = true);
  let last: { text: string; scanned: number } | undefined;
  while (!finished) {
    try {
      const response = await fetch(`http://127.0.0.1:${port}/metrics`, {
        signal: AbortSignal.timeout(1000),
      });
      const text = await response.text();
      if (response.ok) {
        const scanned = metricSum(text, "relay_backfill_scanned_total");
        if (scanned > 0) last = { text, scanned };
        if (scanned >= threshold) return last;
      }
    } catch {
      // not listening yet, or already gone
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return last;
}

async function demo(trap: SignalTrap, server: RedisServer, version: string): Promise<void> {
  const url = server.url;
  print(`redis-server ${version} on 127.0.0.1:${server.port} (throwaway, data in ${server.dir})`);

  // --- seed -----------------------------------------------------------------------------------
  const seeded = await withClient(server, (redis) => seedSampleJobs(redis));
  const workspaces = Object.entries(seeded.perWorkspace).map(([w, n]) => `${w} ${n}`).join(", ");
  print(
    ``,
    `Seeded ${seeded.oldKeys} jobs in the old schema ai:jobs:<job_id> (${workspaces}):`,
    ...[
      [seeded.toMigrate, "only in the old schema", "migrated"],
      [seeded.dualWritten, "already dual-written", "skipped (exists)"],
      [seeded.partial, "partially dual-written", "repaired"],
      [seeded.invalid, "invalid", "skipped (invalid): bad workspace_id, not a hash, empty job id"],
    ].map(([count, what, outcome]) =>
      `  ${String(count).padStart(5)} ${String(what).padEnd(24)}-> ${outcome}`
    ),
    `  ${String(seeded.withTtl).padStart(5)} of the valid jobs have a TTL, which the copy keeps`,
    ``,
    `"backfill" below is \`deno run -P=backfill main.ts\`, the same permissions as the binary.`,
  );

  // --- 1. dry run -------------------------------------------------------------------------------
  print(``, `== 1/3 Dry run: count what would change, write nothing ==`);
  const writesBefore = await writesSoFar(server);
  const dry = await runCli(trap, ["--dry-run", "--redis-url", url, "--rps", String(RPS)]);
  report(trap, dry);
  checkCounts(dry.stdout, seeded);
  const writes = await writesSoFar(server) - writesBefore;
  if (writes !== 0) throw new DemoError(`the dry run wrote to Redis (${writes} changes)`);
  print(`  OK: nothing written (Redis counted 0 changes during the dry run).`);

  // --- 2. execute -------------------------------------------------------------------------------
  const metricsPort = freePort();
  print(
    ``,
    `== 2/3 Execute at ${RPS} jobs/s, metrics on http://127.0.0.1:${metricsPort}/metrics ==`,
  );
  let scrape: { text: string; scanned: number } | undefined;
  const execute = await runCli(
    trap,
    [
      "--execute",
      "--redis-url",
      url,
      "--rps",
      String(RPS),
      "--metrics-port",
      String(metricsPort),
      // The scrape is taken mid-run: no need to keep /metrics up after the end.
      "--metrics-linger",
      "0",
      "--progress-interval",
      "1",
    ],
    async (done) => {
      scrape = await scrapeMidRun(metricsPort, Math.floor(seeded.oldKeys / 3), done);
    },
  );
  report(trap, execute);
  checkCounts(execute.stdout, seeded);
  if (!scrape) throw new DemoError("could not scrape /metrics while the run was going");
  print(
    `  /metrics, scraped mid-run (scanned ${scrape.scanned} of ${seeded.oldKeys}):`,
    ...interestingSamples(scrape.text).map((line) => `    ${line}`),
  );
  const newKeys = await countKeys(server, "ai:job:*");
  const expectedNew = seeded.toMigrate + seeded.dualWritten + seeded.partial;
  if (newKeys !== expectedNew) {
    throw new DemoError(`expected ${expectedNew} keys in the new schema, found ${newKeys}`);
  }
  const oldKeys = await countKeys(server, "ai:jobs:*");
  if (oldKeys !== seeded.oldKeys) {
    throw new DemoError(`the old keys changed: expected ${seeded.oldKeys}, found ${oldKeys}`);
  }
  await withClient(server, async (redis) => {
    for (const [oldKey, newKey] of seeded.ttlSamples) {
      const [oldTtl, newTtl] = [await redis.pttl(oldKey), await redis.pttl(newKey)];
      if (newTtl <= 0 || Math.abs(oldTtl - newTtl) > 5000) {
        throw new DemoError(`${newKey}: TTL ${newTtl} ms, the old key has ${oldTtl} ms`);
      }
    }
  });
  print(
    `  OK: ${newKeys} jobs in the new schema, all ${oldKeys} old keys untouched,` +
      ` TTLs kept (${seeded.ttlSamples.length} checked).`,
  );

  // --- 3. verify --------------------------------------------------------------------------------
  print(``, `== 3/3 Verify a random sample of ${VERIFY_SAMPLE} old keys against the new schema ==`);
  const verify = await runCli(trap, [
    "verify",
    "--sample",
    String(VERIFY_SAMPLE),
    "--redis-url",
    url,
  ]);
  report(trap, verify);
  const parity = summaryNumber(verify.stdout, "Parity");
  if (parity !== 100) throw new DemoError(`expected parity 100%, got ${parity}%`);
  print(
    `  OK: parity 100%: every sampled valid job is in the new schema with the same fields and TTL.`,
  );
}

async function main(): Promise<number> {
  const version = await redisServerVersion();
  if (version === undefined) {
    printError(
      "demo: redis-server is not installed (not found on PATH); install Redis >= 7.0 " +
        "(Debian/Ubuntu: apt-get install redis-server, macOS: brew install redis) and run again.",
    );
    return 1;
  }
  const trap = trapSignals();
  let server: RedisServer | undefined;
  try {
    server = await startRedis();
    await demo(trap, server, version);
    return 0;
  } catch (error: unknown) {
    if (trap.received) return new Interrupted(trap.received).exitCode;
    if (error instanceof DemoError) {
      printError(`demo failed: ${error.message}`);
    } else {
      printError(`demo failed: ${error instanceof Error ? error.stack : String(error)}`);
    }
    return 1;
  } finally {
    if (server) {
      try {
        await server.stop();
      } catch {
        // redis-server already exited (Ctrl-C reaches it too); the directory is removed below.
      }
      await Deno.remove(server.dir, { recursive: true }).catch(() => {});
      print(``, `Cleaned up: redis-server stopped, ${server.dir} removed.`);
    }
    trap.dispose();
  }
}

if (import.meta.main) {
  const code = await main();
  if (code === 0) print(`Demo finished: all steps OK.`);
  Deno.exit(code);
}
