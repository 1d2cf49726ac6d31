/**
 * A script call's own Redis time: the one clock every bound on a call's Redis time is sized from,
 * and the one measure of a node's round trip ({@linkcode roundTripMs}).
 *
 * On Redis 7.0 `redis.call('TIME')` advances inside a script, so {@linkcode timedScript} reads it
 * at the start and end and returns the elapsed µs with the result: the time the call held Redis,
 * without the network or the client's queueing (effects replication allows TIME before writes).
 * Redis 7.2 freezes time inside a script and some managed services refuse TIME there, so each
 * node is probed when its scripts load. Where TIME does not move, the client estimates: a reply's
 * busy time is its arrival less the later of (send + round trip) and the previous reply's arrival
 * (a connection's calls run in order). Pipelined calls finish in bursts, so a call is charged its
 * units at the rate of the last {@linkcode RATE_WINDOW} replies. That busy time also counts other
 * clients' commands and client delays: it errs long, so calls come out smaller, never larger.
 *
 * @module
 */
import type { Redis } from "../redis/ioredis.ts";
import type { Logger } from "../run_events.ts";

/** `--call-clock`: probe each node (`auto`), or always time calls on the client. */
export type CallClockMode = "auto" | "client";

/**
 * Reads TIME until it moves (at most 300 times): how many readings it took, 0 when time stood
 * still, -1 when TIME is refused. No flags line, so it runs on Redis 6.2 too.
 */
const PROBE_SCRIPT = `local ok, t0 = pcall(redis.call, "TIME")
if not ok then return -1 end
for i = 1, 300 do
  local t = redis.call("TIME")
  if t[1] ~= t0[1] or t[2] ~= t0[2] then return i end
end
return 0`;

/** Logs once which of `target`'s masters time their calls on the client, and why. */
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

function nowUs(): number {
  return performance.now() * 1000;
}

/** Replies whose busy time and units make the client's rate: the deepest call window. */
const RATE_WINDOW = 16;

/** Times one node's script calls (see the module comment). */
export class CallClock {
  /** Whose clock times a call: the script's TIME, or the client's estimate. */
  readonly source: "script" | "client";
  /** The node's fastest round trip, µs: the network's share of a call's round trip. */
  readonly roundTripUs: number;
  #lastReplyUs = 0;
  /** Ring buffers of the last replies' busy µs and units. */
  readonly #busy: number[] = [];
  readonly #units: number[] = [];
  #next = 0;
  readonly #now: () => number;

  /** `now`: the client's monotonic clock in µs (a fake one in a unit test). */
  constructor(source: CallClock["source"], roundTripUs = 0, now: () => number = nowUs) {
    this.source = source;
    this.roundTripUs = Math.max(0, roundTripUs);
    this.#now = now;
  }

  /**
   * Runs `call` of `units` (keys, or SCAN COUNT); returns its value and Redis time in µs, read by
   * `scriptMicros` from the reply or estimated on the client.
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

/** Probes `node` for the clock to time its calls with (`client` mode skips the probe). */
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
 * A node's round trip, ms: the fastest of 5 PINGs, the network's share without queueing. Both
 * uses err safe with the fastest: no more calls in flight than needed, and client timing errs long.
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
 * stays first; the body runs in a closure, so its `return` is the result.
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

/**
 * Splits a {@linkcode timedScript} reply; `result` is `null` when the body returned nil or false
 * (Lua drops them from arrays).
 *
 * @throws {TypeError} when the reply is not `[integer, result?]`.
 */
export function decodeTimed<T>(reply: unknown): { micros: number; result: T | null } {
  if (!Array.isArray(reply) || typeof reply[0] !== "number" || reply.length > 2) {
    throw new TypeError("not the reply of a timed script");
  }
  return { micros: reply[0], result: reply.length === 2 ? reply[1] as T : null };
}
