/**
 * A script call's own Redis time: the one clock every bound on a call's Redis time is sized from
 * (the backfill's keys per call, call_size.ts; a SCAN's COUNT, scanner.ts; `verify --full`'s
 * calls), and the one measure of a node's round trip ({@linkcode roundTripMs}).
 *
 * `redis.call('TIME')` advances inside a running script on Redis 7.0, so a script wrapped by
 * {@linkcode timedScript} reads it at its start and end and returns the elapsed microseconds with
 * its result ({@linkcode decodeTimed} splits the reply): the time the call held Redis, without the
 * network round trip or the client's queueing. Effects replication (the default since Redis 5)
 * allows TIME before writes, and `no-writes` scripts may call it too.
 *
 * Only a server that lets time pass inside a script answers a second TIME with a later time. Redis
 * 7.2 freezes time for the whole script (redis/redis#10300): two TIME calls around a million PINGs
 * return the same value (redis/redis#12556), and some managed services refuse TIME in scripts.
 * There every call reads 0 µs and each bound falls away: a backfill call grows to its 100-key
 * guard, a SCAN to `--batch`, and a `verify --full` call never stops early by its own clock.
 *
 * So each node is probed when its scripts load: a script reads TIME up to 300 times and says
 * whether it ever moved. Where it did not, the client estimates what its calls cost Redis. A
 * reply's busy time is its arrival less the later of two moments: the send plus one round trip
 * ({@linkcode roundTripMs}), and the previous reply's arrival on the same connection (Redis runs a
 * connection's calls in order, so a call queued behind another started when that one ended).
 * Per call that split is wrong where calls were pipelined: Redis runs every call it read at once
 * and writes their replies together, so the first reply carries the whole burst's time and the
 * others almost none. So a call is charged its units (keys, or SCAN COUNT) at the rate of the last
 * {@linkcode RATE_WINDOW} replies: their busy time over their units, a window as deep as the most
 * calls in flight. The busy time also counts other clients' commands that Redis ran in between,
 * and the client's own delays, so the estimate errs long: calls come out smaller, never larger.
 *
 * @module
 */
import type { Redis } from "../redis/ioredis.ts";
import type { Logger } from "../run_events.ts";

/** Whose clock times a call: the script's TIME, or the client's estimate. */
export type CallClockSource = "script" | "client";

/** `--call-clock`: probe each node (`auto`), or always time calls on the client. */
export type CallClockMode = "auto" | "client";

/**
 * Reads TIME until it moves (at most 300 times, ~150 µs where it never does). Replies how many
 * readings it took, 0 when time stood still, -1 when TIME is refused. No flags line, so it runs on
 * Redis 6.2 too.
 */
const PROBE_SCRIPT = `local ok, t0 = pcall(redis.call, "TIME")
if not ok then return -1 end
for i = 1, 300 do
  local t = redis.call("TIME")
  if t[1] ~= t0[1] or t[2] ~= t0[2] then return i end
end
return 0`;

/**
 * Logs once which of `target`'s masters time their calls on the client, and why; nothing when
 * none does.
 */
export async function logClientClocks(
  target: { masters(): Redis[]; nodeName(node: Redis): string },
  clockOf: (node: Redis) => Promise<CallClock>,
  logger: Logger,
  mode: CallClockMode | undefined,
): Promise<void> {
  const nodes: string[] = [];
  for (const node of target.masters()) {
    if ((await clockOf(node)).source === "client") nodes.push(target.nodeName(node));
  }
  if (nodes.length === 0) return;
  const why = mode === "client"
    ? "--call-clock client"
    : "time stands still inside a script on this server: Redis 7.2 and newer";
  logger.log(
    "info",
    "call_clock",
    `script calls on ${nodes.length} master(s) are timed on the client (${why}): a call's Redis ` +
      `time is its round trip less the network's, which errs long, so calls come out smaller`,
    { source: "client", nodes },
  );
}

/** The microseconds of a monotonic client clock. */
function nowUs(): number {
  return performance.now() * 1000;
}

/** Replies whose busy time and units make the client's rate (the deepest call window). */
const RATE_WINDOW = 16;

/** Times one node's script calls (see the module comment). */
export class CallClock {
  /** Whose clock times the calls. */
  readonly source: CallClockSource;
  /** The node's fastest round trip, µs: the network's share of a call's round trip. */
  readonly roundTripUs: number;
  #lastReplyUs = 0;
  /** The last replies' busy µs and units (ring buffers of {@linkcode RATE_WINDOW}). */
  readonly #busy: number[] = [];
  readonly #units: number[] = [];
  #next = 0;
  readonly #now: () => number;

