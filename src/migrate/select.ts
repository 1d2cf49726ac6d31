/**
 * Picks the migration strategy and the checkpoint node identity for a connected deployment.
 *
 * @module
 */
import type { RedisTarget } from "../redis/target.ts";
import type { Cluster, Redis } from "../redis/ioredis.ts";
import type { KeySchema } from "../schema.ts";
import { ClusterCopy, type ClusterCopyOptions } from "./cluster/copy.ts";
import { InServerCopy, type InServerCopyOptions } from "./in_server.ts";
import type { MigrationStrategy } from "./strategy.ts";

/** The strategy for `target`: the grouped cluster copy on a cluster, else the in-server script. */
export function strategyFor(
  target: RedisTarget,
  keys: KeySchema,
  options: ClusterCopyOptions & InServerCopyOptions = {},
): MigrationStrategy {
  if (target.kind === "cluster") return new ClusterCopy(target.client as Cluster, keys, options);
  return new InServerCopy(target.client as Redis, keys, options);
}

/**
 * Checkpoint node id: none outside a cluster (keys `P:cursor`, …); in a cluster the master's
 * `CLUSTER MYID` (`{P}:cursor:<node-id>`, …), which survives a restart (nodes.conf): the stored
 * `run_id` tells a stale cursor apart.
 */
export function nodeIdFor(target: RedisTarget): ((node: Redis) => Promise<string>) | undefined {
  if (target.kind !== "cluster") return undefined;
  return async (node) => String(await node.call("CLUSTER", "MYID"));
}
