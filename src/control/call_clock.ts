/**
 * Where a script call's own Redis time comes from. Every bound on a call's Redis time is sized from
 * it: the backfill's keys per call (call_size.ts), a SCAN's COUNT (timed_scan.ts) and
 * `verify --full`'s sub-batches.
 *
 * A script reads TIME at its start and end (script_clock.ts), but only a server that lets time pass
 * inside a script answers a second TIME with a later time. Redis 7.0 does. Redis 7.2 freezes time
 * for the whole script (redis/redis#10300): two TIME calls around a million PINGs return the same
 * value (redis/redis#12556), and some managed services refuse TIME in scripts. There every call
 * reads 0 µs and each bound falls away. A backfill call grows to its 100-key guard, a SCAN to
 * `--batch`, and a `verify --full` call never stops early by its own clock.
 *
 * So each node is probed when its scripts load: a script reads TIME up to 300 times and says
 * whether it ever moved. Where it did not, the client estimates what its calls cost Redis. A
 * reply's busy time is its arrival less the later of two moments: the send plus one round trip
 * (the node's fastest PING), and the previous reply's arrival on the same connection (Redis runs a
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
export const RATE_WINDOW = 16;

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

  constructor(source: CallClockSource, roundTripUs = 0) {
    this.source = source;
    this.roundTripUs = Math.max(0, roundTripUs);
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
    const sent = nowUs();
    const value = await call();
    if (this.source === "script") return { value, micros: scriptMicros(value) };
    const arrived = nowUs();
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
  const roundTripUs = await fastestPingUs(node);
  if (mode === "client") return new CallClock("client", roundTripUs);
  const moves = Number(await node.eval(PROBE_SCRIPT, 0));
  return new CallClock(moves > 0 ? "script" : "client", roundTripUs);
}

/** The fastest of a few PINGs on `node`, µs. */
async function fastestPingUs(node: Redis, samples = 5): Promise<number> {
  let fastest = Infinity;
  for (let i = 0; i < samples; i++) {
    const sent = nowUs();
    await node.ping();
    fastest = Math.min(fastest, nowUs() - sent);
  }
  return fastest;
}
