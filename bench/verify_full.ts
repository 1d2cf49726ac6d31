/**
 * The `verify --full` rows of the benchmark: for each size, a fresh server is seeded,
 * migrated in-server (the ceiling's COPY script, so the data is what a backfill leaves), then,
 * three times in turn once Redis's own rehashing has settled, `backfill verify --full --rps 0`
 * runs against it (from a fresh checkpoint) and then the in-server ceiling of the same
 * comparison: one Lua loop doing SCAN and, per old key, what the verify's `pair` script does (TYPE,
 * HGET of the workspace, PEXPIRETIME on both sides, HGETALL of both and a field-by-field
 * comparison) with no network and no client in the loop. It blocks Redis while it runs: no production tool.
 *
 * Redis time per call comes from Redis itself: INFO commandstats (usec_per_call) and LATENCY
 * HISTOGRAM (the slowest call's power-of-two bucket) for EVALSHA_RO.
 *
 * @module
 */
import { parseJson, runCli } from "./cli.ts";
import { runCeiling } from "./ceiling.ts";
import type { Check } from "./backfill_run.ts";
import { seed } from "./seed.ts";
import {
  type BenchServer,
  commandStats,
  redisCpuSeconds,
  resetStats,
  scriptCalls,
  startBenchServer,
  waitRehashSettled,
} from "./server.ts";
import { KEY_LUA, KeySchema, WORKSPACE_FIELD } from "../src/schema.ts";
import { PAIR_LUA } from "../src/verify/script.ts";
import type { Redis } from "../src/redis/ioredis.ts";

/** Where a measured `verify --full` comes from: this tree, or another checkout (a "before"). */
export interface VerifyFullVariant {
  name: string;
  /** The checkout whose `main.ts` runs (default: this one). */
  root?: string;
  /** Extra CLI arguments. */
  args?: string[];
}

/** One variant's numbers at one size (the median pair's, by ratio, and every pair's ratio). */
export interface VerifyFullVariantRow {
  name: string;
  /** Old keys / the summary's duration (the process's start-up excluded). */
  keysPerSecond: number;
  /** Old keys / whole-process wall time. */
  wallKeysPerSecond: number;
  ceilingKeysPerSecond: number;
  /** keysPerSecond / ceilingKeysPerSecond (target ≥ 0.8): the median pair's. */
  ratio: number;
  /** Every pair's ratio, in the order run. */
  ratios: number[];
  /** Every pair's verify and ceiling keys/s, in the order run. */
  pairs: { keysPerSecond: number; ceilingKeysPerSecond: number }[];
  /** EVALSHA_RO calls, mean Redis µs per call, slowest call's bucket bound (µs). */
  calls: number;
  usecPerCall: number;
  maxUsecBound: number;
  /** EVALSHA_RO calls slower than 264 µs (LATENCY HISTOGRAM buckets above the one of 250 µs). */
  callsOver264: number;
  /** SCAN: mean Redis µs per call. */
  scanUsecPerCall: number;
  /** Redis CPU (`INFO cpu`, user + sys) over the verify run, per old key, µs. */
  redisCpuUsPerKey: number;
  /** The verify's own view (TIME inside the script), from its summary. */
  summaryRedisCalls: unknown;
  peakRssMb: number;
  cliCpuSeconds: number;
}

/** One size's numbers, per variant. */
export interface VerifyFullRow {
  keys: number;
  variants: VerifyFullVariantRow[];
}

/** The section's result. */
export interface VerifyFullBenchResult {
  rows: VerifyFullRow[];
  target: { ratio: number; maxCallUs: number };
}

/** The in-server ceiling: the same reads and comparison as the verify script, one loop, no network. */
const VERIFY_CEILING_SCRIPT = `
local cursor, limit = ARGV[1], tonumber(ARGV[2])
local ws_field, match = ARGV[3], ARGV[4]
local scanned, matched = 0, 0
${PAIR_LUA}
${KEY_LUA}
local key_parts, new_key = key_mapping(ARGV[5])
local values = {}
repeat
  local reply = redis.call('SCAN', cursor, 'MATCH', match, 'COUNT', 1000)
  cursor = reply[1]
  for _, key in ipairs(reply[2]) do
    scanned = scanned + 1
    if redis.call('TYPE', key)['ok'] == 'hash' then
      local ws = redis.call('HGET', key, ws_field)
      local parts = ws and key_parts(key)
      values[1] = ws
      local new = parts and #ws <= 64 and string.find(ws, '^[%w][%w_%-]*$') and
        new_key(parts, values)
      if new then
        local old_at = redis.call('PEXPIRETIME', key)
        if redis.call('TYPE', new)['ok'] == 'hash' and redis.call('PEXPIRETIME', new) == old_at
          and same_fields(key, new) then
          matched = matched + 1
        end
      end
    end
  end
until cursor == '0' or scanned >= limit
return {cursor, scanned, matched}
`;

