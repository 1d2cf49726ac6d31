/**
 * The connection layer without a cluster: URL parsing and redaction, the cluster checkpoint key
 * layout, and the SCAN-cursor fence against a real redis-server that restarts.
 */
import assert from "node:assert/strict";
import { CheckpointStore } from "../src/run/checkpointer.ts";
import { UsageError } from "../src/errors.ts";
import { connectRedis } from "../src/redis/connect.ts";
import { redactSecrets } from "../src/telemetry/redact.ts";
import { ServerChangedError } from "../src/redis/errors.ts";
import { fenceScanCursors } from "../src/redis/fence.ts";
import { Redis } from "../src/redis/ioredis.ts";
import { mergeSentinelUrls, parseSentinelUrl } from "../src/redis/sentinel.ts";
import { startRedis } from "./support/redis_server.ts";
import { startDelayProxy } from "../bench/delay_proxy.ts";

Deno.test("redactSecrets hides --redis-url passwords, also in Sentinel URLs URL cannot parse", () => {
  assert.equal(
    redactSecrets("redis://app:s3cret@10.0.0.1:6379/0"),
    "redis://app:***@10.0.0.1:6379/0",
  );
  assert.equal(redactSecrets("rediss://:s3cret@cache:6380"), "rediss://:***@cache:6380");
  assert.equal(
    redactSecrets("redis+sentinel://app:s3cret@h1:26379,h2:26379/mymaster"),
    "redis+sentinel://app:***@h1:26379,h2:26379/mymaster",
  );
  assert.equal(
    redactSecrets("redis+sentinel://h1,h2/m?sentinel_password=pw&sentinel_username=s"),
    "redis+sentinel://h1,h2/m?sentinel_password=***&sentinel_username=s",
  );
  assert.equal(
    redactSecrets("redis+sentinel://u:p@ss@h1:1,h2:2/m"),
    "redis+sentinel://u:***@h1:1,h2:2/m",
  );
  // A user name alone may be a token (ioredis may send it as the password).
  assert.equal(redactSecrets("redis://tok3n@10.0.0.1:6379"), "redis://***@10.0.0.1:6379");
});

Deno.test("parseSentinelUrl: hosts, master, db, credentials, TLS", () => {
  assert.deepEqual(
    parseSentinelUrl(
      "rediss+sentinel://app:p%40ss@10.0.0.1:26380,[::1],sentinel-c/orders/2?sentinel_password=x",
    ),
    {
      tls: true,
      sentinels: [
        { host: "10.0.0.1", port: 26380 },
        { host: "::1", port: 26379 },
        { host: "sentinel-c", port: 26379 },
      ],
      master: "orders",
      db: 2,
      username: "app",
      password: "p@ss",
      sentinelUsername: undefined,
      sentinelPassword: "x",
    },
  );
  for (
    const bad of ["redis+sentinel://h1:26379", "redis+sentinel://h1:99999/m", "redis+sentinel:///m"]
  ) {
    assert.throws(() => parseSentinelUrl(bad), UsageError, bad);
  }
  const merged = mergeSentinelUrls([
    "redis+sentinel://a:1/m",
    "redis+sentinel://b:2/m",
  ]);
  assert.deepEqual(merged.sentinels, [{ host: "a", port: 1 }, { host: "b", port: 2 }]);
  assert.throws(
    () => mergeSentinelUrls(["redis+sentinel://a/m", "redis+sentinel://b/n"]),
    UsageError,
  );
});

