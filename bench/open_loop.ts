/**
 * An open-loop latency client: sends a cheap command on a fixed schedule (one every `intervalMs`,
 * over `connections` connections in turn, each connection pipelining) and times every reply from
 * the time its request was SCHEDULED, not from when it was written. When Redis stalls, the
 * requests keep falling due; they are sent as soon as the client can and each one counts the whole
 * wait, so a stall shows up as latency, not as fewer samples (no coordinated omission, as in wrk2).
 *
 * The schedule is kept by a {@linkcode Ticker} (sub-ms wake-ups). `sendLag` reports how late the
 * client itself wrote its requests: a large one means the client, not Redis, was slow.
 *
 * Run as its own process (the bench pins it to a core):
 *
 * ```
 * deno run -A bench/open_loop.ts --port P [--interval-ms 1] [--connections 4]
 *   [--duration-ms 10000] [--command get-set|ping]
 * ```
 *
 * It stops after `--duration-ms` (or when its stdin closes, with `--stop-on-stdin-close`: how the
 * bench stops it), and prints {@linkcode OpenLoopStats}
 * as one JSON line.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { nowAbs, Ticker } from "./ticker.ts";
import { spawnTracked } from "./cli.ts";

/** Latency percentiles in milliseconds, nearest rank. */
export interface Percentiles {
  samples: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
}

/** What one open-loop run measured. */
export interface OpenLoopStats extends Percentiles {
  intervalMs: number;
  connections: number;
  command: string;
  /** Requests that fell due (sent or not). */
  due: number;
  /** Requests with no reply when the run ended (counted in the percentiles with their wait). */
  unanswered: number;
  errors: number;
  /** How late the client wrote its requests after their scheduled time (client-side noise). */
  sendLag: Percentiles;
  /** Which build measured: the C client (bench/open_loop.c) or this module under Deno. */
  prober?: "c" | "deno";
  /** It ran under SCHED_FIFO (`chrt -f 50`): its own wake-ups did not wait behind Redis. */
  realtime?: boolean;
}

/** Nearest-rank percentiles of `values` (ms). */
export function percentiles(values: readonly number[]): Percentiles {
  const sorted = values.toSorted((a, b) => a - b);
  const at = (q: number) =>
    sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? NaN;
  return {
    samples: sorted.length,
    p50Ms: at(0.5),
    p99Ms: at(0.99),
    p999Ms: at(0.999),
    maxMs: sorted.at(-1) ?? NaN,
  };
}

/**
 * The schedule and the bookkeeping, without I/O (unit-tested with a fake clock). Request `i` is
 * scheduled at `start + i * intervalMs` and goes to connection `i % connections`; replies on a
 * connection arrive in request order.
 */
export class OpenLoopSchedule {
  readonly latencies: number[] = [];
  readonly sendLags: number[] = [];
  #next = 0;
  #pending: number[][];

  constructor(readonly start: number, readonly intervalMs: number, readonly connections: number) {
    this.#pending = Array.from({ length: connections }, () => []);
  }

  /** Requests that fell due so far. */
  get due(): number {
    return this.#next;
  }

  /** Scheduled time of request `i`. */
  scheduledAt(i: number): number {
    return this.start + i * this.intervalMs;
  }

