/**
 * `--execute` writes, so it needs a primary. A replica (or a primary demoted just now) is waited
 * on for up to `--max-outage`, as a failover would be, then refused, before anything is written.
 * Dry-run and verify only read, and run on a replica as they are.
 *
 * @module
 */
import { backoffMs, RECONNECT } from "../async/backoff.ts";
import { delay } from "../async/delay.ts";
import { RedisUnavailableError } from "../errors.ts";
import type { Redis } from "../redis/ioredis.ts";
import { parseRole } from "../redis/availability.ts";
import type { Logger } from "../run_events.ts";

/** Options of {@linkcode waitForPrimaries}; `maxOutage` in seconds. */
export interface PrimaryWaitOptions {
  nameOf: (node: Redis) => string;
  maxOutage: number;
  logger: Logger;
  signal?: AbortSignal;
}

/**
 * Returns once every node is a primary.
 *
 * @throws {RedisUnavailableError} naming a node still a replica after `maxOutage` seconds.
 */
export async function waitForPrimaries(nodes: Redis[], options: PrimaryWaitOptions): Promise<void> {
  await Promise.all(nodes.map((node) => waitForPrimary(node, options)));
}

async function waitForPrimary(node: Redis, options: PrimaryWaitOptions): Promise<void> {
  const deadline = performance.now() + options.maxOutage * 1000;
  const name = options.nameOf(node);
  for (let attempt = 0;; attempt++) {
    const role = parseRole(await node.info("replication"));
    if (role.primary) return;
    const what = `Redis at ${name} is a replica${role.primaryOf ? ` of ${role.primaryOf}` : ""}`;
    if (attempt === 0) {
      options.logger.log(
        "warn",
        "redis_replica",
        `${what}, and --execute must write: waiting up to ${options.maxOutage} s for it to ` +
          `become a primary (point --redis-url at the primary)`,
        { node: name },
      );
    }
    if (performance.now() >= deadline) {
      throw new RedisUnavailableError(
        `${what}, not a primary, for longer than --max-outage; --execute must write: ` +
          `point --redis-url at the primary`,
      );
    }
    await delay(backoffMs(attempt, RECONNECT), { signal: options.signal });
  }
}
