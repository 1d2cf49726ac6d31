/**
 * `--shard I/N`: which masters of a cluster one of N runners takes. The order follows the slots,
 * not the node ids: a failover promotes a replica with a new node id but the same slots, so a
 * runner restarted after a failover takes the same slots again, never another runner's master.
 *
 * @module
 */
import { UsageError } from "../errors.ts";
import type { Cluster } from "./ioredis.ts";
import type { RedisTarget } from "./target.ts";

/** One runner's part: `index` of `count` (0 ≤ index < count). */
export interface Shard {
  index: number;
  count: number;
}

/** The whole deployment: what a run without `--shard` takes. */
export const WHOLE: Shard = { index: 0, count: 1 };

/**
 * Parses `I/N`.
 *
 * @throws {UsageError} unless it is two whole numbers with 0 ≤ I < N (N ≤ 10 000).
 */
export function parseShard(text: string): Shard {
  const match = /^(\d{1,5})\/(\d{1,5})$/.exec(text.trim());
  const index = Number(match?.[1]);
  const count = Number(match?.[2]);
  if (!match || count < 1 || count > 10_000 || index >= count) {
    throw new UsageError(
      `--shard must be I/N with whole numbers 0 <= I < N (e.g. 0/3), got '${text.slice(0, 40)}'`,
    );
  }
  return { index, count };
}

/** `I/N`, as in the flag, logs and status keys. */
export function shardLabel(shard: Shard): string {
  return `${shard.index}/${shard.count}`;
}

/**
 * The masters of `shard` (pure): sorted by the lowest slot each serves (slot-less masters last,
 * by node id), then every one whose index is ≡ `shard.index` mod `shard.count`.
 */
export function pickShard<T extends { nodeId: string; firstSlot?: number }>(
  masters: readonly T[],
  shard: Shard,
): T[] {
  const order = [...masters].sort((a, b) =>
    (a.firstSlot ?? Infinity) - (b.firstSlot ?? Infinity) ||
    (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0)
  );
  return order.filter((_, i) => i % shard.count === shard.index);
}

/** A target narrowed to one shard's masters, with their node ids (in shard order). */
export interface ShardScope {
  target: RedisTarget;
  /** Node id per master of the scope (cluster); `[""]` on a standalone or Sentinel primary. */
  nodeIds: string[];
  /** How many masters the whole deployment has. */
  allMasters: number;
}

/**
 * Narrows `target` to the masters of `shard`.
 *
 * @throws {UsageError} for a shard count above 1 on a standalone server or Sentinel primary.
 */
export async function scopeToShard(target: RedisTarget, shard: Shard): Promise<ShardScope> {
  if (target.kind !== "cluster") {
    if (shard.count !== 1) {
      throw new UsageError(
        `--shard ${shardLabel(shard)} needs a Redis Cluster; a ${target.kind} server has ` +
          "one master (use --shard 0/1 or leave it out)",
      );
    }
    return { target, nodeIds: [""], allMasters: 1 };
  }
  const firstSlots = await firstSlotByNode(target.client as Cluster);
  const all = await Promise.all(
    target.masters().map(async (node) => {
      const nodeId = String(await node.call("CLUSTER", "MYID"));
      return { node, nodeId, firstSlot: firstSlots.get(nodeId) };
    }),
  );
  const mine = pickShard(all, shard);
  const masters = mine.map((m) => m.node);
  // The target's methods are closures, not bound to it: a copy keeps them.
  const scoped: RedisTarget = { ...target, masters: () => masters };
  return { target: scoped, nodeIds: mine.map((m) => m.nodeId), allMasters: all.length };
}

/** Node id → the lowest slot it serves (CLUSTER SLOTS). */
async function firstSlotByNode(client: Cluster): Promise<Map<string, number>> {
  const ranges = await client.cluster("SLOTS");
  const first = new Map<string, number>();
  for (const [start, , master] of ranges) {
    const id = String(master?.[2] ?? "");
    if (id !== "" && start < (first.get(id) ?? Infinity)) first.set(id, start);
  }
  return first;
}
