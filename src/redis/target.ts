/**
 * What a connected deployment offers the rest of the tool. Callers ask the target what it can do;
 * only the connect step and the strategy choice know the topology by name.
 *
 * @module
 */
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
   * Cluster only: a fingerprint of which master serves which slots. When it changes during a run,
   * keys may have moved from a not-yet-scanned to an already-scanned position and escaped it.
   */
  layout?(): Promise<string>;
  /** performance.now() when the server behind `node` was lost (LossClock); else undefined. */
  lostSince?(node: Redis): number | undefined;
  /** Gives up on the server behind `node` (lost past `--max-outage`; see LossClock.abandon). */
  abandon?(node: Redis): void;
  /** Closes every connection. */
  close(): Promise<void>;
}
