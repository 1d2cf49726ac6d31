/**
 * Redis Cluster: detection on a seed, the routed cluster client (key reads and writes follow
 * MOVED/ASK), and one plain connection per master for SCAN, INFO and DBSIZE (SCAN has no key, so
 * it must run on each master itself).
 *
 * @module
 */
import { backoffMs, RECONNECT } from "../async/backoff.ts";
import { RedisUnavailableError, UsageError } from "../errors.ts";
import { Cluster, type Redis, type RedisOptions } from "./ioredis.ts";
import { errorLine } from "./errors.ts";
import { nodeAddress, sniFor } from "./options.ts";
import { connectWithin, guardStreamErrors, openConnection, withTimeout } from "./reach.ts";
import { LossClock } from "./availability.ts";
import type { RedisTarget } from "./target.ts";
import type { ConnectOptions } from "./connect.ts";

/** True when the server is a cluster node (`INFO cluster`); disconnects `client` on a failure. */
export async function isClusterNode(client: Redis, name: string): Promise<boolean> {
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
 * Connects to a cluster through `seeds` (options built from every seed URL; credentials and TLS of
 * the first apply to every node; `redacted` names them in logs) and opens one connection per
 * master. `--tls-servername` is every node's SNI; without it each node's own host is used.
 *
 * @throws {UsageError} when a seed selects a database other than 0 (a cluster has only db 0).
 * @throws {RedisUnavailableError} when the cluster or a master cannot be reached in time.
 */
export async function connectCluster(
  seeds: RedisOptions[],
  options: ConnectOptions & { timeoutMs: number; redacted: string },
): Promise<RedisTarget> {
  const first = seeds[0];
  if (first === undefined) throw new UsageError("no Redis URL given");
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
  const deadline = Date.now() + options.timeoutMs;
  const failure = await withTimeout(client.connect(), options.timeoutMs);
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
    const owner = slot >= 0 ? client.slots[slot]?.[0] : undefined;
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
