/**
 * URL(s) → a connected {@linkcode RedisTarget}: a standalone server, a Redis Cluster (detected on
 * the seed with `INFO cluster`, no flag needed) or a Sentinel-managed primary
 * (`redis+sentinel://`). Every connection gets one set-up ({@linkcode openConnection}) and one
 * first connect within a deadline ({@linkcode connectWithin}). Every name in a log line or error
 * is `host:port`, never credentials.
 *
 * @module
 */
import { backoffMs, RECONNECT } from "../async/backoff.ts";
import { delay, withTimeout } from "../async/delay.ts";
import { RedisUnavailableError, UsageError } from "../errors.ts";
import { redactSecrets } from "../telemetry/redact.ts";
import { LossClock } from "./availability.ts";
import { classify, errorLine } from "./errors.ts";
import { fenceScanCursors } from "./fence.ts";
import { Cluster, Redis, type RedisOptions } from "./ioredis.ts";
import {
  BASE_OPTIONS,
  clientOptions,
  nodeAddress,
  sniFor,
  tlsConnectionOptions,
  type TlsOptions,
} from "./options.ts";
import { isSentinelUrl, mergeSentinelUrls } from "./sentinel.ts";
import type { RedisTarget } from "./target.ts";

/** Options for {@linkcode connectRedis}. */
export interface ConnectOptions {
  tls?: TlsOptions;
  /** Silence with commands pending (ms) after which a server counts as lost; default: no limit. */
  silenceMs?: number;
  signal?: AbortSignal;
}

/** Give up (exit 3) when no connection succeeds within this many ms. */
const CONNECT_TIMEOUT_MS = 10_000;

/**
 * Connects to the deployment behind `urls` (one URL; several seeds for a cluster; one or more
 * Sentinel URLs for the same master), retrying until {@linkcode CONNECT_TIMEOUT_MS} passes.
 *
 * @throws {UsageError} on mixed URL kinds, or several URLs that turn out to be a standalone server.
 * @throws {RedisUnavailableError} when no connection succeeds in time, or credentials are refused.
 */
