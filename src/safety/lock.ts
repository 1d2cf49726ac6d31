/**
 * One runner per progress key: `--execute` holds `<P>:lock` (SET NX PX) and renews it while it
 * runs. The value names the holder, so a refused runner can say who holds it and until when; a
 * holder that dies stops renewing and the lock expires by itself. Every write script checks the
 * lock (or, on a cluster, the fence below) before it writes.
 *
 * @module
 */
import { delay } from "../async/delay.ts";
import { SafetyRefusal } from "../errors.ts";
import { errorCode, errorLine } from "../redis/errors.ts";
import type { Cluster, Redis } from "../redis/ioredis.ts";
import { keySlot, slotKey, SLOTS } from "../redis/slot.ts";

/**
 * The run lock of a progress key: `P:lock` on a standalone server or Sentinel primary (node ""),
 * `{P}:lock:<node-id>` per master in a cluster, so runners of different shards never share one.
 */
export function lockKey(progressKey: string, nodeId: string): string {
  return nodeId === "" ? `${progressKey}:lock` : `{${progressKey}}:lock:${nodeId}`;
}

/**
 * The refusal for a write Redis turned away because this runner's lock is no longer its own (a
 * fenced script's `FENCED` error, raised before it writes anything), else `undefined`.
 */
export function refusedAsFenced(error: unknown): SafetyRefusal | undefined {
  if (errorCode(error) !== "FENCED") return undefined;
  return new SafetyRefusal(`Redis refused a write: ${errorLine(error)}; stopping`, {
    cause: error,
  });
}

/** Who holds a lock (stored as the lock's JSON value). */
export interface LockHolder {
  host: string;
  pid: number;
  started: string;
  token: string;
}

const RENEW = `if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end return 0`;
const RELEASE = `if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1]) end return 0`;

/** Renewed every third of it. */
const LOCK_TTL_MS = 30_000;

/** Options for {@linkcode RunLock.acquire}. */
export interface LockOptions {
  /** A renewal found the lock gone or taken: the run must stop. */
  onLost?: (reason: string) => void;
  /**
   * Wait up to this long for a held lock to expire before refusing (`--wait-lock`). Default 0.
   * Longer than the TTL, it lets a supervisor's immediate restart outwait a crashed holder's lock.
   */
  waitMs?: number;
  /** The lock is held by another holder (once per holder): who and until when. */
  onWait?: (message: string) => void;
  signal?: AbortSignal;
}

/** A held lock; renews itself until {@linkcode RunLock.release}. */
export class RunLock {
  readonly key: string;
  readonly holder: LockHolder;
  /** The stored value (the holder as JSON): a fenced write checks the lock still holds it. */
  readonly value: string;
  readonly #client: Redis | Cluster;
  readonly #timer: ReturnType<typeof setInterval>;

  private constructor(
    client: Redis | Cluster,
    key: string,
    holder: LockHolder,
    options: LockOptions,
  ) {
    this.#client = client;
    this.key = key;
    this.holder = holder;
    this.value = JSON.stringify(holder);
    this.#timer = setInterval(async () => {
      try {
        const renewed = await this.#client.eval(RENEW, 1, key, this.value, LOCK_TTL_MS);
        if (renewed !== 1) options.onLost?.("the lock was taken over or expired");
      } catch {
        // Redis unreachable: the engine handles the outage; the lock keeps its last expiry.
      }
    }, LOCK_TTL_MS / 3);
  }

  /**
   * Takes the lock, waiting up to `waitMs` for another holder's lock to expire.
   *
   * @throws {SafetyRefusal} naming the holder and its expiry when the lock is still taken then.
   */
  static async acquire(
    client: Redis | Cluster,
    key: string,
    options: LockOptions = {},
  ): Promise<RunLock> {
    const holder: LockHolder = {
      host: hostname(),
      pid: Deno.pid,
      started: new Date().toISOString(),
      token: crypto.randomUUID(),
    };
    const deadline = Date.now() + (options.waitMs ?? 0);
    let announced: string | undefined;
    for (;;) {
      options.signal?.throwIfAborted();
      const taken = await client.set(key, JSON.stringify(holder), "PX", LOCK_TTL_MS, "NX");
      if (taken === "OK") return new RunLock(client, key, holder, options);
      const other = await describeHolder(client, key);
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new SafetyRefusal(
          `another backfill holds the lock ${key}: ${other.who}, until ${other.until} unless renewed`,
        );
      }
      if (announced !== other.who) {
        announced = other.who;
        options.onWait?.(
          `waiting for the lock ${key}: held by ${other.who}, until ${other.until} unless ` +
            `renewed; waiting up to ${Math.ceil(left / 1000)} s more`,
        );
      }
      // Try again just after the expiry, but at least every second, and never past the deadline.
      const pause = Math.min(1000, Math.max(other.pttl + 20, 20), left);
      await delay(pause, { signal: options.signal });
    }
  }

  /** Stops renewing and deletes the lock if it is still ours. */
  async release(): Promise<void> {
    clearInterval(this.#timer);
    try {
      await this.#client.eval(RELEASE, 1, this.key, this.value);
    } catch {
      // unreachable Redis: the lock expires by itself
    }
  }
}

