/**
 * Starts a real Redis Cluster for the tests: N masters (and optionally one replica each) as
 * `redis-server --cluster-enabled yes` processes on free loopback ports, joined with
 * `redis-cli --cluster create`. Every node has its own directory (nodes.conf, AOF), so a killed
 * node restarts with the same node id and data.
 *
 * @module
 */
import { Cluster, Redis } from "../../src/redis/ioredis.ts";
import { oldKeyFor } from "./keys.ts";
import { freePort, type RedisServer, startRedis } from "./redis_server.ts";
import type { TestJob } from "./seed.ts";
import type { TestPki } from "./tls.ts";

/** Options for {@linkcode startCluster}. */
export interface ClusterOptions {
  /** Masters (default 3). */
  masters?: number;
  /** Replicas per master (default 0). */
  replicas?: number;
  /** Persist with AOF, so a restarted node keeps its keys. */
  aof?: boolean;
  /** `cluster-node-timeout` in ms (default 2000: quick failure detection in tests). */
  nodeTimeoutMs?: number;
  /**
   * Also listen with TLS (`--tls-port`, `--tls-cluster yes`: the nodes announce their TLS ports to
   * clients). The plain ports stay open for the test's own tools.
   */
  tls?: TestPki;
}

/** A running test cluster. */
export interface TestCluster {
  /** Every node, masters first (as passed to `redis-cli --cluster create`). */
  nodes: RedisServer[];
  /** `redis://127.0.0.1:<port>` of the first node (a seed). */
  url: string;
  /** TLS port per node (with the `tls` option). */
  tlsPorts: number[];
  /** A cluster client (the caller disconnects it). */
  client(): Cluster;
  /** A standalone client per node (the caller disconnects them). */
  nodeClients(): Redis[];
  /** Waits until every running node reports `cluster_state:ok` and agrees on the masters. */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** Stops every node and removes their directories. */
  stop(): Promise<void>;
}

/** Starts a cluster and waits until it is healthy. Stops what it started when it fails. */
export async function startCluster(options: ClusterOptions = {}): Promise<TestCluster> {
  const masters = options.masters ?? 3;
  const replicas = options.replicas ?? 0;
  const nodes: RedisServer[] = [];
  const stop = async () => {
    await Promise.all(nodes.map((node) => node.stop()));
  };
  try {
    const tlsPorts: number[] = [];
    for (let i = 0; i < masters * (1 + replicas); i++) {
      const pki = options.tls;
      if (pki) tlsPorts.push(freePort());
      const tlsArgs = pki
        ? [
          "--tls-port",
          String(tlsPorts[i]),
          "--tls-cluster",
          "yes",
          "--tls-replication",
          "yes",
          "--tls-cert-file",
          pki.serverCert,
          "--tls-key-file",
          pki.serverKey,
          "--tls-ca-cert-file",
          pki.ca,
          "--tls-auth-clients",
          "no",
        ]
        : [];
      nodes.push(
        await startRedis({
          aof: options.aof,
          args: [
            ...tlsArgs,
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            String(options.nodeTimeoutMs ?? 2000),
            // A replica may be promoted at once however long it was cut off (tests only).
            "--cluster-replica-validity-factor",
            "0",
          ],
        }),
      );
    }
    const create = await new Deno.Command("redis-cli", {
      args: [
        "--cluster",
        "create",
        // With tls-cluster the bus listens on the TLS port + 10000: introduce nodes by TLS port.
        ...(options.tls
          ? [...tlsPorts.map((port) => `127.0.0.1:${port}`), "--tls", "--cacert", options.tls.ca]
          : nodes.map((node) => `127.0.0.1:${node.port}`)),
        "--cluster-replicas",
        String(replicas),
        "--cluster-yes",
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!create.success) {
      throw new Error(
        `redis-cli --cluster create failed:\n${new TextDecoder().decode(create.stdout)}`,
      );
    }
    const cluster: TestCluster = {
      nodes,
      url: nodes[0]!.url,
      tlsPorts,
      client: () =>
        new Cluster(
          nodes.slice(0, masters).map((node) => ({ host: "127.0.0.1", port: node.port })),
          {
            redisOptions: { maxRetriesPerRequest: 3 },
          },
        ),
      nodeClients: () => nodes.map((node) => node.client()),
      waitHealthy: (timeoutMs = 30_000) => waitHealthy(nodes, masters, timeoutMs),

      stop,
    };
    await cluster.waitHealthy();
    return cluster;
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Runs `redis-cli -p <port> <args>` and returns its stdout. */
export async function redisCli(port: number, ...args: string[]): Promise<string> {
  const out = await new Deno.Command("redis-cli", {
    args: ["-p", String(port), ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return new TextDecoder().decode(out.stdout);
}

async function waitHealthy(nodes: RedisServer[], masters: number, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    const states = await Promise.all(nodes.map(async (node) => {
      const info = await redisCli(node.port, "CLUSTER", "INFO").catch(() => "");
      const view = await redisCli(node.port, "CLUSTER", "NODES").catch(() => "");
      const replication = await redisCli(node.port, "INFO", "replication").catch(() => "");
      const liveMasters = view.split("\n").filter((line) => {
        const [, , flags = "", , , , , link, ...slots] = line.split(" ");
        return flags.split(",").includes("master") && !flags.includes("fail") &&
          link === "connected" && slots.length > 0;
      }).length;
      const synced = !replication.includes("role:slave") ||
        replication.includes("master_link_status:up");
      return { ok: info.includes("cluster_state:ok"), liveMasters, synced };
    }));
    last = JSON.stringify(states);
    // Every node must also see every master with slots (so clients get one consistent map), and
    // every replica must be in sync (so it can take over).
    if (states.every((s) => s.ok && s.liveMasters === masters && s.synced)) return;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`cluster not healthy within ${timeoutMs} ms: ${last}`);
}

/** Writes jobs in the old schema through a cluster client (keys land on every node). */
export async function seedOldCluster(client: Cluster, jobs: TestJob[]): Promise<void> {
  for (let i = 0; i < jobs.length; i += 200) {
    await Promise.all(
      jobs.slice(i, i + 200).map(async (job) => {
        const key = oldKeyFor(job.id);
        await client.hset(key, { workspace_id: job.workspace, ...job.fields });
        if (job.ttl) await client.expire(key, job.ttl);
      }),
    );
  }
}

/** `rdb_changes_since_last_save` of every node, in node order. */
export async function writeCounters(clients: Redis[]): Promise<number[]> {
  return await Promise.all(clients.map(async (client) => {
    const info = await client.info("persistence");
    return Number(info.match(/rdb_changes_since_last_save:(\d+)/)?.[1] ?? NaN);
  }));
}

/** Keys matching `match` over every given node (masters only for an exact count). */
export async function countClusterKeys(clients: Redis[], match: string): Promise<number> {
  let total = 0;
  for (const client of clients) {
    const role = await client.call("ROLE") as unknown[];
    if (role[0] !== "master") continue;
    let cursor = "0";
    do {
      const [next, keys] = await client.scanBuffer(cursor, "MATCH", match, "COUNT", 1000);
      cursor = next.toString();
      total += keys.length;
    } while (cursor !== "0");
  }
  return total;
}