export async function connectRedis(
  urls: string[],
  options: ConnectOptions = {},
): Promise<RedisTarget> {
  if (urls.length === 0) throw new UsageError("no Redis URL given");
  const redacted = urls.map(redactSecrets).join(",");
  const sentinel = urls.filter(isSentinelUrl).length;
  if (sentinel > 0) {
    if (sentinel !== urls.length) {
      throw new UsageError("--redis-url: do not mix Sentinel URLs with redis:// or rediss:// URLs");
    }
    return await connectSentinel(urls, { ...options, redacted });
  }
  const seeds = (await Promise.all(urls.map((url) => clientOptions(url, options.tls))))
    .map((seed) => ({ ...seed, socketTimeout: options.silenceMs }));
  const losses = new LossClock(options.silenceMs);
  const { client, name } = await connectSeed(seeds, losses, options.signal);
  if (await isClusterNode(client, name)) {
    client.disconnect();
    return await connectCluster(seeds, { ...options, redacted });
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
 * equal share, so an unreachable deployment still fails within the connect timeout.
 */
async function connectSeed(
  seeds: RedisOptions[],
  losses: LossClock,
  signal?: AbortSignal,
): Promise<{ client: Redis; name: string }> {
  let lastError: unknown;
  for (const seed of seeds) {
    const name = nodeAddress(seed.host, seed.port);
    const client = openConnection(seed, losses, () => name);
    try {
      await connectWithin(client, name, CONNECT_TIMEOUT_MS / seeds.length, signal);
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

/**
 * Connects to the master that the sentinels name. ioredis asks them again after every reconnect,
 * so a failover moves the run to the new primary (a new `run_id`: a rescan from cursor 0).
 */
async function connectSentinel(
  urls: string[],
  options: ConnectOptions & { redacted: string },
): Promise<RedisTarget> {
  const url = mergeSentinelUrls(urls);
  const tls = await tlsConnectionOptions(url.tls, options.tls ?? {}, undefined);
  const via = url.sentinels.map((s) => nodeAddress(s.host, s.port)).join(",");
  const label = `master '${url.master}' via sentinels ${via}`;
  // One connection, which follows the primary: its loss is the deployment's, whatever its address.
  const losses = new LossClock(options.silenceMs);
  const client = openConnection(
    {
      ...BASE_OPTIONS,
      socketTimeout: options.silenceMs,
      sentinels: url.sentinels,
      name: url.master,
      db: url.db,
      username: url.username,
      password: url.password,
      sentinelUsername: url.sentinelUsername,
      sentinelPassword: url.sentinelPassword,
      // Keep asking the sentinels while none answers; connectWithin owns the deadline.
      sentinelRetryStrategy: (attempt) => backoffMs(attempt, RECONNECT),
      ...(tls ? { tls, enableTLSForSentinelMode: true, sentinelTLS: tls } : {}),
    },
    losses,
    (client) => currentAddress(client) ?? label,
    () => label,
  );
  await connectWithin(client, label, CONNECT_TIMEOUT_MS, options.signal);
  return oneClientTarget("sentinel", client, {
    redacted: options.redacted,
    nodeName: () => currentAddress(client) ?? label,
    lossLabel: label,
    losses,
  });
}

/** `host:port` of the server `client` is connected to right now (the current primary). */
function currentAddress(client: Redis): string | undefined {
  const stream = (client as unknown as { stream?: { remoteAddress?: string; remotePort?: number } })
    .stream;
  if (!stream?.remoteAddress) return undefined;
  return nodeAddress(stream.remoteAddress.replace(/^::ffff:/, ""), stream.remotePort);
}

/** True when the server is a cluster node (`INFO cluster`); disconnects `client` on a failure. */
async function isClusterNode(client: Redis, name: string): Promise<boolean> {
  let info: string;
  try {
    info = await client.info("cluster");
  } catch (error) {
    client.disconnect();
    throw new RedisUnavailableError(
      `Redis at ${name} refused INFO (needed to detect a cluster and node restarts): ${
        errorLine(error)
      }`,
    );
  }
  return /^cluster_enabled:1\b/m.test(info);
}

/**
 * Connects to a cluster through `seeds` (credentials and TLS of the first apply to every node) and
 * opens one connection per master. `--tls-servername` is every node's SNI; without it each node's
 * own host is used.
 */
async function connectCluster(
  seeds: RedisOptions[],
  options: ConnectOptions & { redacted: string },
): Promise<RedisTarget> {
  const first = seeds[0]!;
  if (seeds.some((seed) => (seed.db ?? 0) !== 0)) {
    throw new UsageError("Redis Cluster has only database 0; drop the /N from --redis-url");
  }
  const servername = options.tls?.servername;
  const nodeOptions: RedisOptions = {
    username: first.username,
    password: first.password,
    // The seed's SNI would be wrong for the other nodes: only an explicit name applies to all.
    tls: first.tls ? { ...first.tls, servername } : undefined,
    connectTimeout: first.connectTimeout,
    maxRetriesPerRequest: first.maxRetriesPerRequest,
    socketTimeout: options.silenceMs,
  };
  // ioredis follows MOVED and ASK itself and retries CLUSTERDOWN and TRYAGAIN (refused before they
  // ran) after refreshing the slot map. A call whose connection closed is never sent again
  // (`retryDelayOnFailover: 0`): it may have run, and a second run of a copying script would find
  // its own copy and count it `skipped_exists`. It fails to its caller, which notes it lost
  // (migrate/call_record.ts) and retries within its own budget.
  const client = new Cluster(seeds.map((seed) => ({ host: seed.host, port: seed.port })), {
    redisOptions: nodeOptions,
    lazyConnect: true,
    enableAutoPipelining: false,
    enableReadyCheck: true,
    scaleReads: "master",
    maxRedirections: 32,
    retryDelayOnFailover: 0,
    retryDelayOnClusterDown: 250,
    retryDelayOnTryAgain: 100,
    slotsRefreshTimeout: 2_000,
    clusterRetryStrategy: (attempt) => backoffMs(attempt, RECONNECT),
    // Keep the announced addresses as they are (no DNS round trip, and TLS SNI stays as given).
    dnsLookup: (address, callback) => callback(null, address),
  });
  client.on("error", () => {}); // as on every connection (see openConnection)
  // Every node connection the routed client opens, so a lost master is seen by all of them.
  const losses = new LossClock(options.silenceMs);
  client.on("+node", (node: Redis) => {
    guardStreamErrors(node);
    losses.watch(node, () => nodeName(node));
  });
  const deadline = Date.now() + CONNECT_TIMEOUT_MS;
  const failure = await withTimeout(client.connect(), CONNECT_TIMEOUT_MS);
  if (failure !== undefined) {
    client.disconnect();
    throw new RedisUnavailableError(
      `Redis Cluster at ${options.redacted} is unreachable (${errorLine(failure)})`,
    );
  }
  const base = { ...first, ...nodeOptions };
  const masters: Redis[] = [];
  try {
    for (const routed of client.nodes("master")) {
      const node = masterConnection(client, routed.options, base, servername, losses);
      masters.push(node);
      const wait = Math.max(deadline - Date.now(), 1_000);
      await connectWithin(node, nodeName(node), wait, options.signal);
    }
  } catch (error) {
    for (const node of masters) node.disconnect();
    client.disconnect();
    throw error;
  }
  return {
    kind: "cluster",
    client,
    masters: () => masters,
    nodeName,
    redacted: options.redacted,
    layout: () => slotLayout(client),
    // The master a connection points at, and the one that serves its slots now for the routed
    // client: they differ when the master was demoted (its replica took the slots over) and the
    // connection has not followed, having never dropped. Both count: a demoted master whose
    // slots nobody serves any more is as lost as a killed one.
    lostSince: (node) => {
      const times = [nodeName(node), servingNow(client, node)].map((name) =>
        name === undefined ? undefined : losses.lostSince(name)
      ).filter((t): t is number => t !== undefined);
      return times.length === 0 ? undefined : Math.min(...times);
    },
    abandon: (node) => {
      losses.abandon(nodeName(node));
      const serving = servingNow(client, node);
      if (serving !== undefined) losses.abandon(serving);
    },
    async close() {
      for (const node of masters) node.disconnect();
      client.disconnect();
      await Promise.resolve();
    },
  };
}

/** `start-end=<master node id>` per slot range, sorted (from CLUSTER SLOTS). */
async function slotLayout(client: Cluster): Promise<string> {
  const ranges = await client.cluster("SLOTS");
  return ranges.map(([start, end, master]) => `${start}-${end}=${master?.[2] ?? master?.[1]}`)
    .sort().join(",");
}

/** The slot each master connection follows (see {@linkcode masterConnection}). */
const followedSlot = new WeakMap<Redis, number>();

/** `host:port` of the master that serves the slots `node` follows, as the routed client knows. */
function servingNow(client: Cluster, node: Redis): string | undefined {
  const slot = followedSlot.get(node);
  return slot === undefined ? undefined : client.slots[slot]?.[0];
}

/** `host:port` the connection points at now (it follows its slots to a promoted replica). */
function nodeName(node: Redis): string {
  return nodeAddress(node.options.host, node.options.port);
}

/**
 * A plain connection to one master, for SCAN and INFO. It remembers one slot the master served at
 * the start; when the connection drops, every reconnect attempt goes to whoever serves that slot
 * now (the routed client's slot map, refreshed on each attempt). So after a failover the scan of
 * those slots continues on the promoted replica: the engine sees a new `run_id` and rescans from 0.
 * A master that merely restarts still serves its slots, so the connection returns to it.
 */
function masterConnection(
  client: Cluster,
  at: RedisOptions,
  base: RedisOptions,
  servername: string | undefined,
  losses: LossClock,
): Redis {
  const address = `${at.host}:${at.port}`;
  const slot = client.slots.findIndex((owners) => owners?.[0] === address);
  const tls = base.tls ? { ...base.tls, servername: servername ?? sniFor(at.host) } : undefined;
  const node = openConnection(
    {
      ...base,
      tls,
      host: at.host,
      port: at.port,
      db: 0,
      retryStrategy: (attempt) => {
        follow();
        return backoffMs(attempt, RECONNECT);
      },
    },
    losses,
    nodeName,
  );
  if (slot >= 0) followedSlot.set(node, slot);
  function follow() {
    const owner = servingNow(client, node);
    const colon = owner?.lastIndexOf(":") ?? -1;
    if (owner !== undefined && colon > 0) {
      node.options.host = owner.slice(0, colon);
      node.options.port = Number(owner.slice(colon + 1));
      if (node.options.tls && servername === undefined) {
        node.options.tls.servername = sniFor(node.options.host);
      }
    }
    // For the next attempt: the map may still name a master that is gone.
    client.refreshSlotsCache();
  }
  return node;
}

/** The target of one connection: a standalone server, or the primary the sentinels name. */
function oneClientTarget(
  kind: "standalone" | "sentinel",
  client: Redis,
  options: { redacted: string; nodeName: () => string; lossLabel: string; losses: LossClock },
): RedisTarget {
  const { losses, lossLabel } = options;
  return {
    kind,
    client,
    masters: () => [client],
    nodeName: options.nodeName,
    redacted: options.redacted,
    lostSince: () => losses.lostSince(lossLabel),
    abandon: () => losses.abandon(lossLabel),
    async close() {
      client.disconnect();
      await Promise.resolve();
    },
  };
}

/**
 * A connection the run scans over (a standalone server, a Sentinel primary, a cluster master),
 * set up before its first connect: a silent 'error' listener (without one, ioredis prints every
 * failed reconnect to stderr, unredacted), the SCAN fence (which must see the first `run_id`), the
 * stream guard, and the loss watch under `lossName` (default: `name`, its `host:port`).
 */
function openConnection(
  options: RedisOptions,
  losses: LossClock,
  name: (client: Redis) => string,
  lossName: (client: Redis) => string = name,
): Redis {
  const client = new Redis(options);
  client.on("error", () => {});
  fenceScanCursors(client, () => name(client));
  guardStreamErrors(client);
  losses.watch(client, () => lossName(client));
  return client;
}

/**
 * ioredis listens for a socket's 'error' with `once`. Under Deno a TLS socket can emit a second
 * error after the first (a write EPIPE right after the server's fatal alert, e.g. when it demands
 * a client certificate); with no listener left, that error is uncaught and ends the process
 * instead of becoming an exit-3 "unreachable". This keeps a listener on every socket `client`
 * opens (install it before the first connect); ioredis still handles the first error.
 */
function guardStreamErrors(client: Redis): void {
  const connector = (client as unknown as { connector?: Connector }).connector;
  if (!connector) return;
  const connect = connector.connect.bind(connector);
  connector.connect = async (...args: unknown[]) => {
    const stream = await connect(...args);
    stream.on("error", () => {});
    return stream;
  };
}

interface Connector {
  connect(...args: unknown[]): Promise<{ on(event: "error", fn: () => void): unknown }>;
}

/**
 * Redis refused us for a reason another try (or another seed) cannot fix: the credentials, or the
 * TLS certificate. Exit 3, like any unreachable Redis.
 */
class ConnectionRefusedError extends RedisUnavailableError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ConnectionRefusedError";
  }
}

/**
 * Connects `client` and PINGs, retrying with backoff until the deadline; never overruns it.
 *
 * @throws {RedisUnavailableError} when the deadline passes, the credentials are refused, or the
 * TLS handshake fails (the message names `name`, i.e. `host:port`, never a password).
 */
async function connectWithin(
  client: Redis,
  name: string,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  // A failed TLS handshake or refused connection reaches us only as an 'error' event; the
  // command itself just sees a closed stream. Keep the event's message for the diagnosis.
  const events: Error[] = [];
  const onError = (error: Error) => events.push(error);
  client.on("error", onError);
  try {
    let last: unknown = new Error("no answer");
    for (let n = 0; Date.now() < deadline; n++) {
      signal?.throwIfAborted();
      const outcome = await withTimeout(
        (async () => {
          if (client.status === "wait" || client.status === "end") await client.connect();
          await client.ping();
        })(),
        Math.min(deadline - Date.now(), 3_000),
      );
      if (outcome === undefined) return;
      // An event says more than "Stream isn't writeable" or "max retries" while ioredis
      // reconnects; a certificate or credentials problem says the most, even when others followed.
      last = events.findLast((event) => FATAL.has(classify(event).kind)) ?? events.at(-1) ??
        outcome;
      const message = errorLine(last);
      const { kind } = classify(last);
      if (FATAL.has(kind)) {
        throw new ConnectionRefusedError(
          kind === "tls"
            ? `TLS connection to Redis at ${name} failed: ${message}`
            : `Redis at ${name} refused the credentials (${message.split(" ")[0]})`,
          { cause: last },
        );
      }
      const wait = Math.min(
        backoffMs(n, { firstMs: 100, maxMs: 1_000 }),
        Math.max(deadline - Date.now(), 0),
      );
      await delay(wait, { signal });
    }
    throw last;
  } catch (error) {
    client.disconnect();
    if (error instanceof RedisUnavailableError || signal?.aborted) throw error;
    throw new RedisUnavailableError(
      `Redis at ${name} is unreachable after ${Math.round(timeoutMs / 1000)} s (${
        errorLine(error)
      })`,
    );
  } finally {
    client.off("error", onError);
  }
}

/** Failures another try cannot fix. */
const FATAL: ReadonlySet<string> = new Set(["credentials", "tls"]);
