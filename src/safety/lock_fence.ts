/**
 * Fencing for the run locks of a cluster. The locks are leases kept on one master (the slot of
 * `{P}`), but a run writes on every master; a runner only learns at its next renewal that its lock
 * is gone (that master restarted empty, or another runner took it over meanwhile), and until then
 * its writes would land beside the new holder's. So each holder also writes its token for each
 * lock it took into a fence on every master, and every copy script that writes checks the fence of
 * its node first and refuses the whole call (`FENCED`) when a token is not its own or is missing:
 * Redis itself turns the old holder away, at its next write.
 *
 * The fence is one hash per slot, `P:fence:{tag}` (src/redis/slot.ts), field = lock key, value =
 * token, so it lives on the master that serves the slot, is replicated with the writes it guards,
 * and moves with its slot when the cluster is resharded. A master restarted empty has no fence: it
 * refuses every holder until a runner takes the lock again. A failover that loses the fence (a
 * master that died before its replica had it) refuses the run too: exit 4, and the next run takes
 * the lock and writes the fence again.
 *
 * A cluster run holds one lock per master it scans ({@linkcode acquireLocks}): they are taken one
 * after another in the order given (every runner uses the same order, so two runners never wait on
 * each other in a circle), all within one `--wait-lock` deadline; when one cannot be taken, those
 * already held are released before the refusal. The set then writes its fence on every master.
 *
 * @module
 */
import type { Cluster, Redis } from "../redis/ioredis.ts";
import { keySlot, slotKey, SLOTS } from "../redis/slot.ts";
import { type LockOptions, RunLock } from "./lock.ts";

/** The fence key of `slot`. */
export function fenceKey(progressKey: string, slot: number): string {
  return slotKey(`${progressKey}:fence`, slot);
}

/** What a fenced call carries: the fence key and this runner's (lock key, token) pairs. */
export class RunFence {
  readonly #progressKey: string;
  readonly #pairs: string[];
  readonly #keys = new Map<number, string>();

  constructor(progressKey: string, locks: readonly Pick<RunLock, "key" | "holder">[]) {
    this.#progressKey = progressKey;
    this.#pairs = locks.flatMap((lock) => [lock.key, lock.holder.token]);
  }

  /** The ARGV a script call that touches `key` starts with (see cluster/scripts.ts). */
  argsFor(key: Uint8Array): string[] {
    const slot = keySlot(key);
    let name = this.#keys.get(slot);
    if (name === undefined) {
      name = fenceKey(this.#progressKey, slot);
      this.#keys.set(slot, name);
    }
    return [name, String(this.#pairs.length / 2), ...this.#pairs];
  }

  /** Writes this runner's tokens into the fence of every slot (after the locks are taken). */
  async install(cluster: Cluster): Promise<void> {
    await this.#everySlot(cluster, INSTALL, (key) => cluster.hset(key, ...this.#pairs));
  }

  /** Removes this runner's tokens where they are still its own (at release). */
  async remove(cluster: Cluster): Promise<void> {
    await this.#everySlot(
      cluster,
      REMOVE,
      (key) => cluster.eval(REMOVE_ONE, 1, key, ...this.#pairs),
    );
  }

  /** Runs `script` on each master over the fence keys of its slots; moved keys one by one. */
  async #everySlot(
    cluster: Cluster,
    script: string,
    one: (key: string) => Promise<unknown>,
  ): Promise<void> {
    const byNode = new Map<string, string[]>();
    for (let slot = 0; slot < SLOTS; slot++) {
      const address = cluster.slots[slot]?.[0] ?? "";
      const keys = byNode.get(address) ?? [];
      if (keys.length === 0) byNode.set(address, keys);
      keys.push(fenceKey(this.#progressKey, slot));
    }
    const nodes = new Map(
      cluster.nodes("master").map((node) => [`${node.options.host}:${node.options.port}`, node]),
    );
    const header = [String(this.#pairs.length / 2), ...this.#pairs];
    const stray: string[] = [];
    await Promise.all([...byNode].map(async ([address, keys]) => {
      const node = nodes.get(address);
      if (node === undefined) return void stray.push(...keys);
      for (let i = 0; i < keys.length; i += 2000) {
        const chunk = keys.slice(i, i + 2000);
        const missed = await node.eval(script, 0, ...header, ...chunk) as string[];
        stray.push(...missed);
      }
    }));
    // A slot that moved since the client's map: through the routed client (follows MOVED).
    for (const key of stray) await one(key);
  }
}

/** ARGV n, (field, token)×n, key… → the keys this node does not serve. */
const INSTALL = `#!lua flags=allow-cross-slot-keys
local n = tonumber(ARGV[1])
local missed = {}
for i = 2 + 2 * n, #ARGV do
  local r = redis.pcall("HSET", ARGV[i], unpack(ARGV, 2, 1 + 2 * n))
  if type(r) == "table" then missed[#missed + 1] = ARGV[i] end
end
return missed`;

const REMOVE = `#!lua flags=allow-cross-slot-keys
local n = tonumber(ARGV[1])
local fields = {}
for j = 2, 1 + 2 * n, 2 do fields[#fields + 1] = ARGV[j] end
local missed = {}
for i = 2 + 2 * n, #ARGV do
  local key = ARGV[i]
  local held = redis.pcall("HMGET", key, unpack(fields))
  if held.err then missed[#missed + 1] = key else
    local ours = {}
    for j = 1, n do
      if held[j] == ARGV[1 + 2 * j] then ours[#ours + 1] = fields[j] end
    end
    if #ours > 0 then redis.call("HDEL", key, unpack(ours)) end
  end
end
return missed`;

const REMOVE_ONE = `for j = 1, #ARGV, 2 do
  if redis.call("HGET", KEYS[1], ARGV[j]) == ARGV[j + 1] then redis.call("HDEL", KEYS[1], ARGV[j]) end
end
return 0`;

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
