import assert from "node:assert/strict";
import { UsageError } from "../src/errors.ts";
import {
  isLagging,
  parseReplicaLagLimit,
  parseReplication,
  watchReplicaLag,
} from "../src/control/replica_lag.ts";
import { startRedis, withRedis } from "./support/redis_server.ts";
import { waitFor } from "./support/cli.ts";

const INFO = `# Replication\r
role:master\r
connected_slaves:2\r
slave0:ip=10.0.0.2,port=6380,state=online,offset=9000,lag=0\r
slave1:ip=10.0.0.3,port=6380,state=wait_bgsave,offset=0,lag=7\r
master_failover_state:no-failover\r
master_repl_offset:10000\r
`;

Deno.test("parseReplication: bytes behind and seconds since the last ack, per replica", () => {
  assert.deepEqual(parseReplication(INFO), [
    { address: "10.0.0.2:6380", state: "online", bytes: 1000, seconds: 0 },
    { address: "10.0.0.3:6380", state: "wait_bgsave", bytes: 10000, seconds: 7 },
  ]);
  assert.deepEqual(parseReplication("role:master\r\nconnected_slaves:0\r\n"), []);
});

Deno.test("--max-replica-lag: bytes with k/M/G, seconds, 0 = off; anything else is a usage error", () => {
  assert.deepEqual(parseReplicaLagLimit("16M"), { kind: "bytes", bytes: 16 * 1024 ** 2 });
  assert.deepEqual(parseReplicaLagLimit("512k"), { kind: "bytes", bytes: 512 * 1024 });
  assert.deepEqual(parseReplicaLagLimit("1.5GB"), { kind: "bytes", bytes: 1.5 * 1024 ** 3 });
  assert.deepEqual(parseReplicaLagLimit("1048576"), { kind: "bytes", bytes: 1048576 });
  assert.deepEqual(parseReplicaLagLimit("10s"), { kind: "seconds", seconds: 10 });
  assert.deepEqual(parseReplicaLagLimit("0"), { kind: "off" });
  assert.deepEqual(parseReplicaLagLimit("0s"), { kind: "off" });
  for (const bad of ["", "-1", "10x", "ten", "1e6", "10 s", "M"]) {
    assert.throws(() => parseReplicaLagLimit(bad), (error: unknown) => {
      assert.ok(error instanceof UsageError);
      assert.match(error.message, /^--max-replica-lag must be bytes .* got '/);
      return true;
    }, bad);
  }
});

Deno.test("isLagging judges online replicas only, by the limit's measure", () => {
  const [online, syncing] = parseReplication(INFO);
  assert.equal(isLagging(online!, { kind: "bytes", bytes: 999 }), true);
  assert.equal(isLagging(online!, { kind: "bytes", bytes: 1000 }), false);
  assert.equal(isLagging(online!, { kind: "seconds", seconds: 1 }), false);
  assert.equal(isLagging(syncing!, { kind: "bytes", bytes: 1 }), false);
  assert.equal(isLagging(online!, { kind: "off" }), false);
});

Deno.test("a real replica frozen while writes go on: lag rises past the limit, and falls after", async () => {
  await withRedis(async (master, client) => {
    const replica = await startRedis({ args: ["--replicaof", "127.0.0.1", String(master.port)] });
    const controller = new AbortController();
    const changes: boolean[] = [];
    const bytes: number[] = [];
    let writing = true;
    try {
      await waitFor(
        "the replica online",
        async () => /slave0:.*state=online/.test(await client.info("replication")),
      );
      const watch = watchReplicaLag(client, {
        node: "m",
        limit: { kind: "bytes", bytes: 3 * 1024 ** 2 },
        signal: controller.signal,
        intervalMs: 100,
        onReplicaLag: (event) => bytes.push(event.bytes),
        onChange: (event) => changes.push(event.over),
      });
      const value = "x".repeat(1024);
      // About 1 MB/s: a replica acknowledges once a second, so a healthy one is up to ~1 MB behind.
      const writer = (async () => {
        for (let i = 0; writing; i++) {
          const pipeline = client.pipeline();
          for (let k = 0; k < 100; k++) pipeline.set(`k${(i * 100 + k) % 5000}`, value);
          await pipeline.exec();
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      })();
      await new Promise((resolve) => setTimeout(resolve, 2000));
      assert.equal(watch.over, false, "a live replica keeps up");
      const healthy = Math.max(...bytes);
      assert.ok(healthy < 3 * 1024 ** 2, `healthy: ${healthy} bytes behind`);
      replica.signal("SIGSTOP");
      await waitFor("lag past the limit", () => watch.over, 20_000);
      const frozen = watch.replicas[0]!;
      assert.ok(frozen.bytes > 3 * 1024 ** 2, `${frozen.bytes} bytes behind`);
      await waitFor("lag seconds rising", () => (watch.replicas[0]?.seconds ?? 0) >= 2, 20_000);
      replica.signal("SIGCONT");
      await waitFor("the replica caught up", () => !watch.over, 20_000);
      writing = false;
      await writer;
      assert.deepEqual(changes, [true, false], "one change each way");
      assert.ok(bytes.length > 5 && Math.max(...bytes) > 3 * 1024 ** 2);
      controller.abort();
      await watch.done;
    } finally {
      writing = false;
      controller.abort();
      replica.signal("SIGCONT");
      await replica.stop();
    }
  });
});
