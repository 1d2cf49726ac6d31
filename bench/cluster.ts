/**
 * The cluster section: a 3-master Redis Cluster started by the bench (the
 * minimal logic of the tests' cluster support: `--cluster-enabled` servers joined with
 * `redis-cli --cluster create`), the standalone's seeded data copied in with DUMP/RESTORE, and
 * `backfill --execute --rps 0` on both. Reports cluster keys/s ÷ standalone keys/s (target >= 0.6
 * on this 2-core machine) and Redis CPU per key summed over the masters against the standalone's.
 *
 * Not done: the RTT proxy in front of a cluster. The nodes announce their own ports in
 * CLUSTER SLOTS and redirects, so a client behind a proxy would go around it; proxying needs one
 * proxy per node and `cluster-announce-port` set to the proxy's port on every node.
 *
 * @module
 */
import { Cluster } from "../src/redis/ioredis.ts";
import { type BenchServer, redisCpuSeconds } from "./server.ts";
import { parseJson, runCli, unthrottledRun } from "./cli.ts";
import type { Check } from "./backfill_run.ts";
import type { SeedStats } from "./seed.ts";
import { pinProcess } from "./pin.ts";
import { type RedisServer, startRedis } from "../tests/support/redis_server.ts";

/** One backfill run (standalone or cluster). */
export interface TopologyRun {
  keysPerSecond: number;
  scanned: number;
  migrated: number;
  exitCode: number;
  /** used_cpu_sys + used_cpu_user deltas, summed over the masters, seconds. */
  redisCpuSeconds: number;
  redisCpuMicrosPerKey: number;
  /** The CLI process's user + system CPU, seconds (start-up included). */
  clientCpuSeconds: number;
}

/** Standalone vs cluster. */
export interface ClusterBenchResult {
  masters: number;
  standalone: TopologyRun;
  cluster: TopologyRun;
  /** cluster keys/s ÷ standalone keys/s. */
  ratio: number;
  target: { goal: string; pass: boolean };
  notes: string[];
}

const started = new Set<RedisServer>();

/** Stops every cluster node the bench started (cleanup, also on error or a signal). */
export async function stopAllClusterNodes(): Promise<void> {
  await Promise.all([...started].map((node) => node.stop()));
  started.clear();
}

/**
 * Starts `masters` cluster-enabled servers (each pinned to core `cpu` when given), joins them with
 * `redis-cli --cluster create` and waits for `cluster_state:ok`. Each node keeps its `nodes.conf`
 * in its own directory, so a killed node restarts into the same cluster.
 */
