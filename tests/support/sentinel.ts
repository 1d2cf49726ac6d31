/**
 * A Sentinel setup for the tests: a primary, one replica and sentinels (`redis-server --sentinel`)
 * that monitor them as `mymaster`, all on free loopback ports.
 *
 * @module
 */
import { redisCli } from "./cluster.ts";
import { freePort, type RedisServer, startRedis, waitForPing } from "./redis_server.ts";

/** The name the sentinels monitor. */
export const MASTER_NAME = "mymaster";

/** A running Sentinel setup. */
export interface TestSentinel {
  primary: RedisServer;
  replica: RedisServer;
  sentinelPorts: number[];
  /** `redis+sentinel://127.0.0.1:<first sentinel>/mymaster`. */
  url: string;
  /** The port of the server the sentinels call the primary now. */
  currentPrimaryPort(): Promise<number>;
  stop(): Promise<void>;
}

/** Starts a primary, a synced replica and `sentinels` sentinels (default 2). */
export async function startSentinel(sentinels = 2): Promise<TestSentinel> {
  const started: { stop(): Promise<void> }[] = [];
  const stop = async () => {
    for (const item of started.reverse()) await item.stop();
  };
  try {
    const primary = await startRedis({ aof: true });
    started.push(primary);
    const replica = await startRedis({
      aof: true,
      args: ["--replicaof", "127.0.0.1", String(primary.port)],
    });
    started.push(replica);
    await waitUntil(
      "the replica to sync",
      async () =>
        (await redisCli(replica.port, "INFO", "replication")).includes("master_link_status:up"),
    );
    const ports: number[] = [];
    for (let i = 0; i < sentinels; i++) {
      const port = freePort();
      const dir = await Deno.makeTempDir({ prefix: "backfill-sentinel-" });
      await Deno.writeTextFile(
        `${dir}/sentinel.conf`,
        [
          `port ${port}`,
          "bind 127.0.0.1",
          `dir ${dir}`,
          `sentinel monitor ${MASTER_NAME} 127.0.0.1 ${primary.port} 1`,
          `sentinel down-after-milliseconds ${MASTER_NAME} 1000`,
          `sentinel failover-timeout ${MASTER_NAME} 5000`,
          "",
        ].join("\n"),
      );
      const child = new Deno.Command("redis-server", {
        args: [`${dir}/sentinel.conf`, "--sentinel"],
        stdout: "null",
        stderr: "null",
      }).spawn();
      started.push({
        async stop() {
          child.kill("SIGTERM");
          await child.status;
          await Deno.remove(dir, { recursive: true }).catch(() => {});
        },
      });
      await waitForPing(port);
      ports.push(port);
    }
    const currentPrimaryPort = async () => {
      const reply = await redisCli(ports[0]!, "SENTINEL", "get-master-addr-by-name", MASTER_NAME);
      return Number(reply.trim().split("\n")[1]);
    };
    // Every sentinel knows the replica (a failover needs one).
    for (const port of ports) {
      await waitUntil(
        "the sentinel to see the replica",
        async () =>
          (await redisCli(port, "SENTINEL", "replicas", MASTER_NAME)).includes(
            String(replica.port),
          ),
      );
    }
    return {
      primary,
      replica,
      sentinelPorts: ports,
      url: `redis+sentinel://127.0.0.1:${ports[0]}/${MASTER_NAME}`,
      currentPrimaryPort,
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Polls `check` every 100 ms until it holds. */
export async function waitUntil(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
