/**
 * The latency probe's worker: its own thread and event loop, its own connection. The backfill's
 * client can keep its event loop busy for tens of milliseconds at a time (`--rps 0` on a loaded
 * host); a probe timed on that loop reads the delay as Redis latency and pins the rate at the floor.
 * Here the PING schedule, the connection and the clock run apart from it.
 *
 * Protocol: the parent posts one {@linkcode ProbeStart} (address, TLS and credentials: they stay
 * in this worker's memory and are never logged or posted back), then the worker posts
 * `ready` with the baseline (or `failed`), a `snapshot` about every 50 ms, and `down` when PINGs start
 * failing. The parent ends the worker with `terminate()`.
 *
 * @module
 */
import { ProbeConnection, type ProbeTarget } from "./probe_connection.ts";
import { PingSampler, type ProbeSnapshot } from "./probe_sampler.ts";

/** What the parent posts: how to connect and how to probe. */
export interface ProbeStart {
  target: ProbeTarget;
  intervalMs: number;
  windowMs: number;
  baselineSamples: number;
}

/** What the worker posts back. */
export type ProbeMessage =
  | { type: "ready"; baselineMs: number; snapshot: ProbeSnapshot }
  | { type: "failed"; name: string; message: string; code?: string }
  | { type: "snapshot"; snapshot: ProbeSnapshot; replies: number }
  | { type: "down"; reason: string };

interface WorkerScope {
  postMessage(message: ProbeMessage): void;
  onmessage: ((event: MessageEvent<ProbeStart>) => void) | null;
}

/** How often the worker posts its reading to the backfill. */
const SNAPSHOT_EVERY_MS = 50;

const scope = globalThis as unknown as WorkerScope;

scope.onmessage = (event) => {
  scope.onmessage = null;
  void run(event.data);
};

async function run(start: ProbeStart): Promise<void> {
  let connection: ProbeConnection;
  try {
    connection = await ProbeConnection.open(start.target);
  } catch (error) {
    const { name, message, code } = error as Error & { code?: string };
    scope.postMessage({ type: "failed", name, message, code });
    return;
  }
  // While the connection is lost, each PING slot fails at once and at most one reconnect is under
  // way: the schedule paces the attempts.
  let reconnecting = false;
  const ping = (): Promise<void> => {
    if (!connection.lost) return connection.ping();
    if (!reconnecting) {
      reconnecting = true;
      ProbeConnection.open(start.target)
        .then((fresh) => void (connection = fresh), () => {})
        .finally(() => void (reconnecting = false));
    }
    return connection.ping();
  };
  // A snapshot every ~50 ms is fresh enough for a throttle that ticks every 200 ms, and keeps the
  // backfill's loop from handling a message per PING.
  const postEvery = Math.max(1, Math.round(SNAPSHOT_EVERY_MS / start.intervalMs));
  let ticks = 0;
  let replies = 0;
  const sampler = new PingSampler(ping, {
    intervalMs: start.intervalMs,
    windowMs: start.windowMs,
    onTick: (snapshot, repliesSince) => {
      replies += repliesSince;
      if (++ticks % postEvery !== 0) return;
      scope.postMessage({ type: "snapshot", snapshot, replies });
      replies = 0;
    },
    onDown: (reason) => scope.postMessage({ type: "down", reason }),
  });
  const baselineMs = await sampler.start(start.baselineSamples);
  // With its snapshot: the ones posted while the baseline was measured compare with a baseline of 0.
  scope.postMessage({ type: "ready", baselineMs, snapshot: sampler.snapshot() });
}