Deno.test("checkpoint keys: standalone names unchanged; cluster names share one hash tag", () => {
  const store = new CheckpointStore({} as Redis, "ai:backfill");
  assert.deepEqual(store.keys(""), {
    cursor: "ai:backfill:cursor",
    lastJob: "ai:backfill:last_job",
    meta: "ai:backfill:meta",
    within: "ai:backfill:within",
    calls: "ai:backfill:calls",
  });
  assert.deepEqual(store.keys("07c37dfeb235213a872192d90877d0cd55635b91"), {
    cursor: "{ai:backfill}:cursor:07c37dfeb235213a872192d90877d0cd55635b91",
    lastJob: "{ai:backfill}:last_job:07c37dfeb235213a872192d90877d0cd55635b91",
    meta: "{ai:backfill}:meta:07c37dfeb235213a872192d90877d0cd55635b91",
    within: "{ai:backfill}:within:07c37dfeb235213a872192d90877d0cd55635b91",
    calls: "{ai:backfill}:calls:07c37dfeb235213a872192d90877d0cd55635b91",
  });
});

Deno.test("fence: after a restart behind a silent reconnect, a continued SCAN fails; cursor 0 works", async () => {
  const server = await startRedis({ aof: true });
  const probe = server.client();
  try {
    // Enough keys that a COUNT 1 SCAN cannot finish in one call.
    await probe.mset(
      Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`ai:jobs:${i}`, "1"])),
    );
    const target = await connectRedis([server.url]);
    try {
      const node = target.masters()[0]!;
      const [cursor] = await node.scanBuffer("0", "COUNT", 1);
      assert.notEqual(cursor.toString(), "0");
      // Nothing in flight: ioredis reconnects to the restarted server without any error.
      let ready = reconnected(node);
      await server.kill();
      await server.start();
      await ready;
      await assert.rejects(
        node.scanBuffer(cursor.toString(), "COUNT", 1),
        (error: unknown) =>
          error instanceof ServerChangedError && /127\.0\.0\.1:\d+/.test(error.message),
      );
      const [fresh] = await node.scanBuffer("0", "COUNT", 1);
      // A reconnect to the same server process (same run_id) keeps the cursor valid: not fenced.
      ready = reconnected(node);
      await probe.client("KILL", "TYPE", "normal");
      await ready;
      const [next] = await node.scanBuffer(fresh.toString(), "COUNT", 1000);
      assert.equal(next.toString(), "0");
      assert.equal(target.kind, "standalone");
      // Several seeds only make sense for a cluster.
      await assert.rejects(connectRedis([server.url, server.url]), UsageError);
    } finally {
      await target.close();
    }
  } finally {
    probe.disconnect();
    await server.stop();
  }
});

/** Resolves when `node` is ready again after a drop, and its fence has read the run_id. */
async function reconnected(node: Redis): Promise<void> {
  await new Promise((resolve) => node.once("close", resolve));
  await new Promise((resolve) => node.once("ready", resolve));
  await node.ping();
}

Deno.test("fence: a reconnect whose run_id read fails is checked again, not fenced for good", async () => {
  const server = await startRedis();
  const probe = server.client();
  const proxy = startDelayProxy({ targetPort: server.port, delayMs: 1 });
  // As the run's connections: a command whose connection drops fails, never resent.
  const node = new Redis({
    port: proxy.port,
    lazyConnect: true,
    retryStrategy: () => 50,
    maxRetriesPerRequest: 0,
  });
  node.on("error", () => {});
  fenceScanCursors(node, () => `127.0.0.1:${proxy.port}`);
  try {
    await probe.mset(
      Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`ai:jobs:${i}`, "1"])),
    );
    await node.connect();
    const [cursor] = await node.scanBuffer("0", "COUNT", 1);
    assert.notEqual(cursor.toString(), "0");
    // Dropped; at the reconnect the fence's INFO is sent, and the connection drops again before
    // its reply; the next reconnect reaches the same server process.
    const twice = new Promise<void>((resolve) => {
      node.once("ready", () => {
        proxy.drop();
        node.once("ready", () => resolve());
      });
    });
    proxy.drop();
    await twice;
    const [next] = await node.scanBuffer(cursor.toString(), "COUNT", 1000);
    assert.equal(next.toString(), "0");
  } finally {
    node.disconnect();
    probe.disconnect();
    await proxy.close();
    await server.stop();
  }
});
