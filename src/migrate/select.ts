/**
 * Picks the migration strategy and the checkpoint node identity for a connected deployment.
 *
 * @module
 */
import type { RedisTarget } from "../redis/connect.ts";
import type { Redis } from "../redis/ioredis.ts";
import type { WorkspaceRule } from "../schema.ts";
import { InServerCopy } from "./in_server.ts";
import type { MigrationStrategy } from "./strategy.ts";

/** The strategy for `target`: in-server script on a standalone Redis. */
export function strategyFor(target: RedisTarget, rule: WorkspaceRule): MigrationStrategy {
  if (target.kind === "cluster") {
    throw new Error("Redis Cluster support is not wired yet");
  }
  return new InServerCopy(target.client as Redis, rule);
}

/** Checkpoint node id: "" on a standalone Redis (keys `P:cursor`, `P:last_job`). */
export function nodeIdFor(_target: RedisTarget): ((node: Redis) => Promise<string>) | undefined {
  return undefined;
}
