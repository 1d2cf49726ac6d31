/**
 * What one node's scan sends, bounded in Redis time: SCANs whose COUNT is sized to `--max-call-ms`
 * (control/timed_scan.ts), and a window of calls in flight (its script calls and its SCANs) that
 * covers one round trip and no more, nor more than `--max-latency` allows (control/call_window.ts). Both are made afresh each time a node's scan starts, so a node
 * that came back after an outage is measured again.
 *
 * @module
 */
import { CallWindow, callWindowSize, MAX_CALL_WINDOW, measureRtt } from "../control/call_window.ts";
import type { CallClockMode } from "../control/call_clock.ts";
import type { Redis } from "../redis/ioredis.ts";
import { type ScanBatch, scanBatches, type SizedScanner } from "../redis/scan.ts";
import { TimedScan } from "../control/timed_scan.ts";

/** A node's paced traffic. */
export interface NodeTraffic {
  /** SCAN batches from the start cursor. */
  batches: AsyncGenerator<ScanBatch>;
  /** Script calls in flight to this node. */
  calls: CallWindow;
}

/** Opens `node`'s traffic: measures its round trip, then starts the scan at `cursor`. */
export async function openNodeTraffic(node: Redis, options: {
  match: string;
  cursor: string;
  /** `--batch`: the largest SCAN COUNT. */
  batch: number;
  /** `--max-call-ms` (default 0.25). */
  maxCallMs?: number;
  /** `--call-clock` (default `auto`). */
  callClock?: CallClockMode;
  /**
   * `round-trip` (`--max-latency` > 0): one round trip's worth of calls in flight, no more than
   * `maxCallsInFlight`, so the application never waits behind more than `--max-latency` of the
   * backfill's work. `deep` (`--max-latency 0`, raw
   * speed asked for): up to {@linkcode MAX_CALL_WINDOW}, so the client's own pauses (its GC, a
   * SCAN reply to sort) never leave Redis idle.
   */
  window?: "round-trip" | "deep";
  /**
   * A `round-trip` window holds no more calls than this while {@linkcode shared} says another
   * client may wait behind them (`--max-latency`, call_window.ts).
   */
  maxCallsInFlight?: number;
  /** Whether another client is active on the node now (control/pace.ts). Default: always. */
  shared?: () => boolean;
  /** The COUNT of the first SCAN: a batch re-read from a stored position asks for its own. */
  firstCount?: number;
}): Promise<NodeTraffic> {
  const maxCallMs = options.maxCallMs ?? 0.25;
  let calls: CallWindow;
  if (options.window === "deep") {
    calls = new CallWindow(MAX_CALL_WINDOW);
  } else {
    const roundTrip = callWindowSize(await measureRtt(node), maxCallMs);
    const budget = options.maxCallsInFlight ?? MAX_CALL_WINDOW;
    const shared = options.shared ?? (() => true);
    calls = new CallWindow(() => shared() ? Math.min(roundTrip, budget) : roundTrip);
  }
  const timed = new TimedScan(node, {
    maxCallMs,
    maxCount: options.batch,
    callClock: options.callClock,
  });
  const batches = scanBatches(node, {
    match: options.match,
    count: options.batch,
    cursor: options.cursor,
    timed: inWindow(timed, calls),
    firstCount: options.firstCount,
  });
  return { batches, calls };
}

/**
 * The node's SCANs take a place in its call window like its script calls: they share the
 * connection, so they sit in the same input buffer in front of the application's commands.
 */
function inWindow(scanner: SizedScanner, calls: CallWindow): SizedScanner {
  return {
    nextCount: () => scanner.nextCount(),
    async scan(cursor, match, count) {
      const release = await calls.acquire();
      try {
        return await scanner.scan(cursor, match, count);
      } finally {
        release();
      }
    },
  };
}
