/**
 * Runs the real CLI as a subprocess under the permission set in deno.json ("backfill"), the same
 * list `deno task compile` bakes into the binary, so the tests exercise the binary's permissions.
 *
 * @module
 */

const ROOT = new URL("../../", import.meta.url).pathname;

/**
 * The runtime flags the compiled binary is built with, read from the `compile` task in deno.json
 * (everything between `deno compile` and `--output`): the permission set and the V8 flags. The
 * tests, the demo and the benchmark run the CLI with exactly these, so they exercise the binary's
 * permissions and memory settings; deno.json stays the one place they are written.
 */
export const BINARY_FLAGS: readonly string[] = (() => {
  const config = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`));
  const task: string = config.tasks.compile;
  const flags = task.match(/^deno compile (.*?) --output /)?.[1];
  if (!flags) throw new Error(`cannot read the binary's flags from the compile task: ${task}`);
  return flags.split(/\s+/);
})();

/** Subcommands that take no throttle flags. */
const NOT_A_RUN = new Set(["verify", "pause", "resume", "set-rps", "stop", "status"]);

/**
 * The arguments a test's run gets: `--max-latency 0` unless the test sets it. The default pace
 * (0.5 ms) bounds calls in flight and yields to a busy Redis, and on a busy CI box another test's
 * redis-server can make its own look busy; tests of other behaviour run as they always did, and
 * the tests of the pace (and of the defaults, with `{ defaults: true }`) say what they use.
 */
export function testRunArgs(args: string[], options: { defaults?: boolean } = {}): string[] {
  const run = args.length > 0 && !NOT_A_RUN.has(args[0]!) &&
    !args.some((arg) => arg === "--help" || arg === "-h" || arg === "--version");
  const set = args.some((arg) => arg === "--max-latency" || arg.startsWith("--max-latency="));
  return run && !set && !options.defaults ? [...args, "--max-latency", "0"] : args;
}

/** The command line that runs the CLI like the compiled binary would. */
export function cliCommand(
  args: string[],
  env: Record<string, string> = {},
  options: { defaults?: boolean } = {},
): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-q",
      ...BINARY_FLAGS,
      `--config=${ROOT}deno.json`,
      `${ROOT}main.ts`,
      ...testRunArgs(args, options),
    ],
    cwd: ROOT,
    // A clean environment (no stray REDIS_URL), but keep what Deno needs to find its cache.
    env: { ...passThrough(), NO_COLOR: "1", ...env },
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
}

/** What a CLI run printed and returned. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI to completion. */
export function runCli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return spawnCli(args, env).done;
}

/** Runs the CLI with `--json` and parses the one JSON object on stdout. */
export async function runJson(
  args: string[],
  env: Record<string, string> = {},
): Promise<CliResult & { summary: Record<string, unknown> }> {
  const result = await runCli([...args, "--json"], env);
  let summary: Record<string, unknown>;
  try {
    summary = JSON.parse(result.stdout);
  } catch {
    throw new Error(
      `stdout is not one JSON object (exit ${result.code}):\n${result.stdout}\n${result.stderr}`,
    );
  }
  return { ...result, summary };
}

function passThrough(): Record<string, string> {
  const kept: Record<string, string> = {};
  for (const name of ["HOME", "PATH", "DENO_DIR", "XDG_CACHE_HOME", "TMPDIR"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) kept[name] = value;
  }
  return kept;
}

/** A CLI process started in the background; its output is collected until it exits. */
export interface RunningCli {
  child: Deno.ChildProcess;
  /** Resolves when the process exits. */
  done: Promise<CliResult>;
  /** stderr so far (for waiting on a log line). */
  stderrSoFar(): string;
}

/** Starts the CLI without waiting for it. */
export function spawnCli(
  args: string[],
  env: Record<string, string> = {},
  timeoutMs = 120_000,
  options: { defaults?: boolean } = {},
): RunningCli {
  const child = cliCommand(args, env, options).spawn();
  const started = performance.now();
  const killedByWatchdog = () => performance.now() - started >= timeoutMs;
  const decoder = new TextDecoder();
  let stderr = "";
  const stderrDone = (async () => {
    for await (const chunk of child.stderr) stderr += decoder.decode(chunk, { stream: true });
  })();
  const stdoutDone = new Response(child.stdout).text();
  // A hung CLI must fail its test, not stall the whole suite: kill it after `timeoutMs`.
  const watchdog = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const done = (async () => {
    const [status, stdout] = await Promise.all([child.status, stdoutDone, stderrDone]);
    clearTimeout(watchdog);
    if (status.signal === "SIGKILL" && status.code === 137 && killedByWatchdog()) {
      throw new Error(`CLI still running after ${timeoutMs} ms, killed:\n${stderr}`);
    }
    return { code: status.code, stdout, stderr };
  })();
  return { child, done, stderrSoFar: () => stderr };
}

/** Polls `check` every 20 ms until it is true, or fails after `timeoutMs`. */
export async function waitFor(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
