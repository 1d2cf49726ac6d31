/**
 * `--profile`: one extra `backfill --execute --rps 0` run on a fresh copy, profiled on both sides —
 * the backfill process with V8's sampling profiler (`--v8-flags=--prof`, processed by
 * `node --prof-process`) and redis-server with `perf record -e cpu-clock`. The full reports go to
 * `bench/results/<timestamp>-profile/`; the heads of both are kept in the JSON result.
 *
 * @module
 */
import type { BenchServer } from "./server.ts";
import { parseJson, runCli, spawnTracked, unthrottledRun } from "./cli.ts";

/** Where the profiles are and what they say first. */
export interface ProfileResult {
  dir: string;
  /** `node --prof-process` [Summary] (JavaScript / C++ / GC / shared libraries shares). */
  v8Summary: string[];
  /** The heaviest redis-server symbols (perf, flat, % of samples). */
  redisTop: string[];
}

async function tool(name: string): Promise<boolean> {
  try {
    const { success } = await new Deno.Command("which", { args: [name], stdout: "null" }).output();
    return success;
  } catch {
    return false;
  }
}

async function capture(cmd: string, args: string[]): Promise<string> {
  const { stdout } = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" })
    .output();
  return new TextDecoder().decode(stdout);
}

/** Profiles one full backfill run; `dir` must exist. */
export async function profileBackfill(server: BenchServer, dir: string): Promise<ProfileResult> {
  const client = server.client();
  const pid = (await client.info("server")).match(/^process_id:(\d+)/m)?.[1];
  client.disconnect();
  const perfData = `${dir}/redis.perf.data`;
  const perf = pid && await tool("perf")
    ? spawnTracked(
      new Deno.Command("perf", {
        args: ["record", "-e", "cpu-clock", "-g", "-o", perfData, "-p", pid],
        stdout: "null",
        stderr: "null",
      }),
    )
    : undefined;
  await new Promise((resolve) => setTimeout(resolve, 300)); // perf attaches
  const v8Log = `${dir}/v8.log`;
  const run = await runCli(
    unthrottledRun(server.url),
    [`--v8-flags=--prof,--logfile=${v8Log},--no-logfile-per-isolate`],
  );
  parseJson(run);
  let redisTop: string[] = [];
  if (perf) {
    perf.kill("SIGINT");
    await perf.status;
    const report = await capture("perf", [
      "report",
      "-i",
      perfData,
      "--stdio",
      "--no-children",
      "--sort",
      "dso,symbol",
      "-g",
      "none",
      "--percent-limit",
      "0.5",
    ]);
    await Deno.writeTextFile(`${dir}/redis-perf.txt`, report);
    await Deno.remove(perfData).catch(() => {});
    // Debian's redis-server is a link to redis-check-rdb, the name perf reports as its DSO.
    redisTop = report.split("\n").filter((l) => /^\s+\d+\.\d+%/.test(l)).slice(0, 15)
      .map((l) => l.trim().replace(/\s+/g, " ").replace("redis-check-rdb", "redis-server"));
  }
  let v8Summary: string[] = [];
  if (await tool("node")) {
    // Node's tick processor reads Deno's V8 log with warnings about the version; keep the report.
    const report = (await capture("node", ["--prof-process", v8Log])).split("\n")
      .filter((l) => !/^(line \d+:|Error: unknown code state|\s+at )/.test(l)).join("\n");
    await Deno.writeTextFile(`${dir}/v8-profile.txt`, report);
    const start = report.indexOf(" [Summary]:");
    v8Summary = start < 0 ? [] : report.slice(start).split("\n").slice(2, 8)
      .filter((l) => l.trim()).map((l) => l.trim().replace(/\s+/g, " "));
  }
  await Deno.remove(v8Log).catch(() => {});
  return { dir, v8Summary, redisTop };
}