export async function startBenchCluster(masters: number, cpu?: number): Promise<RedisServer[]> {
  const nodes: RedisServer[] = [];
  for (let i = 0; i < masters; i++) {
    const node = await startRedis({
      args: ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"],
    });
    started.add(node);
    nodes.push(node);
    if (cpu !== undefined) {
      const c = node.client();
      const pid = (await c.info("server")).match(/^process_id:(\d+)/m)?.[1];
      c.disconnect();
      await pinProcess(Number(pid), cpu);
    }
  }
  const create = await new Deno.Command("redis-cli", {
    args: [
      "--cluster",
      "create",
      ...nodes.map((n) => `127.0.0.1:${n.port}`),
      "--cluster-replicas",
      "0",
      "--cluster-yes",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!create.success) throw new Error("redis-cli --cluster create failed");
  const deadline = Date.now() + 30_000;
  for (;;) {
    const ok = await Promise.all(nodes.map(async (n) => {
      const c = n.client();
      try {
        return String(await c.call("CLUSTER", "INFO")).includes("cluster_state:ok");
      } finally {
        c.disconnect();
      }
    }));
    if (ok.every(Boolean)) return nodes;
    if (Date.now() > deadline) throw new Error("cluster not ok within 30 s");
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** Copies every key of the standalone server into the cluster (DUMP/PTTL there, RESTORE here). */
export async function copyData(server: BenchServer, nodes: RedisServer[]): Promise<number> {
  const source = server.client();
  const cluster = new Cluster(nodes.map((n) => ({ host: "127.0.0.1", port: n.port })));
  let copied = 0;
  try {
    let cursor = "0";
    do {
      const [next, keys] = await source.scan(cursor, "COUNT", 1000);
      cursor = next;
      const pipe = source.pipeline();
      for (const key of keys) pipe.dumpBuffer(key).pttl(key);
      const replies = (await pipe.exec()) ?? [];
      await Promise.all(keys.map((key, i) => {
        const dump = replies[2 * i]?.[1] as Uint8Array | null;
        const ttl = Number(replies[2 * i + 1]?.[1]);
        if (!dump) return;
        copied++;
        return cluster.call("RESTORE", key, String(ttl > 0 ? ttl : 0), dump as never);
      }));
    } while (cursor !== "0");
  } finally {
    source.disconnect();
    cluster.disconnect();
  }
  return copied;
}

/** Redis CPU seconds summed over the servers. */
async function cpuOf(servers: { client(): ReturnType<BenchServer["client"]> }[]): Promise<number> {
  const clients = servers.map((s) => s.client());
  try {
    const all = await Promise.all(clients.map((c) => redisCpuSeconds(c)));
    return all.reduce((a, b) => a + b, 0);
  } finally {
    for (const c of clients) c.disconnect();
  }
}

async function run(
  url: string,
  cpu: () => Promise<number>,
  seeded: SeedStats,
  checks: Check[],
  label: string,
): Promise<TopologyRun> {
  const before = await cpu();
  const result = await runCli(unthrottledRun(url));
  const redisCpu = await cpu() - before;
  const summary = parseJson(result);
  const scanned = Number(summary.scanned), migrated = Number(summary.migrated);
  checks.push({
    name: `${label}: exit 0, scanned = seeded, migrated = valid`,
    ok: result.code === 0 && scanned === seeded.keys && migrated === seeded.valid,
    detail: `exit ${result.code}, scanned ${scanned}, migrated ${migrated}\n${result.stderrTail}`,
  });
  return {
    keysPerSecond: scanned / Number(summary.duration_seconds),
    scanned,
    migrated,
    exitCode: result.code,
    redisCpuSeconds: redisCpu,
    redisCpuMicrosPerKey: migrated ? redisCpu * 1e6 / migrated : NaN,
    clientCpuSeconds: result.cpuSeconds,
  };
}

/** Standalone run, then the same data on a 3-master cluster (masters pinned to `clusterCpu`). */
export async function measureCluster(
  server: BenchServer,
  options: { seeded: SeedStats; checks: Check[]; rttMs?: number; clusterCpu?: number },
): Promise<ClusterBenchResult> {
  const { seeded, checks } = options;
  const notes: string[] = [];
  if (options.rttMs !== undefined && options.rttMs > 0) {
    notes.push("the RTT proxy is not run for the cluster (nodes announce their own ports)");
  }
  await server.restore();
  const nodes = await startBenchCluster(3, options.clusterCpu);
  try {
    const copied = await copyData(server, nodes);
    checks.push({
      name: "cluster holds the seeded keys",
      ok: copied === seeded.keys,
      detail: `${copied} of ${seeded.keys} copied`,
    });
    const standalone = await run(
      server.url,
      () => cpuOf([server]),
      seeded,
      checks,
      "standalone",
    );
    const cluster = await run(
      nodes[0]!.url,
      () => cpuOf(nodes),
      seeded,
      checks,
      "cluster",
    );
    const ratio = cluster.keysPerSecond / standalone.keysPerSecond;
    return {
      masters: nodes.length,
      standalone,
      cluster,
      ratio,
      target: { goal: ">= 0.6", pass: ratio >= 0.6 },
      notes,
    };
  } finally {
    await Promise.all(nodes.map((n) => n.stop()));
    for (const n of nodes) started.delete(n);
  }
}

/** The section's lines for the printed report. */
export function renderCluster(r: ClusterBenchResult): string[] {
  const k = (v: number) => Math.round(v).toLocaleString("en-US");
  const line = (name: string, t: TopologyRun) =>
    `  ${name}: ${k(t.keysPerSecond)} keys/s (in-process), Redis CPU ${
      t.redisCpuSeconds.toFixed(2)
    } s = ${t.redisCpuMicrosPerKey.toFixed(2)} us/key${
      name === "cluster" ? " (sum of masters)" : ""
    }, client CPU ${t.clientCpuSeconds.toFixed(2)} s`;
  return [
    `cluster: backfill --execute --rps 0, the same data on a standalone and on a ` +
    `${r.masters}-master cluster (every server on the Redis core)`,
    line("standalone", r.standalone),
    line("cluster", r.cluster),
    `  cluster / standalone keys/s = ${r.ratio.toFixed(2)} (target ${r.target.goal}: ${
      r.target.pass ? "met" : "missed"
    }); Redis CPU per key cluster / standalone = ${
      (r.cluster.redisCpuMicrosPerKey / r.standalone.redisCpuMicrosPerKey).toFixed(2)
    }`,
    ...r.notes.map((n) => `  note: ${n}`),
  ];
}