/** Who holds `key` and until when, for a log line or a refusal. */
async function describeHolder(
  client: Redis | Cluster,
  key: string,
): Promise<{ who: string; until: string; pttl: number }> {
  const [value, pttl] = await Promise.all([client.get(key), client.pttl(key)]);
  let who = "an unknown holder";
  try {
    const other = JSON.parse(value ?? "") as LockHolder;
    who = `${other.host} pid ${other.pid} (since ${other.started})`;
  } catch {
    // not our format: keep the generic text
  }
  const until = pttl > 0 ? new Date(Date.now() + pttl).toISOString() : "unknown";
  return { who, until, pttl };
}

function hostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "unknown-host";
  }
}

// ---------------------------------------------------------------------------------------------
/*
 * The fence of a cluster run. Its locks live on one master (the slot of `{P}`), but it writes on
 * every master, and a runner learns only at its next renewal that a lock is gone (that master
 * restarted empty, or another runner took it over); until then its writes would land beside the
 * new holder's. So each holder also writes its lock tokens into a fence on every master, and every
 * write script checks its node's fence first and refuses the whole call (`FENCED`) when a token is
 * missing or not its own: Redis itself turns the old holder away, at its next write.
 *
 * The fence is one hash per slot, `P:fence:{tag}` (field = lock key, value = token): it lives on
 * the master that serves the slot, is replicated with the writes it guards, and moves with its
 * slot in a reshard. A master restarted empty, or a failover that lost the fence, refuses every
 * holder (exit 4) until a runner takes the locks and writes the fence again.
 */

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

  /** Writes this runner's tokens into the fence of every slot. */
  async install(cluster: Cluster): Promise<void> {
    await this.#everySlot(cluster, INSTALL, (key) => cluster.hset(key, ...this.#pairs));
  }

  /** Removes this runner's tokens where they are still its own. */
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
    // Every master's calls settle before this returns, also when one fails (a lost master): the
    // locks are released after it, and must still guard every fence write in flight.
    const settled = await Promise.allSettled([...byNode].map(async ([address, keys]) => {
      const node = nodes.get(address);
      if (node === undefined) return void stray.push(...keys);
      for (let i = 0; i < keys.length; i += 2000) {
        const chunk = keys.slice(i, i + 2000);
        const missed = await node.eval(script, 0, ...header, ...chunk) as string[];
        stray.push(...missed);
      }
    }));
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
    if (failed !== undefined) throw failed.reason;
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

/** Held locks, released together, and (a cluster) the fence the copy scripts check. */
export interface LockSet {
  readonly locks: readonly RunLock[];
  readonly fence?: RunFence;
  release(): Promise<void>;
}

/**
 * Takes every lock in `keys` in the order given (every runner uses the same order, so two never
 * wait on each other in a circle), within one `options.waitMs` deadline, then (on a cluster, with
 * `fence`: the progress key) writes this runner's fence on every master.
 *
 * @throws {SafetyRefusal} (from {@linkcode RunLock.acquire}) when one is still held at the deadline;
 * the locks taken so far are released first.
 */
export async function acquireLocks(
  client: Redis | Cluster,
  keys: readonly string[],
  options: LockOptions & { fence?: string } = {},
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
      fence = new RunFence(options.fence, locks);
      await fence.install(client);
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
