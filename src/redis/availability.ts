/**
 * Is a node there, and is it the same server? What the run asks while it waits out an outage:
 * PING with a bound, the role (a failover can leave us on a replica), and `run_id` (new after
 * every restart, which makes a stored SCAN cursor meaningless).
 *
 * @module
 */
import { backoffMs, RECONNECT } from "../async/backoff.ts";
import { pause } from "../async/delay.ts";
import { RedisUnavailableError } from "../errors.ts";
import type { Redis } from "./ioredis.ts";

/** The node's `run_id` (new after every restart). */
export async function serverRunId(node: Redis): Promise<string> {
  const info = await node.info("server");
  return info.match(/run_id:(\w+)/)?.[1] ?? "";
}

/** Options of {@linkcode waitForRedis}. */
export interface WaitOptions {
  name: string;
  /** performance.now() after which the outage is over the bound. */
  deadline: number;
  /** Checkpoint cursor, for the error message. */
  cursor: string;
  /** Also wait until the node is a primary (writable). */
  needsPrimary: boolean;
  signal?: AbortSignal;
}

/**
 * Waits, with backoff, until the node answers PING (and is a primary when that is needed). Always
 * pauses at least once, so an error that persists while PING works cannot spin; the deadline
 * counts from the first failure since the last good batch, so such an error still ends in exit 3.
 *
 * @returns false when stopped by the signal.
 * @throws {RedisUnavailableError} once the deadline passes.
 */
export async function waitForRedis(node: Redis, options: WaitOptions): Promise<boolean> {
  for (let attempt = 0;; attempt++) {
    if (!await pause(backoffMs(attempt, RECONNECT), { signal: options.signal })) return false;
    if (await answersPing(node) && (!options.needsPrimary || await isPrimary(node))) return true;
    if (performance.now() >= options.deadline) {
      throw new RedisUnavailableError(
        `lost Redis at ${options.name} for longer than --max-outage; ` +
          `the checkpoint is kept at cursor=${options.cursor}`,
      );
    }
  }
}

async function isPrimary(node: Redis): Promise<boolean> {
  try {
    return /^role:master/m.test(await node.info("replication"));
  } catch {
    return false;
  }
}

/** PING with a 1 s limit; false on any error (down, or LOADING its data). */
async function answersPing(node: Redis): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), 1000));
  const ping = node.ping().then((pong) => pong === "PONG", () => false);
  try {
    return await Promise.race([ping, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
