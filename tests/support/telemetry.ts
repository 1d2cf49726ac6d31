/**
 * Helpers for the telemetry tests: a Prometheus text parser, a fake clock, batch builders and a
 * stand-in Pushgateway (a real HTTP server on 127.0.0.1).
 *
 * @module
 */
import { type Counters, countResults, emptyCounters, type KeyResult } from "../../src/outcome.ts";
import type { BatchReport, Summary } from "../../src/run_events.ts";
import type { TimerClock as Clock, TimerHandle } from "../../src/async/clock.ts";

/** One sample of a scrape. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the samples of Prometheus text format (enough for prom-client's output). */
export function parseSamples(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) throw new Error(`unparsable sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1]!] = pair[2]!.replace(/\\(.)/g, (_m, c: string) => (c === "n" ? "\n" : c));
    }
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

/** Sum of the samples named `name` whose labels include every pair of `labels`. */
export function sumOf(text: string, name: string, labels: Record<string, string> = {}): number {
  return parseSamples(text)
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

/** The `# TYPE` of a metric family, or undefined. */
export function typeOf(text: string, name: string): string | undefined {
  return new RegExp(`^# TYPE ${name} (\\w+)$`, "m").exec(text)?.[1];
}

/** Distinct values of one label among the samples of `name`. */
export function labelValues(text: string, name: string, label: string): string[] {
  const values = new Set<string>();
  for (const s of parseSamples(text)) {
    if (s.name === name && s.labels[label] !== undefined) values.add(s.labels[label]!);
  }
  return [...values].sort();
}

/** Removes ANSI escape sequences. */
export function stripAnsi(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/\x1b\[[0-9;]*[A-Za-z]/g, "");
}

/** A clock that only moves when told to; its timers fire during {@linkcode FakeClock.advance}. */
export class FakeClock implements Clock {
  #now: number;
  #timers = new Map<number, { at: number; fn: () => void }>();
  #nextId = 1;

  constructor(start = 1_700_000_000_000) {
    this.#now = start;
  }
  now(): number {
    return this.#now;
  }
  setTimeout(fn: () => void, ms: number): TimerHandle {
    const id = this.#nextId++;
    this.#timers.set(id, { at: this.#now + Math.max(0, ms), fn });
    return id;
  }
  clearTimeout(handle: TimerHandle): void {
    this.#timers.delete(handle as number);
  }
  /** Timers not yet fired or cleared. */
  get pending(): number {
    return this.#timers.size;
  }
  /** Moves time forward by `ms`, firing due timers in order at their own time. */
  advance(ms: number): void {
    const end = this.#now + ms;
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const entry of this.#timers) {
        if (entry[1].at <= end && (next === undefined || entry[1].at < next[1].at)) next = entry;
      }
      if (next === undefined) break;
      this.#timers.delete(next[0]);
      this.#now = next[1].at;
      next[1].fn();
    }
    this.#now = end;
  }
}

/** Builds consecutive batch reports with running totals. */
export class BatchFeed {
  readonly totals: Counters = emptyCounters();
  constructor(public estimatedTotal = 0) {}
  /** The next batch: `results` added to the running totals. */
  next(results: KeyResult[], seconds = 0.05): BatchReport {
    countResults(this.totals, results);
    return {
      node: "127.0.0.1:6379",
      results,
      seconds,
      totals: { ...this.totals },
      estimatedTotal: this.estimatedTotal,
    };
  }
  /** A summary of everything fed so far. */
  summary(completed = true): Summary {
    return {
      ...this.totals,
      mode: "execute",
      duration_seconds: 1.5,
      completed,
      cursor: completed ? "0" : "42",
    };
  }
}

/** `n` results with the same outcome and workspace. */
export function results(n: number, outcome: KeyResult["outcome"], workspace?: string): KeyResult[] {
  return Array.from({ length: n }, () => ({ outcome, workspace }));
}

/** A request as the stand-in Pushgateway received it. */
export interface ReceivedPush {
  method: string;
  /** Raw path, percent-encoding kept. */
  path: string;
  headers: Headers;
  body: string;
}

/** A stand-in Pushgateway: records requests, answers with `status` (or what `respond` returns). */
export interface FakePushgateway {
  url: string;
  port: number;
  requests: ReceivedPush[];
  close(): Promise<void>;
}

/** Starts a stand-in Pushgateway on 127.0.0.1 with a free port. */
export function startFakePushgateway(
  respond: (push: ReceivedPush) => Response | Promise<Response> = () =>
    new Response("", { status: 200 }),
): FakePushgateway {
  const requests: ReceivedPush[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    const url = new URL(request.url);
    const push = {
      method: request.method,
      path: url.pathname,
      headers: request.headers,
      body: await request.text(),
    };
    requests.push(push);
    return await respond(push);
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    port: server.addr.port,
    requests,
    close: () => server.shutdown(),
  };
}

/** True when nothing accepts TCP connections on 127.0.0.1:`port`. */
export async function portIsClosed(port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.close();
    return false;
  } catch (error: unknown) {
    if (error instanceof Deno.errors.ConnectionRefused) return true;
    throw error;
  }
}

/**
 * The real clock with a count of live timers. Deno's test sanitizers do not report a pending
 * `setTimeout`, so tests that use real time check {@linkcode TrackingClock.pending} instead.
 */
export class TrackingClock implements Clock {
  #live = new Set<ReturnType<typeof setTimeout>>();
  now(): number {
    return Date.now();
  }
  setTimeout(fn: () => void, ms: number): TimerHandle {
    const id = setTimeout(() => {
      this.#live.delete(id);
      fn();
    }, ms);
    this.#live.add(id);
    return id;
  }
  clearTimeout(handle: TimerHandle): void {
    const id = handle as ReturnType<typeof setTimeout>;
    clearTimeout(id);
    this.#live.delete(id);
  }
  /** Timers started and neither fired nor cleared. */
  get pending(): number {
    return this.#live.size;
  }
}

export { freePort } from "./redis_server.ts";
