/**
 * One runner per progress key: `--execute` holds `<P>:lock` (SET NX PX) and renews it while it
 * runs. The value names the holder, so a refused runner can say who holds it and until when; a
 * holder that dies stops renewing and the lock expires by itself.
 *
 * @module
 */
import { delay } from "../async/delay.ts";
import { SafetyRefusal } from "../errors.ts";
import { errorCode, errorLine } from "../redis/errors.ts";
import type { Cluster, Redis } from "../redis/ioredis.ts";

/**
 * The run lock of a progress key: `P:lock` on a standalone server or Sentinel primary (node ""),
 * `{P}:lock:<node-id>` per master in a cluster (the tag of the checkpoint keys), so runners of
 * different shards never share a lock and a run over every master takes every one.
 */
export function lockKey(progressKey: string, nodeId: string): string {
  return nodeId === "" ? `${progressKey}:lock` : `{${progressKey}}:lock:${nodeId}`;
}

/**
 * The refusal for a write Redis turned away because this runner's lock is no longer its own (the
 * script's `FENCED` error), or `undefined` for any other error. Every fenced script (the copy
 * scripts, the checkpoint and totals writes) refuses with that code before it writes anything.
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

/** Options for {@linkcode RunLock.acquire}. */
export interface LockOptions {
  /** Lock lifetime; renewed every third of it. Default 30 s. */
  ttlMs?: number;
  /** Called when a renewal finds the lock gone or taken (the run must stop). */
  onLost?: (reason: string) => void;
  host?: string;
  /**
   * Wait up to this long for a held lock to expire before refusing (`--wait-lock`). Default 0. A
   * crashed holder's lock expires within its TTL, so a wait longer than the TTL makes a
   * supervisor's immediate restart take over instead of failing.
   */
  waitMs?: number;
  /** Called when the lock is held by another holder (once per holder): who and until when. */
  onWait?: (message: string) => void;
  /** Stops waiting (rejects with its reason). */
  signal?: AbortSignal;
}

/** A held lock; renews itself until {@linkcode RunLock.release}. */
export class RunLock {
  readonly key: string;
  readonly holder: LockHolder;
  /**
   * The lock's stored value (the holder as JSON, its token among it): a fenced write checks that
   * the lock key still holds exactly this (see {@linkcode refusedAsFenced}).
   */
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
    const ttl = options.ttlMs ?? 30_000;
    this.#timer = setInterval(async () => {
      try {
        const renewed = await this.#client.eval(RENEW, 1, key, this.value, ttl);
        if (renewed !== 1) options.onLost?.("the lock was taken over or expired");
      } catch {
        // Redis unreachable: the engine handles the outage; the lock keeps its last expiry.
      }
    }, Math.max(ttl / 3, 10));
  }

  /**
   * Takes the lock, waiting up to `waitMs` for another holder's lock to expire, or refuses.
   *
   * @throws {SafetyRefusal} naming the current holder and its expiry when the lock is still taken
   * after `waitMs`; `signal.reason` when aborted while waiting.
   */
  static async acquire(
    client: Redis | Cluster,
    key: string,
    options: LockOptions = {},
  ): Promise<RunLock> {
    const ttl = options.ttlMs ?? 30_000;
    const holder: LockHolder = {
      host: options.host ?? hostname(),
      pid: Deno.pid,
      started: new Date().toISOString(),
      token: crypto.randomUUID(),
    };
    const deadline = Date.now() + (options.waitMs ?? 0);
    let announced: string | undefined;
    for (;;) {
      options.signal?.throwIfAborted();
      const taken = await client.set(key, JSON.stringify(holder), "PX", ttl, "NX");
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

/** Who holds `key` and until when, as text for a log line or a refusal. */
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
