/**
 * The RTT section: `backfill --execute --rps 0` on loopback, then through a
 * {@linkcode startDelayProxy} adding `delayMs` each way, each on fresh data. Reports the throughput
 * ratio (no fixed target: pipelining should make the RTT nearly irrelevant) and the PING round
 * trip measured both ways, so the proxy's own overhead is visible next to the delay it adds.
 *
 * @module
 */
import type { BenchServer } from "./server.ts";
import { parseJson, runCli, unthrottledRun } from "./cli.ts";
import { startDelayProxy } from "./delay_proxy.ts";
import type { Check } from "./backfill_run.ts";
import type { SeedStats } from "./seed.ts";

/** One backfill run of the section. */
export interface RttRun {
  keysPerSecond: number;
  scanned: number;
  exitCode: number;
  /** Median PING round trip on this path (200 sequential PINGs), ms. */
  pingRttMs: number;
}

/** Loopback vs proxied. */
export interface RttResult {
  delayMs: number;
  loopback: RttRun;
  proxied: RttRun;
  /** proxied keys/s ÷ loopback keys/s. */
  ratio: number;
}

/** Median round trip of `count` sequential PINGs to 127.0.0.1:`port`, ms. */
export async function pingRtt(port: number, count = 200): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  const ping = new TextEncoder().encode("PING\r\n");
  const buf = new Uint8Array(64);
  const times: number[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const started = performance.now();
      await conn.write(ping);
      for (let got = 0; got < 7;) {
        const n = await conn.read(buf);
        if (n === null) throw new Error("PING connection closed");
        got += n;
      }
      times.push(performance.now() - started);
    }
  } finally {
    conn.close();
  }
  return times.sort((a, b) => a - b)[Math.floor(count / 2)]!;
}

/** Runs `backfill --execute --rps 0` against `port` and checks it migrated the seed. */
export async function backfillThrough(
  port: number,
  seeded: SeedStats,
  checks: Check[],
  label: string,
): Promise<RttRun> {
  const pingRttMs = await pingRtt(port);
  const run = await runCli(unthrottledRun(`redis://127.0.0.1:${port}`));
  const summary = parseJson(run);
  const scanned = Number(summary.scanned);
  checks.push({
    name: `${label}: exit 0, scanned = seeded, migrated = valid`,
    ok: run.code === 0 && scanned === seeded.keys && summary.migrated === seeded.valid,
    detail: `exit ${run.code}, scanned ${scanned}, migrated ${summary.migrated}`,
  });
  return {
    keysPerSecond: scanned / Number(summary.duration_seconds),
    scanned,
    exitCode: run.code,
    pingRttMs,
  };
}

/** Loopback, then through the proxy, each on a fresh copy of the seeded data. */
export async function measureRtt(
  server: BenchServer,
  options: { delayMs: number; seeded: SeedStats; checks: Check[] },
): Promise<RttResult> {
  await server.restore();
  const loopback = await backfillThrough(server.port, options.seeded, options.checks, "rtt loop");
  await server.restore();
  const proxy = startDelayProxy({ targetPort: server.port, delayMs: options.delayMs });
  try {
    const proxied = await backfillThrough(proxy.port, options.seeded, options.checks, "rtt proxy");
    return {
      delayMs: options.delayMs,
      loopback,
      proxied,
      ratio: proxied.keysPerSecond / loopback.keysPerSecond,
    };
  } finally {
    await proxy.close();
  }
}

/** The section's lines for the printed report. */
export function renderRtt(r: RttResult): string[] {
  const k = (v: number) => Math.round(v).toLocaleString("en-US");
  return [
    `rtt: backfill --execute --rps 0 (in-process keys/s), loopback vs a proxy adding ` +
    `${r.delayMs} ms each way`,
    `  loopback: ${k(r.loopback.keysPerSecond)} keys/s, PING RTT ${
      r.loopback.pingRttMs.toFixed(3)
    } ms`,
    `  proxied:  ${k(r.proxied.keysPerSecond)} keys/s, PING RTT ${
      r.proxied.pingRttMs.toFixed(3)
    } ms`,
    `  proxied / loopback = ${r.ratio.toFixed(2)} (no fixed target)`,
  ];
}