const SCHEMA = new KeySchema();

async function runVerifyCeiling(
  client: Redis,
): Promise<{ matched: number; keysPerSecond: number }> {
  const sha = await client.script("LOAD", VERIFY_CEILING_SCRIPT) as string;
  let cursor = "0", scanned = 0, matched = 0;
  const started = performance.now();
  do {
    const reply = await client.evalsha(
      sha,
      0,
      cursor,
      100_000,
      WORKSPACE_FIELD,
      SCHEMA.oldMatch,
      SCHEMA.luaSpec,
    ) as [string, number, number];
    [cursor, scanned, matched] = [reply[0], scanned + reply[1], matched + reply[2]];
  } while (cursor !== "0");
  return { matched, keysPerSecond: scanned / ((performance.now() - started) / 1000) };
}

/** Verify runs and ceiling runs alternated per size: the machine's drift hits both alike. */
const PAIRS = 3;

/** One verify run and the ceiling run after it, on the same server. */
type Pair = Omit<VerifyFullVariantRow, "name" | "ratios" | "pairs">;

/** What a size's measurements share. */
interface SizeContext {
  checks: Check[];
  log: (line: string) => void;
  pairs: number;
}

/**
 * Seeds `keys` jobs on a fresh server, migrates them in-server, waits for Redis's own rehashing to
 * settle, then, {@linkcode PAIRS} times in turn, runs each variant's verify (each from a fresh
 * checkpoint) followed by a ceiling run; each variant's row holds its median pair (by ratio) and
 * every pair's ratio.
 */
async function measureSize(
  keys: number,
  variants: readonly VerifyFullVariant[],
  pinCpu: number | undefined,
  ctx: SizeContext,
): Promise<VerifyFullRow> {
  const server: BenchServer = await startBenchServer(pinCpu);
  const client = server.client();
  try {
    ctx.log(`verify --full: seeding ${keys} keys and migrating them in-server`);
    const seeded = await seed(client, keys);
    await runCeiling(client);
    await waitRehashSettled(client);
    const pairs: Pair[][] = variants.map(() => []);
    for (let i = 0; i < ctx.pairs; i++) {
      for (const [v, variant] of variants.entries()) {
        pairs[v]!.push(await measurePair(client, server.url, { keys, seeded, variant, i }, ctx));
      }
    }
    return {
      keys,
      variants: variants.map(({ name }, v) => {
        const runs = pairs[v]!;
        const byRatio = [...runs].sort((a, b) => a.ratio - b.ratio);
        return {
          name,
          ...byRatio[Math.floor(runs.length / 2)]!,
          ratios: runs.map((pair) => pair.ratio),
          pairs: runs.map(({ keysPerSecond, ceilingKeysPerSecond }) => ({
            keysPerSecond,
            ceilingKeysPerSecond,
          })),
        };
      }),
    };
  } finally {
    client.disconnect();
    await server.stop();
  }
}

