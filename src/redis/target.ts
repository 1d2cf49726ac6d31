/**
 * What a connected deployment offers the rest of the tool: a client for key reads and writes, one
 * connection per master for SCAN, names for logs, and (cluster only) a slot-layout fingerprint.
 * Callers ask the target what it can do; only the connect step and the strategy choice know the
 * topology by name.
 *
 * @module
 */
import type { LossClock } from "./availability.ts";
import type { Cluster, Redis } from "./ioredis.ts";

/** A connected Redis deployment. */
export interface RedisTarget {
  /** `sentinel` is one primary (found through the sentinels); it migrates like `standalone`. */
  readonly kind: "standalone" | "cluster" | "sentinel";
  /** Client for key reads and writes (routes by slot in a cluster). */
  readonly client: Redis | Cluster;
  /** One connection per master; the scanner runs over each. Standalone: the client itself. */
  masters(): Redis[];
  /** `host:port` of a node; never credentials. */
  nodeName(node: Redis): string;
  /** The seed URL(s), redacted. */
  readonly redacted: string;
  /**
   * Cluster only: a fingerprint of which master serves which slots. When it differs between the
   * start and the end of a run, a reshard or failover happened meanwhile, and keys that moved
   * from a not-yet-scanned to an already-scanned position of another master escaped this run.
   */
  layout?(): Promise<string>;
  /**
   * performance.now() when the server behind `node` was lost, as its connections saw it (closed,
   * or silent with commands pending for the silence limit, see availability.ts); undefined while
   * it answers.
   */
  lostSince?(node: Redis): number | undefined;
  /**
   * Gives up on the server behind `node` (lost past `--max-outage`): what is pending on its
   * connections fails now, and so does every later command to it.
   */
  abandon?(node: Redis): void;
  /** Closes every connection. */
  close(): Promise<void>;
}

/**
 * The target of one connection: a standalone server, or the primary the sentinels name (whose
 * loss is the deployment's, whatever its address: `lossLabel`).
 */
export function oneClientTarget(
  kind: "standalone" | "sentinel",
  client: Redis,
  options: { redacted: string; nodeName: () => string; lossLabel: string; losses: LossClock },
): RedisTarget {
  const { losses, lossLabel } = options;
  return {
    kind,
    client,
    masters: () => [client],
    nodeName: options.nodeName,
    redacted: options.redacted,
    lostSince: () => losses.lostSince(lossLabel),
    abandon: () => losses.abandon(lossLabel),
    async close() {
      client.disconnect();
      await Promise.resolve();
    },
  };
}
