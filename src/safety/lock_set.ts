/**
 * Several run locks taken as one: a cluster run holds one lock per master it scans. They are taken
 * one after another in the order given (every runner uses the same order, so two runners never
 * wait on each other in a circle), all within one `--wait-lock` deadline; when one cannot be
 * taken, those already held are released before the refusal.
 *
 * @module
 */
import type { Cluster, Redis } from "../redis/ioredis.ts";
import { type LockOptions, RunLock } from "./lock.ts";

/** Held locks, released together. */
export interface LockSet {
  readonly locks: readonly RunLock[];
  release(): Promise<void>;
}

/**
 * Takes every lock in `keys`, in order, sharing `options.waitMs` as one deadline.
 *
 * @throws {SafetyRefusal} (from {@linkcode RunLock.acquire}) when one is still held at the deadline;
 * the locks taken so far are released first.
 */
export async function acquireLocks(
  client: Redis | Cluster,
  keys: readonly string[],
  options: LockOptions = {},
): Promise<LockSet> {
  const deadline = Date.now() + (options.waitMs ?? 0);
  const locks: RunLock[] = [];
  const release = async () => {
    await Promise.all(locks.map((lock) => lock.release()));
  };
  try {
    for (const key of keys) {
      const waitMs = Math.max(0, deadline - Date.now());
      locks.push(await RunLock.acquire(client, key, { ...options, waitMs }));
    }
  } catch (error) {
    await release();
    throw error;
  }
  return { locks, release };
}
