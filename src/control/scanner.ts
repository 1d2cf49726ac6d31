/**
 * SCAN over one node as an async generator of batches; the next SCAN is on the wire while the
 * caller processes the current one. On a store holding both schemas a fixed COUNT can hold Redis
 * far longer than `--max-call-ms`, so the SCAN runs inside a timed script (call_clock.ts) and its
 * COUNT is sized like a script call's keys. The script has no flags line, so it runs on Redis 6.2
 * and on a replica.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import { isScriptMissing } from "../redis/errors.ts";
import { checkScanCursor } from "../redis/fence.ts";
import type { Redis } from "../redis/ioredis.ts";
import {
  CallClock,
  type CallClockMode,
  decodeTimed,
  probeCallClock,
  timedScript,
} from "./call_clock.ts";
import { CallSizer } from "./call_size.ts";

/** One SCAN reply: read from `cursor`, `next` "0" when complete. */
export interface ScanBatch {
  cursor: string;
  next: string;
  keys: Buffer[];
  /** The COUNT asked for (a re-read asks for it again). */
  count: number;
}

type ScanPage = [next: Buffer | string, keys: Buffer[]];

/** Options for {@linkcode scanBatches}. */
export interface ScanOptions {
  match: string;
  /** Default "0". */
  cursor?: string;
  /** The first SCAN's COUNT (re-reading a batch as it was read). */
  firstCount?: number;
}

/** Yields SCAN batches from `options.cursor` until the cursor returns to "0". */
export async function* scanBatches(
  scanner: TimedScan,
  options: ScanOptions,
): AsyncGenerator<ScanBatch> {
  const scan = (cursor: string, count = scanner.nextCount()): Promise<ScanBatch> =>
    scanner.scan(cursor, options.match, count)
      .then(([next, keys]) => ({ cursor, next: next.toString(), keys, count }));
  let pending = scan(options.cursor ?? "0", options.firstCount);
  for (;;) {
    const batch = await pending;
    if (batch.next !== "0") {
      pending = scan(batch.next);
      // If the consumer stops early this prefetch is dropped; keep its rejection from going unhandled.
      pending.catch(() => {});
    }
    yield batch;
    if (batch.next === "0") return;
  }
}

const SCAN_SCRIPT = timedScript(
  "return redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])",
);

/** Buckets of the first SCAN, before anything is measured. */
const COLD_START_COUNT = 50;

/** Options of {@linkcode TimedScan}. */
export interface TimedScanOptions {
  /** `--max-call-ms`. Default 0.25. */
  maxCallMs?: number;
  /** `--batch`: a guard, as the 100-key cap is for script calls. */
  maxCount: number;
  callClock?: CallClockMode;
  /** The node's call window: SCANs share the connection, so Redis's input buffer, with calls. */
  window?: { acquire(): Promise<() => void> };
}

/** SCANs one node with COUNTs sized to the time budget. */
export class TimedScan {
  readonly #node: Redis;
  readonly #sizer: CallSizer;
  readonly #clockMode: CallClockMode;
  readonly #window: TimedScanOptions["window"];
  #clock = new CallClock("script");
  #sha = "";

  constructor(node: Redis, options: TimedScanOptions) {
    this.#node = node;
    this.#window = options.window;
    this.#sizer = new CallSizer({
      maxCallMs: options.maxCallMs,
      maxKeys: options.maxCount,
      coldStartKeys: COLD_START_COUNT,
    });
    this.#clockMode = options.callClock ?? "auto";
  }

  nextCount(): number {
    return this.#sizer.nextCount();
  }

  /** One SCAN from `cursor`; {@linkcode nextCount} is what fits the budget. */
  async scan(cursor: string, match: string, count: number): Promise<ScanPage> {
    const release = await this.#window?.acquire() ?? (() => {});
    try {
      // A cursor belongs to one server process: the fence refuses one carried to another (fence.ts).
      await checkScanCursor(this.#node, cursor);
      const reply = await this.#call(cursor, match, count);
      const { result } = decodeTimed<ScanPage>(reply.value);
      this.#sizer.record({ keys: count, micros: reply.micros });
      if (result === null) throw new TypeError("SCAN returned nothing");
      return result;
    } finally {
      release();
    }
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
      if (!isScriptMissing(error)) throw error;
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