  /** Time the next request falls due. */
  nextDue(): number {
    return this.scheduledAt(this.#next);
  }

  /**
   * Every request due at `now` that was not yet taken, as `[index, connection]` pairs, in order:
   * after a stall of the client these are several at once (all sent immediately).
   */
  take(now: number): [number, number][] {
    const out: [number, number][] = [];
    while (this.nextDue() <= now) {
      const i = this.#next++;
      const conn = i % this.connections;
      this.#pending[conn]!.push(this.scheduledAt(i));
      this.sendLags.push(now - this.scheduledAt(i));
      out.push([i, conn]);
    }
    return out;
  }

  /** A reply arrived on `conn` at `now`: its latency counts from the oldest pending schedule. */
  reply(conn: number, now: number): void {
    const scheduled = this.#pending[conn]!.shift();
    if (scheduled === undefined) throw new Error(`reply on connection ${conn} with none pending`);
    this.latencies.push(now - scheduled);
  }

  /** Requests still waiting for a reply. */
  outstanding(): number {
    return this.#pending.reduce((sum, q) => sum + q.length, 0);
  }

  /** Counts every unanswered request with its wait until `now`; returns how many there were. */
  closeAt(now: number): number {
    let n = 0;
    for (const queue of this.#pending) {
      for (const scheduled of queue.splice(0)) {
        this.latencies.push(now - scheduled);
        n++;
      }
    }
    return n;
  }
}

/**
 * Counts complete RESP replies in a byte stream (simple strings, errors, integers, bulk strings:
 * what GET, SET and PING return). Returns [replies, errors, bytes consumed].
 */
export function countReplies(buf: Uint8Array): [number, number, number] {
  let pos = 0, replies = 0, errors = 0;
  for (;;) {
    const eol = buf.indexOf(10, pos);
    if (eol < 0) break;
    const type = buf[pos];
    let end = eol + 1;
    if (type === 36) { // '$' bulk string
      const len = Number(new TextDecoder().decode(buf.subarray(pos + 1, eol - 1)));
      if (len >= 0) {
        end = eol + 1 + len + 2;
        if (end > buf.length) break;
      }
    } else if (type === 45) errors++; // '-'
    replies++;
    pos = end;
  }
  return [replies, errors, pos];
}

const encoder = new TextEncoder();

/** The RESP bytes of request `i`: alternately SET and GET on 1,000 app keys, or PING. */
function request(command: string, i: number): Uint8Array {
  if (command === "ping") return encoder.encode("PING\r\n");
  const key = `app:openloop:${i % 1000}`;
  const line = i % 2 === 0
    ? `*3\r\n$3\r\nSET\r\n$${key.length}\r\n${key}\r\n$8\r\nxxxxxxxx\r\n`
    : `*2\r\n$3\r\nGET\r\n$${key.length}\r\n${key}\r\n`;
  return encoder.encode(line);
}

/** Runs the open-loop client against 127.0.0.1:`port` until `durationMs` or `signal`. */
export async function openLoop(options: {
  port: number;
  intervalMs: number;
  connections: number;
  durationMs: number;
  command: string;
  signal?: AbortSignal;
}): Promise<OpenLoopStats> {
  const conns = await Promise.all(
    Array.from(
      { length: options.connections },
      () => Deno.connect({ hostname: "127.0.0.1", port: options.port }),
    ),
  );
  for (const c of conns) c.setNoDelay(true);
  const schedule = new OpenLoopSchedule(nowAbs() + 20, options.intervalMs, options.connections);
  const end = schedule.start + options.durationMs;
  let errors = 0;
  let stopped = false;
  let finish!: () => void;
  const finished = new Promise<void>((resolve) => finish = resolve);
  const fire = () => {
    if (stopped) return;
    const now = nowAbs();
    if (now >= end || options.signal?.aborted) {
      stopped = true;
      finish();
      return;
    }
    for (const [i, conn] of schedule.take(now)) {
      conns[conn]!.write(request(options.command, i)).catch(() => errors++);
    }
    ticker.set(schedule.nextDue());
  };
  const ticker = new Ticker(fire);
  options.signal?.addEventListener("abort", () => fire());
  const readers = conns.map(async (conn, index) => {
    let buf = new Uint8Array(0);
    const chunk = new Uint8Array(64 * 1024);
    for (;;) {
      const n = await conn.read(chunk).catch(() => null);
      if (n === null) return;
      const now = nowAbs();
      const joined = new Uint8Array(buf.length + n);
      joined.set(buf);
      joined.set(chunk.subarray(0, n), buf.length);
      const [replies, errs, used] = countReplies(joined);
      errors += errs;
      for (let k = 0; k < replies; k++) schedule.reply(index, now);
      buf = joined.slice(used);
    }
  });
  ticker.set(schedule.nextDue());
  await finished;
  ticker.close();
  // Wait up to 2 s for the replies still in flight; what is left counts with its wait.
  const drainUntil = nowAbs() + 2000;
  while (schedule.outstanding() > 0 && nowAbs() < drainUntil) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const unanswered = schedule.closeAt(nowAbs());
  for (const c of conns) c.close();
  await Promise.all(readers);
  return {
    ...percentiles(schedule.latencies),
    intervalMs: options.intervalMs,
    connections: options.connections,
    command: options.command,
    due: schedule.due,
    unanswered,
    errors,
    sendLag: percentiles(schedule.sendLags),
  };
}

/** An open-loop client process in flight. */
export interface OpenLoopClient {
  /** Stops it (closes its stdin) and returns what it measured. */
  stop(): Promise<OpenLoopStats>;
}

/** The C build of this client (bench/open_loop.c), compiled once per bench process. */
let nativeBuild: Promise<string | undefined> | undefined;

/**
 * The path of the C client, compiled with the system's `cc` into a temp dir; undefined when there
 * is no compiler (the Deno client is used then, and its stats say `prober: "deno"`).
 */
function nativeProber(): Promise<string | undefined> {
  nativeBuild ??= (async () => {
    const source = decodeURIComponent(new URL("./open_loop.c", import.meta.url).pathname);
    const dir = await Deno.makeTempDir({ prefix: "bench-open-loop-" });
    const binary = `${dir}/open_loop`;
    try {
      const { code } = await new Deno.Command("cc", {
        args: ["-O2", "-o", binary, source],
        stdout: "null",
        stderr: "inherit",
      }).output();
      return code === 0 ? binary : undefined;
    } catch {
      return undefined; // no cc on PATH
    }
  })();
  return nativeBuild;
}

/** Whether `chrt -f` works here (root, or CAP_SYS_NICE), tried once per bench process. */
let realtimeCheck: Promise<boolean> | undefined;

/**
 * The prober runs under SCHED_FIFO where the host allows it. It shares Redis's core, and while
 * Redis keeps that core busy, an ordinary process waits for the scheduler (a millisecond or more)
 * before it can read a reply or send on schedule: that wait is the prober's, not Redis's. A
 * real-time prober takes the core at once when it wakes; it needs a few percent of it.
 */
function realtime(): Promise<boolean> {
  realtimeCheck ??= new Deno.Command("chrt", { args: ["-f", "50", "true"], stderr: "null" })
    .output().then(({ code }) => code === 0, () => false);
  return realtimeCheck;
}

/** The C client's JSON line, in the shape of {@linkcode OpenLoopStats}. */
function fromNative(line: string): OpenLoopStats {
  const { latency, ...rest } = JSON.parse(line) as
    & { latency: Percentiles }
    & Omit<
      OpenLoopStats,
      keyof Percentiles
    >;
  return { ...latency, ...rest };
}

/**
 * Starts the open-loop client as its own process, on core `cpu` when given: the C build where a
 * compiler is at hand (its idle p99 is ~0.1 ms), else this module under Deno.
 */
export function startOpenLoop(port: number, options: {
  cpu?: number;
  intervalMs?: number;
  connections?: number;
  command?: "get-set" | "ping";
  durationMs?: number;
} = {}): OpenLoopClient {
  const args = [
    "--port",
    String(port),
    "--interval-ms",
    String(options.intervalMs ?? 1),
    "--connections",
    String(options.connections ?? 4),
    "--command",
    options.command ?? "get-set",
    "--duration-ms",
    String(options.durationMs ?? 3_600_000),
    "--stop-on-stdin-close",
  ];
  const started = (async () => {
    const native = await nativeProber();
    const script = decodeURIComponent(new URL(import.meta.url).pathname);
    const program = native
      ? [native, ...args]
      : [Deno.execPath(), "run", "-q", "-A", script, ...args];
    const [cmd, ...rest] = options.cpu === undefined
      ? program
      : ["taskset", "-c", String(options.cpu), ...program];
    const child = spawnTracked(
      new Deno.Command(cmd!, { args: rest, stdin: "piped", stdout: "piped", stderr: "inherit" }),
    );
    return { child, output: child.output(), native: native !== undefined };
  })();
  return {
    async stop() {
      const { child, output, native } = await started;
      await child.stdin.close().catch(() => {});
      const { stdout, code } = await output;
      const text = new TextDecoder().decode(stdout);
      if (code !== 0) throw new Error(`open-loop client exited ${code}: ${text}`);
      const stats = native
        ? fromNative(text)
        : { ...JSON.parse(text) as OpenLoopStats, prober: "deno" as const };
      return { ...stats, realtime: await realtime() };
    },
  };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    strict: true,
    options: {
      port: { type: "string" },
      "interval-ms": { type: "string", default: "1" },
      connections: { type: "string", default: "4" },
      "duration-ms": { type: "string", default: "10000" },
      command: { type: "string", default: "get-set" },
      "stop-on-stdin-close": { type: "boolean", default: false },
    },
  });
  const stop = new AbortController();
  if (values["stop-on-stdin-close"]) {
    // Stdin closing (the bench calling stop()) ends the run early.
    (async () => {
      for await (const _ of Deno.stdin.readable) { /* nothing is sent */ }
      stop.abort();
    })();
  }
  const stats = await openLoop({
    port: Number(values.port),
    intervalMs: Number(values["interval-ms"]),
    connections: Number(values.connections),
    durationMs: Number(values["duration-ms"]),
    command: values.command === "ping" ? "ping" : "get-set",
    signal: stop.signal,
  });
  Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(stats) + "\n"));
  Deno.exit(0);
}
