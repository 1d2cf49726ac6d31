/**
 * This checkout's `backfill --execute --rps 0` side by side with another checkout's (`--against
 * DIR`, e.g. the last release unpacked with `git archive`), on the same seeded snapshot in one
 * session: runs alternate (this, other, this, other, …), each on a server restored from the
 * snapshot, and the medians are compared. What a change costs in throughput and Redis CPU per key.
 *
 * @module
 */
import { type BackfillResult, type Check, measureBackfill, median } from "./backfill_run.ts";
import type { BenchServer } from "./server.ts";
import type { SeedStats } from "./seed.ts";
import { log } from "./report.ts";

/** Both checkouts' runs. */
export interface AgainstResult {
  other: string;
  runs: { self: BackfillResult[]; other: BackfillResult[] };
}

/** `repeat` alternating pairs of runs. */
export async function measureAgainst(
  server: BenchServer,
  seeded: SeedStats,
  checks: Check[],
  options: { other: string; repeat: number },
): Promise<AgainstResult> {
  const runs: AgainstResult["runs"] = { self: [], other: [] };
  for (let i = 1; i <= options.repeat; i++) {
    for (const side of ["self", "other"] as const) {
      log(`against: ${side === "self" ? "this checkout" : options.other} (${i}/${options.repeat})`);
      await server.restore();
      const root = side === "other" ? options.other : undefined;
      runs[side].push(await measureBackfill(server, seeded, checks, root));
    }
  }
  return { other: options.other, runs };
}

/** The comparison's lines. */
export function renderAgainst(result: AgainstResult): string[] {
  /** The median over `runs` of `value` per scanned key. */
  const perKey = (runs: BackfillResult[], value: (run: BackfillResult) => number) =>
    median(runs.map((r) => value(r) / Math.max(1, Number(r.summary.scanned ?? 0))));
  const row = (name: string, runs: BackfillResult[]) => {
    const keys = median(runs.map((r) => r.inProcessKeysPerSecond));
    const cpu = median(runs.map((r) => r.redisCpuMicrosPerKey));
    const cli = perKey(runs, (r) => r.cliCpuSeconds * 1e6);
    const all = runs.map((r) => Math.round(r.inProcessKeysPerSecond)).join(", ");
    return {
      keys,
      cpu,
      line: `  ${name}: ${Math.round(keys)} keys/s (runs ${all}), backfill CPU ` +
        `${cli.toFixed(2)} µs/key, `,
    };
  };
  const self = row("this checkout", result.runs.self);
  const other = row(result.other, result.runs.other);
  // Where the Redis time goes, per command (µs and calls per scanned key): what a change moved.
  const names = Object.keys(result.runs.self[0]?.commands ?? {}).slice(0, 6);
  const both = (name: string, field: "usec" | "calls", digits: number) =>
    [result.runs.self, result.runs.other]
      .map((runs) => perKey(runs, (r) => r.commands[name]?.[field] ?? 0).toFixed(digits))
      .join(" against ");
  const commands = names.map((name) =>
    `    ${name}: ${both(name, "usec", 2)} µs/key, ${both(name, "calls", 3)} calls/key`
  );
  return [
    `against ${result.other}: backfill --execute --rps 0 --max-latency 0, alternating, medians`,
    `${self.line}Redis CPU ${self.cpu.toFixed(2)} µs/key`,
    `${other.line}Redis CPU ${other.cpu.toFixed(2)} µs/key`,
    `  this / other: throughput ${(self.keys / other.keys).toFixed(3)}, ` +
    `Redis CPU per key ${(self.cpu / other.cpu).toFixed(3)}`,
    "  Redis time by command (this against other):",
    ...commands,
  ];
}