async function measurePair(
  client: Redis,
  url: string,
  run: {
    keys: number;
    seeded: { valid: number; invalid: number };
    variant: VerifyFullVariant;
    i: number;
  },
  { checks, log, pairs }: SizeContext,
): Promise<Pair> {
  const { keys, seeded, variant, i } = run;
  const label = `${variant.name}, ${keys} (${i + 1} of ${pairs})`;
  await resetStats(client);
  log(`verify --full --rps 0 over ${keys} old keys: ${label}`);
  const cpuBefore = await redisCpuSeconds(client);
  const cli = await runCli(
    [
      "verify",
      "--full",
      "--reset-progress",
      "--rps",
      "0",
      "--json",
      "--redis-url",
      url,
      ...variant.args ?? [],
    ],
    [],
    { root: variant.root },
  );
  const cpu = await redisCpuSeconds(client) - cpuBefore;
  const summary = parseJson(cli);
  const scripts = await scriptCalls(client);
  const scan = (await commandStats(client)).scan;
  log(`verify --full ceiling (one in-server script loop) over ${keys} old keys`);
  const ceiling = await runVerifyCeiling(client);
  checks.push({
    name: `verify --full ${label}: exit 0, parity 1, checked = valid + invalid seeded`,
    ok: cli.code === 0 && summary.parity === 1 &&
      summary.checked === seeded.valid + seeded.invalid && summary.matched === seeded.valid,
    detail: `exit ${cli.code}, checked ${summary.checked}, matched ${summary.matched}, ` +
      `seeded ${seeded.valid} valid + ${seeded.invalid} invalid\n${cli.stderrTail}`,
  });
  checks.push({
    name: `verify --full ceiling ${label}: matched = valid seeded`,
    ok: ceiling.matched === seeded.valid,
    detail: `${ceiling.matched} vs ${seeded.valid}`,
  });
  const ro = scripts.byCommand.evalsha_ro;
  const keysPerSecond = keys / Number(summary.duration_seconds);
  return {
    keysPerSecond,
    wallKeysPerSecond: keys / cli.wallSeconds,
    ceilingKeysPerSecond: ceiling.keysPerSecond,
    ratio: keysPerSecond / ceiling.keysPerSecond,
    calls: ro?.calls ?? 0,
    usecPerCall: ro?.usecPerCall ?? NaN,
    maxUsecBound: ro?.maxUsecBound ?? NaN,
    callsOver264: ro?.callsOver264 ?? 0,
    scanUsecPerCall: scan?.usecPerCall ?? NaN,
    redisCpuUsPerKey: cpu * 1e6 / keys,
    summaryRedisCalls: summary.redis_calls,
    peakRssMb: cli.peakRssMb,
    cliCpuSeconds: cli.cpuSeconds,
  };
}

/** Options of {@linkcode measureVerifyFull}. */
export interface VerifyFullBenchOptions {
  checks: Check[];
  pinCpu?: number;
  log: (line: string) => void;
  /** What to run, alternated in each pair (default: this tree alone). */
  variants?: readonly VerifyFullVariant[];
  /** Pairs per size (default {@linkcode PAIRS}). */
  pairs?: number;
}

/** Measures `verify --full` at each size (each on its own fresh server, stopped afterwards). */
export async function measureVerifyFull(
  sizes: readonly number[],
  options: VerifyFullBenchOptions,
): Promise<VerifyFullBenchResult> {
  const variants = options.variants ?? [{ name: "this tree" }];
  const ctx = { checks: options.checks, log: options.log, pairs: options.pairs ?? PAIRS };
  const rows: VerifyFullRow[] = [];
  for (const keys of sizes) rows.push(await measureSize(keys, variants, options.pinCpu, ctx));
  return { rows, target: { ratio: 0.8, maxCallUs: 250 } };
}

/** The section as text lines. */
export function renderVerifyFull(result: VerifyFullBenchResult): string[] {
  const k = (v: number) => Math.round(v).toLocaleString("en-US");
  return [
    "verify --full: --rps 0 on migrated data vs the same comparison in one " +
    "in-server script loop",
    ...result.rows.flatMap((row) =>
      row.variants.map((r) =>
        `  ${k(row.keys)} keys, ${r.name}: ${k(r.keysPerSecond)} keys/s in-process (${
          k(r.wallKeysPerSecond)
        } whole process), ceiling ${k(r.ceilingKeysPerSecond)} keys/s, ratio ${
          r.ratio.toFixed(2)
        } (median of ${
          r.ratios.map((ratio) => ratio.toFixed(2)).join(" / ")
        }; target ≥ ${result.target.ratio}: ${
          r.ratio >= result.target.ratio ? "met" : "missed"
        }); EVALSHA_RO ${k(r.calls)} calls, ${
          r.usecPerCall.toFixed(0)
        } µs/call mean (target ≤ ${result.target.maxCallUs}: ${
          r.usecPerCall <= result.target.maxCallUs ? "met" : "missed"
        }), slowest ≤ ${r.maxUsecBound} µs, ${k(r.callsOver264)} over 264 µs (${
          (100 * r.callsOver264 / r.calls).toFixed(2)
        }%); SCAN ${r.scanUsecPerCall.toFixed(0)} µs/call; Redis CPU ${
          r.redisCpuUsPerKey.toFixed(1)
        } µs/key; peak RSS ${r.peakRssMb.toFixed(0)} MB`
      )
    ),
  ];
}
