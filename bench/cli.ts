/**
 * Runs the real `backfill` CLI as a subprocess (`deno run -q <the compile task's flags> main.ts ...`) and measures
 * the whole process: wall time from spawn to exit, peak RSS and CPU time. Peak RSS and CPU come from
 * GNU time (`/usr/bin/time`, the kernel's rusage of the child) when it is installed, otherwise from
 * polling `/proc/<pid>/status` (VmHWM) and `/proc/<pid>/stat` every 20 ms.
 *
 * @module
 */
import { BINARY_FLAGS } from "../tests/support/cli.ts";

const ROOT = decodeURIComponent(new URL("..", import.meta.url).pathname);
const GNU_TIME = "/usr/bin/time";

/**
 * The arguments of an unthrottled `backfill --execute` with a JSON summary: no rate cap and the
 * latency throttle off (its default is 0.5 ms), which also gives the run its deep call window.
 */
export function unthrottledRun(url: string): string[] {
  return ["--execute", "--rps", "0", "--max-latency", "0", "--json", "--redis-url", url];
}

/** The whole-process measurement of one CLI run. */
export interface CliRun {
  args: string[];
  code: number;
  stdout: string;
  /** The last lines of stderr (progress and logs). */
  stderrTail: string;
  /** The whole of stderr (the run's log lines). */
  stderr: string;
  wallSeconds: number;
  peakRssMb: number;
  /** User + system CPU time of the CLI process, in seconds. */
  cpuSeconds: number;
}

/** A CLI run in flight. */
export interface RunningCli {
  /** Resolves when the process has exited. */
  done: Promise<CliRun>;
  /** Sends SIGTERM to the CLI process (a graceful stop: it prints its summary). */
  kill(): void;
}

const running = new Set<Deno.ChildProcess>();
const tempFiles = new Set<string>();

/** Kills every process the bench spawned that still runs, and their children (cleanup). */
export async function killAllClis(): Promise<void> {
  for (const child of running) {
    for (const pid of [...descendants(child.pid), child.pid]) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    await child.status.catch(() => {});
  }
  running.clear();
  for (const file of tempFiles) Deno.removeSync(file);
  tempFiles.clear();
}

/** Every descendant of `pid` (from /proc/<pid>/task/<tid>/children), deepest first. */
function descendants(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
      const text = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/children`).trim();
      for (const child of text ? text.split(/\s+/).map(Number) : []) {
        out.push(...descendants(child), child);
      }
    }
  } catch {
    // gone, or no /proc
  }
  return out;
}

/** Spawns `command`, killed by {@linkcode killAllClis} if it is still running at cleanup. */
export function spawnTracked(command: Deno.Command): Deno.ChildProcess {
  const child = command.spawn();
  running.add(child);
  child.status.finally(() => running.delete(child));
  return child;
}

/** Options of {@linkcode startCli}. */
export interface StartCliOptions {
  /** A command line the whole process is run under (e.g. one that enters a cgroup and `exec`s). */
  wrap?: readonly string[];
  /** The checkout whose `main.ts` runs (default: this one), e.g. a "before" to compare with. */
  root?: string;
}

/**
 * Starts `main.ts <args>` with the `backfill` permission set; `denoFlags` go before `main.ts`
 * (the profiler uses `--v8-flags=--prof,...`).
 */
export function startCli(
  args: string[],
  denoFlags: string[] = [],
  options: StartCliOptions = {},
): RunningCli {
  const denoArgs = ["run", "-q", ...BINARY_FLAGS, ...denoFlags, "main.ts", ...args];
  const haveTime = exists(GNU_TIME);
  const timeFile = haveTime ? Deno.makeTempFileSync({ prefix: "backfill-bench-time-" }) : undefined;
  if (timeFile) tempFiles.add(timeFile);
  const line = timeFile
    ? [GNU_TIME, "-f", "%M %U %S", "-o", timeFile, Deno.execPath(), ...denoArgs]
    : [Deno.execPath(), ...denoArgs];
  const [program, ...rest] = [...(options.wrap ?? []), ...line];
  const command = new Deno.Command(program!, {
    args: rest,
    cwd: options.root ?? ROOT,
    stdout: "piped",
    stderr: "piped",
  });
  const started = performance.now();
  const child = spawnTracked(command);
  const poller = timeFile ? undefined : pollProc(child.pid);
  const done = (async (): Promise<CliRun> => {
    try {
      const [output, stderr] = await Promise.all([
        new Response(child.stdout).text(),
        new Response(child.stderr).text(),
      ]);
      const status = await child.status;
      const wallSeconds = (performance.now() - started) / 1000;
      let peakRssMb: number, cpuSeconds: number;
      if (timeFile) {
        // Missing when cleanup removed it (the run was killed): the numbers are then NaN.
        const text = tempFiles.has(timeFile) ? Deno.readTextFileSync(timeFile) : "";
        const lines = text.trim().split("\n");
        const [rssKb, user, sys] = (lines.at(-1) ?? "").split(" ").map(Number);
        peakRssMb = (rssKb ?? NaN) / 1024;
        cpuSeconds = (user ?? NaN) + (sys ?? NaN);
      } else {
        const last = await poller!.stop();
        peakRssMb = last.hwmKb / 1024;
        cpuSeconds = last.cpuSeconds;
      }
      return {
        args,
        code: status.code,
        stdout: output,
        stderrTail: stderr.trim().split("\n").slice(-15).join("\n"),
        stderr,
        wallSeconds,
        peakRssMb,
        cpuSeconds,
      };
    } finally {
      if (timeFile && tempFiles.delete(timeFile)) Deno.removeSync(timeFile);
    }
  })();
  return {
    done,
    // SIGTERM to the CLI itself: GNU time (the parent when installed) would die of it and leave
    // the CLI running.
    kill: () => {
      const below = descendants(child.pid);
      for (const pid of below.length ? below : [child.pid]) {
        try {
          Deno.kill(pid, "SIGTERM");
        } catch {
          // already gone
        }
      }
    },
  };
}

/** Runs the CLI to completion. */
export function runCli(
  args: string[],
  denoFlags: string[] = [],
  options: StartCliOptions = {},
): Promise<CliRun> {
  return startCli(args, denoFlags, options).done;
}

/** Parses the one JSON object the CLI prints with `--json`; throws with context when it can't. */
export function parseJson(run: CliRun): Record<string, unknown> {
  try {
    return JSON.parse(run.stdout) as Record<string, unknown>;
  } catch {
    throw new Error(
      `backfill ${run.args.join(" ")} exited ${run.code} without a JSON summary\n` +
        `stdout: ${run.stdout.slice(0, 500)}\nstderr: ${run.stderrTail}`,
    );
  }
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

function pollProc(pid: number) {
  const last = { hwmKb: 0, cpuSeconds: 0 };
  const ticks = 100; // USER_HZ on Linux
  const read = () => {
    try {
      const status = Deno.readTextFileSync(`/proc/${pid}/status`);
      const hwm = Number(status.match(/^VmHWM:\s+(\d+)/m)?.[1] ?? 0);
      if (hwm > last.hwmKb) last.hwmKb = hwm;
      const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      last.cpuSeconds = (Number(fields[11]) + Number(fields[12])) / ticks;
    } catch {
      // exited
    }
  };
  const timer = setInterval(read, 20);
  return {
    stop: () => {
      clearInterval(timer);
      return Promise.resolve(last);
    },
  };
}
