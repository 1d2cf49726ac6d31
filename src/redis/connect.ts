/**
 * URL(s) → a connected {@linkcode RedisTarget}: a standalone server, a Redis Cluster (detected on
 * the seed with `INFO cluster`, no flag needed) or a Sentinel-managed primary
 * (`redis+sentinel://`). Every name in a log line or error is `host:port`, never credentials.
 *
 * @module
 */
import { RedisUnavailableError, UsageError } from "../errors.ts";
import { connectCluster, isClusterNode } from "./cluster.ts";
import { redactSecrets } from "../telemetry/redact.ts";
import { clientOptions, nodeAddress, type TlsOptions } from "./options.ts";
import { LossClock } from "./availability.ts";
import { ConnectionRefusedError, connectWithin, openConnection } from "./reach.ts";
import { connectSentinel, isSentinelUrl } from "./sentinel.ts";
import { oneClientTarget, type RedisTarget } from "./target.ts";
import type { Redis, RedisOptions } from "./ioredis.ts";

/** Options for {@linkcode connectRedis}. */
export interface ConnectOptions {
  tls?: TlsOptions;
  /** Give up (exit 3) when no connection succeeds within this many ms. */
  timeoutMs?: number;
  /** Silence with commands pending (ms) after which a server counts as lost; default: no limit. */
  silenceMs?: number;
  signal?: AbortSignal;
}

/**
 * Connects to the deployment behind `urls` (one URL; several seeds for a cluster; one or more
 * Sentinel URLs for the same master), retrying until `timeoutMs` (default 10 s) passes.
 *
 * @throws {UsageError} on mixed URL kinds, or several URLs that turn out to be a standalone server.
 * @throws {RedisUnavailableError} when no connection succeeds in time, or credentials are refused.
 */
export async function connectRedis(
  urls: string[],
  options: ConnectOptions = {},
): Promise<RedisTarget> {
  if (urls.length === 0) throw new UsageError("no Redis URL given");
  const timeoutMs = options.timeoutMs ?? 10_000;
  const sentinel = urls.filter(isSentinelUrl).length;
  if (sentinel > 0) {
    if (sentinel !== urls.length) {
      throw new UsageError("--redis-url: do not mix Sentinel URLs with redis:// or rediss:// URLs");
    }
    return await connectSentinel(urls, { ...options, timeoutMs });
  }
  const redacted = urls.map(redactSecrets).join(",");
  const seeds = (await Promise.all(urls.map((url) => clientOptions(url, options.tls))))
    .map((seed) => ({ ...seed, socketTimeout: options.silenceMs }));
  const losses = new LossClock(options.silenceMs);
  const { client, name } = await connectSeed(seeds, timeoutMs, losses, options.signal);
  if (await isClusterNode(client, name)) {
    client.disconnect();
    return await connectCluster(seeds, { ...options, timeoutMs, redacted });
  }
  if (urls.length > 1) {
    client.disconnect();
    throw new UsageError(
      `several --redis-url seeds are for a Redis Cluster, but ${name} is a standalone server`,
    );
  }
  return oneClientTarget("standalone", client, {
    redacted,
    nodeName: () => name,
    lossLabel: name,
    losses,
  });
}

/**
 * The first seed that answers. With one seed it gets the whole time; with several, each gets an
 * equal share, so an unreachable deployment still fails within `timeoutMs`.
 */
async function connectSeed(
  seeds: RedisOptions[],
  timeoutMs: number,
  losses: LossClock,
  signal?: AbortSignal,
): Promise<{ client: Redis; name: string }> {
  let lastError: unknown;
  for (const seed of seeds) {
    const name = nodeAddress(seed.host, seed.port);
    const client = openConnection(seed, losses, () => name);
    try {
      await connectWithin(client, name, timeoutMs / seeds.length, signal);
      return { client, name };
    } catch (error) {
      // Refused credentials or an untrusted certificate will not pass on another seed either.
      if (!(error instanceof RedisUnavailableError) || error instanceof ConnectionRefusedError) {
        throw error;
      }
      lastError = error;
    }
  }
  throw lastError;
}
