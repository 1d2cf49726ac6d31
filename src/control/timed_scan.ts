/**
 * SCAN with a time budget. `SCAN … COUNT n` visits about n hash-table buckets in one command, and on
 * a store holding both schemas each visit matches keys that MATCH then drops: measured on Redis
 * 7.0, COUNT 500 held Redis for ~1 ms per call, four times the `--max-call-ms` a script call gets.
 * So the SCAN runs inside a small script that reports its own Redis time (control/call_clock.ts),
 * and the COUNT of the next SCAN is sized from the cost per bucket so far, like a script call's
 * keys. The script has no flags line, so it also runs on Redis 6.2 and on a replica (it only reads).
 *
 * @module
 */
import { classify } from "../redis/errors.ts";
import { checkScanCursor } from "../redis/fence.ts";
import type { Redis } from "../redis/ioredis.ts";
import type { ScanPage, SizedScanner } from "../redis/scan.ts";
import {
  CallClock,
  type CallClockMode,
  decodeTimed,
  probeCallClock,
  timedScript,
} from "./call_clock.ts";
import { CallSizer } from "./call_size.ts";

const SCAN_SCRIPT = timedScript(
  "return redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])",
);

/** Buckets of the first SCAN, before anything is measured. */
const COLD_START_COUNT = 50;

/** Options of {@linkcode TimedScan}. */
export interface TimedScanOptions {
  /** `--max-call-ms`: the Redis time one SCAN may take. Default 0.25. */
  maxCallMs?: number;
  /** The largest COUNT (`--batch`): a guard, as the 100-key cap is for script calls. */
  maxCount: number;
  /** `--call-clock`: `auto` (probe the server) or `client` (see call_clock.ts). */
  callClock?: CallClockMode;
}

/** SCANs one node with COUNTs sized to the time budget. */
export class TimedScan implements SizedScanner {
  readonly #node: Redis;
  readonly #sizer: CallSizer;
  readonly #clockMode: CallClockMode;
  #clock = new CallClock("script");
  #sha = "";

  constructor(node: Redis, options: TimedScanOptions) {
    this.#node = node;
    this.#sizer = new CallSizer({
      maxCallMs: options.maxCallMs,
      maxKeys: options.maxCount,
      coldStartKeys: COLD_START_COUNT,
    });
    this.#clockMode = options.callClock ?? "auto";
  }

  /** The COUNT the next SCAN will ask for. */
  nextCount(): number {
    return this.#sizer.nextCount();
  }

  /** One SCAN from `cursor`; `match` as SCAN's MATCH; `count` (default: what fits the budget). */
  async scan(cursor: string, match: string, count = this.#sizer.nextCount()): Promise<ScanPage> {
    // A cursor belongs to one server process: the fence refuses one carried to another (fence.ts).
    await checkScanCursor(this.#node, cursor);
    const reply = await this.#call(cursor, match, count);
    const { result } = decodeTimed<ScanPage>(reply.value);
    this.#sizer.record({ keys: count, micros: reply.micros });
    if (result === null) throw new TypeError("SCAN returned nothing");
    return result;
  }

  async #call(
    cursor: string,
    match: string,
    count: number,
  ): Promise<{ value: unknown; micros: number }> {
    const args = [0, cursor, match, String(count)];
    if (this.#sha === "") this.#sha = await this.#load();
    const timed = () =>
      this.#clock.time(
        () => this.#node.callBuffer("EVALSHA", this.#sha, ...args),
        (reply) => decodeTimed(reply).micros,
        count,
      );
    try {
      return await timed();
    } catch (error) {
      // The script cache is empty after a restart or failover: load again, once.
      if (classify(error).kind !== "noscript") throw error;
      this.#sha = await this.#load();
      return await timed();
    }
  }

  /** Loads the script, and probes whose clock times it (again after a failover). */
  async #load(): Promise<string> {
    this.#clock = await probeCallClock(this.#node, this.#clockMode);
    return await this.#node.script("LOAD", SCAN_SCRIPT) as string;
  }
}