  /** `now`: the client's monotonic clock in µs (a fake one in a unit test). */
  constructor(source: CallClockSource, roundTripUs = 0, now: () => number = nowUs) {
    this.source = source;
    this.roundTripUs = Math.max(0, roundTripUs);
    this.#now = now;
  }

  /**
   * Runs `call` of `units` (keys, or SCAN COUNT) and returns its value with the call's own Redis
   * time in µs: what `scriptMicros` reads from the reply, or the client's estimate when the
   * script's clock stands still.
   */
  async time<T>(
    call: () => Promise<T>,
    scriptMicros: (value: T) => number,
    units: number,
  ): Promise<{ value: T; micros: number }> {
    const sent = this.#now();
    const value = await call();
    if (this.source === "script") return { value, micros: scriptMicros(value) };
    const arrived = this.#now();
    const started = Math.max(sent + this.roundTripUs, this.#lastReplyUs);
    this.#lastReplyUs = arrived;
    this.#busy[this.#next] = Math.max(0, arrived - started);
    this.#units[this.#next] = Math.max(1, units);
    this.#next = (this.#next + 1) % RATE_WINDOW;
    const rate = sum(this.#busy) / sum(this.#units);
    return { value, micros: Math.max(1, rate * Math.max(1, units)) };
  }
}

function sum(values: readonly number[]): number {
  return values.reduce((total, value) => total + value, 0);
}

/**
 * Probes `node` (see the module comment) and returns the clock to time its calls with. In
 * `client` mode the probe is skipped and the calls are timed on the client.
 */
export async function probeCallClock(
  node: Redis,
  mode: CallClockMode = "auto",
): Promise<CallClock> {
  const roundTripUs = await roundTripMs(node) * 1000;
  if (mode === "client") return new CallClock("client", roundTripUs);
  const moves = Number(await node.eval(PROBE_SCRIPT, 0));
  return new CallClock(moves > 0 ? "script" : "client", roundTripUs);
}

/**
 * The one measure of a node's round trip, ms: the fastest of 5 PINGs, the network's own share
 * without any queueing (in Redis or in the client). Both of its uses err safe with the fastest: the
 * call window covers the round trip with no more calls than needed (call_window.ts), and a call
 * timed on the client is charged its whole round trip less this, so it errs long.
 */
export async function roundTripMs(node: { ping(): Promise<unknown> }): Promise<number> {
  let fastest = Infinity;
  for (let i = 0; i < 5; i++) {
    const sent = performance.now();
    await node.ping();
    fastest = Math.min(fastest, performance.now() - sent);
  }
  return fastest;
}

/**
 * Wraps a Lua script body so it returns `{elapsed_microseconds, result}`. A `#!lua` shebang line
 * (script flags) stays the first line. The body runs in a closure, so its `return` is the result.
 *
 * @example
 * ```ts
 * import { timedScript } from "./call_clock.ts";
 * const lua = timedScript("return redis.call('GET', KEYS[1])");
 * ```
 */
export function timedScript(body: string): string {
  const newline = body.indexOf("\n");
  if (body.startsWith("#!") && newline < 0) throw new RangeError("a shebang line needs a body");
  const shebang = body.startsWith("#!") ? body.slice(0, newline + 1) : "";
  const rest = body.slice(shebang.length);
  return `${shebang}local __t0 = redis.call('TIME')
local __result = (function()
${rest}
end)()
local __t1 = redis.call('TIME')
return {(tonumber(__t1[1]) - tonumber(__t0[1])) * 1000000 + tonumber(__t1[2]) - tonumber(__t0[2]), __result}
`;
}

/** A decoded reply of a {@linkcode timedScript}. */
export interface TimedReply<T> {
  /** Redis time the script took, in microseconds. */
  micros: number;
  /** The body's return value (`null` when it returned nil or false: Lua drops them from arrays). */
  result: T | null;
}

/**
 * Splits a {@linkcode timedScript} reply.
 *
 * @throws {TypeError} when the reply is not `[integer, result?]`.
 */
export function decodeTimed<T>(reply: unknown): TimedReply<T> {
  if (!Array.isArray(reply) || typeof reply[0] !== "number" || reply.length > 2) {
    throw new TypeError("not the reply of a timed script");
  }
  return { micros: reply[0], result: reply.length === 2 ? reply[1] as T : null };
}
