/**
 * Several run locks taken as one: a cluster run holds one lock per master it scans. They are taken
 * one after another in the order given (every runner uses the same order, so two runners never
 * wait on each other in a circle), all within one `--wait-lock` deadline; when one cannot be
 * taken, those already held are released before the refusal. On a cluster the set then writes its
 * fence on every master (lock_fence.ts), so that Redis refuses this runner's writes once another
 * runner holds one of its locks.
 *
 * @module
 */
import type { Cluster, Redis } from "../redis/ioredis.ts";
import { type LockOptions, RunLock } from "./lock.ts";
import { RunFence } from "./lock_fence.ts";

/** Held locks, released together. */
export interface LockSet {
  readonly locks: readonly RunLock[];
  /** The fence the copy scripts check (a cluster with `fence` asked for). */
  readonly fence?: RunFence;
  release(): Promise<void>;
}

/** Options of {@linkcode acquireLocks}. */
export interface LockSetOptions extends LockOptions {
  /** On a cluster: the progress key whose fence to write once every lock is held. */
  fence?: string;
}

/**
 * Takes every lock in `keys`, in order, sharing `options.waitMs` as one deadline, then (on a
 * cluster, with `fence`) writes this runner's fence on every master.
 *
 * @throws {SafetyRefusal} (from {@linkcode RunLock.acquire}) when one is still held at the deadline;
 * the locks taken so far are released first.
 */
export async function acquireLocks(
  client: Redis | Cluster,
  keys: readonly string[],
  options: LockSetOptions = {},
): Promise<LockSet> {
  const deadline = Date.now() + (options.waitMs ?? 0);
  const locks: RunLock[] = [];
  let fence: RunFence | undefined;
  const release = async () => {
    // The fence goes first: while it stands, the locks still guard it.
    try {
      await fence?.remove(client as Cluster);
    } catch {
      // unreachable Redis: the next holder overwrites it
    }
    await Promise.all(locks.map((lock) => lock.release()));
  };
  try {
    for (const key of keys) {
      const waitMs = Math.max(0, deadline - Date.now());
      locks.push(await RunLock.acquire(client, key, { ...options, waitMs }));
    }
    if (options.fence !== undefined && isCluster(client)) {
      const runFence = new RunFence(options.fence, locks);
      fence = runFence;
      await runFence.install(client);
    }
  } catch (error) {
    await release();
    throw error;
  }
  return { locks, fence, release };
}

function isCluster(client: Redis | Cluster): client is Cluster {
  return (client as { isCluster?: boolean }).isCluster === true;
}
