/**
 * The latency a concurrent client sees: sequential PINGs from their own TCP connection (raw RESP,
 * no client library, TCP_NODELAY), one every ~1 ms, each timed from write to the full `+PONG` reply.
 * The pinger runs as its own process (`deno run bench/latency.ts <port> <ms>`), so it can sit on
 * another core than the bench and the CLI: it stops at `<ms>` or when its stdin closes, and prints
 * its {@linkcode LatencyStats} as JSON.
 *
 * @module
 */
import { spawnTracked } from "./cli.ts";

/** Latency percentiles in milliseconds. */
export interface LatencyStats {
  samples: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

const PING = new TextEncoder().encode("PING\r\n");
const PONG_LENGTH = "+PONG\r\n".length;

/** PINGs until `signal` aborts or `durationMs` passes, whichever comes first. */
export async function pingLatency(
  port: number,
  options: { durationMs: number; signal?: AbortSignal; gapMs?: number },
): Promise<LatencyStats> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  const samples: number[] = [];
  const buf = new Uint8Array(64);
  const deadline = performance.now() + options.durationMs;
  try {
    while (performance.now() < deadline && !options.signal?.aborted) {
      const started = performance.now();
      await conn.write(PING);
      let got = 0;
      while (got < PONG_LENGTH) {
        const n = await conn.read(buf.subarray(got));
        if (n === null) throw new Error("redis closed the PING connection");
        got += n;
      }
      samples.push(performance.now() - started);
      await new Promise((resolve) => setTimeout(resolve, options.gapMs ?? 1));
    }
  } finally {
    conn.close();
  }
  return summarize(samples);
}

/** p50 / p99 / max of latency samples (ms). */
export function summarize(samples: number[]): LatencyStats {
  const sorted = samples.toSorted((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
  return { samples: sorted.length, p50Ms: at(0.5), p99Ms: at(0.99), maxMs: sorted.at(-1) ?? 0 };
}

/** A pinger process in flight. */
export interface Pinger {
  /** Stops it (closes its stdin) and returns what it measured. */
  stop(): Promise<LatencyStats>;
}

/** Starts a pinger process against `port`, on core `cpu` when given, for at most `durationMs`. */
export function startPinger(port: number, options: { durationMs: number; cpu?: number }): Pinger {
  const script = decodeURIComponent(new URL(import.meta.url).pathname);
  const deno = [
    Deno.execPath(),
    "run",
    "-q",
    "-A",
    script,
    String(port),
    String(options.durationMs),
  ];
  const [cmd, ...args] = options.cpu === undefined
    ? deno
    : ["taskset", "-c", String(options.cpu), ...deno];
  const child = spawnTracked(
    new Deno.Command(cmd!, { args, stdin: "piped", stdout: "piped", stderr: "inherit" }),
  );
  const output = child.output();
  return {
    async stop() {
      await child.stdin.close().catch(() => {});
      const { stdout, code } = await output;
      const text = new TextDecoder().decode(stdout);
      if (code !== 0) throw new Error(`pinger exited ${code}: ${text}`);
      return JSON.parse(text) as LatencyStats;
    },
  };
}

/** Runs a pinger for `durationMs` and returns what it measured. */
export async function runPinger(
  port: number,
  options: { durationMs: number; cpu?: number },
): Promise<LatencyStats> {
  const pinger = startPinger(port, options);
  await new Promise((resolve) => setTimeout(resolve, options.durationMs + 500));
  return await pinger.stop();
}

if (import.meta.main) {
  const [port, durationMs] = Deno.args.map(Number);
  const stop = new AbortController();
  // Stdin closing (the bench calling stop()) ends the run.
  (async () => {
    for await (const _ of Deno.stdin.readable) { /* nothing is sent */ }
    stop.abort();
  })();
  const stats = await pingLatency(port!, { durationMs: durationMs!, signal: stop.signal });
  Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(stats) + "\n"));
  Deno.exit(0);
}
