/**
 * Replica lag from a master's `INFO replication`, and a poller that keeps it fresh: unacknowledged
 * bytes, and seconds since the last acknowledgement. A replica acknowledges once a second, so a
 * healthy one is up to a second of writes behind: `--max-replica-lag` must sit above that.
 *
 * @module
 */
import { UsageError } from "../errors.ts";
import type { Redis } from "../redis/ioredis.ts";
import { delay } from "../async/delay.ts";

/** One replica as its master sees it: unacknowledged bytes, seconds since it acknowledged. */
export interface ReplicaLag {
  address: string;
  /** `online`, or a sync state (`wait_bgsave`, `send_bulk`). */
  state: string;
  bytes: number;
  seconds: number;
}

/** `--max-replica-lag`: bytes, seconds, or off (`0`). */
export type ReplicaLagLimit =
  | { kind: "bytes"; bytes: number }
  | { kind: "seconds"; seconds: number }
  | { kind: "off" };

const UNITS: Record<string, number> = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

/**
 * Parses `--max-replica-lag`: bytes with an optional k/M/G (1024) suffix and `b`, `Ns`, or `0`.
 * @throws {UsageError} naming the flag and the value.
 */
export function parseReplicaLagLimit(text: string): ReplicaLagLimit {
  const seconds = text.match(/^(\d+(?:\.\d+)?)s$/);
  if (seconds) {
    const value = Number(seconds[1]);
    return value === 0 ? { kind: "off" } : { kind: "seconds", seconds: value };
  }
  const bytes = text.match(/^(\d+(?:\.\d+)?)([kKmMgG]?)[bB]?$/);
  if (!bytes) {
    throw new UsageError(
      `--max-replica-lag must be bytes (e.g. 16M, 512k, 1048576) or seconds (e.g. 10s), got '${
        text.slice(0, 40)
      }'`,
    );
  }
  const value = Math.round(Number(bytes[1]) * UNITS[bytes[2]!.toLowerCase()]!);
  return value === 0 ? { kind: "off" } : { kind: "bytes", bytes: value };
}

/** Parses `INFO replication` of a master: its replicas and how far behind each is. */
export function parseReplication(info: string): ReplicaLag[] {
  const masterOffset = Number(info.match(/^master_repl_offset:(\d+)/m)?.[1] ?? 0);
  const replicas: ReplicaLag[] = [];
  for (const line of info.matchAll(/^slave\d+:(.*)$/gm)) {
    const fields = Object.fromEntries(
      line[1]!.trim().split(",").map((pair) => pair.split("=", 2) as [string, string]),
    );
    const offset = Number(fields.offset ?? 0);
    replicas.push({
      address: `${fields.ip ?? "?"}:${fields.port ?? "?"}`,
      state: fields.state ?? "unknown",
      bytes: Math.max(0, masterOffset - offset),
      seconds: Number(fields.lag ?? 0),
    });
  }
  return replicas;
}

/** Whether a replica is past the limit; one in a full resync has no meaningful offset. */
export function isLagging(replica: ReplicaLag, limit: ReplicaLagLimit): boolean {
  if (replica.state !== "online") return false;
  if (limit.kind === "bytes") return replica.bytes > limit.bytes;
  if (limit.kind === "seconds") return replica.seconds > limit.seconds;
  return false;
}

/** Options of {@linkcode watchReplicaLag}. */
export interface ReplicaLagWatchOptions {
  /** `host:port` of the master, for callbacks. */
  node: string;
  limit: ReplicaLagLimit;
  signal: AbortSignal;
  /** Milliseconds between polls. Default 500. */
  intervalMs?: number;
  /** Every poll: the worst replica's unacknowledged bytes (0 without replicas). */
  onReplicaLag?: (event: { node: string; bytes: number }) => void;
  /** When the verdict changes. */
  onChange?: (event: { node: string; over: boolean }) => void;
}

/** The latest verdict of a {@linkcode watchReplicaLag} poller. */
export interface ReplicaLagWatch {
  /** Some replica of this master is past the limit. */
  readonly over: boolean;
  readonly replicas: readonly ReplicaLag[];
  /** Resolves once the poller stopped. */
  readonly done: Promise<void>;
}

/**
 * Polls `INFO replication` until the signal aborts. A failed poll keeps the last verdict: an
 * unreachable master is the engine's outage handling, not a lag signal.
 */
export function watchReplicaLag(master: Redis, options: ReplicaLagWatchOptions): ReplicaLagWatch {
  const state = { over: false, replicas: [] as ReplicaLag[] };
  const poll = async () => {
    const replicas = parseReplication(await master.info("replication"));
    const over = replicas.some((replica) => isLagging(replica, options.limit));
    state.replicas = replicas;
    const bytes = Math.max(0, ...replicas.map((replica) => replica.bytes));
    options.onReplicaLag?.({ node: options.node, bytes });
    if (over !== state.over) {
      state.over = over;
      options.onChange?.({ node: options.node, over });
    }
  };
  const done = (async () => {
    while (!options.signal.aborted) {
      await poll().catch(() => {});
      await delay(options.intervalMs ?? 500, { signal: options.signal }).catch(() => {});
    }
  })();
  return {
    get over() {
      return state.over;
    },
    get replicas() {
      return state.replicas;
    },
    done,
  };
}
