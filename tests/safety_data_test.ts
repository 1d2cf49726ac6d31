/**
 * Live dual-writes and odd data against a real redis-server, checking the end state of Redis.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { newKeyFor, oldKeyFor, parseNewKey } from "./support/keys.ts";
import { runJson } from "./support/cli.ts";
import { type RedisServer, withRedis } from "./support/redis_server.ts";
import { countKeys, makeJobs, newKey, seedOld, type TestJob } from "./support/seed.ts";

/**
 * The application's dual-write, as phases 1-2 shipped it: every change goes to the old key first,
 * then to the new key; a delete removes the old key first.
 */
async function applicationWriter(server: RedisServer, jobs: TestJob[], stop: () => boolean) {
  const app = server.client();
  const counts = { create: 0, updateAll: 0, updateField: 0, delete: 0, expire: 0 };
  let i = 0;
  let next = jobs.length;
  const deleted = new Set<string>();
  try {
    while (!stop()) {
      const job = jobs[(i * 7919) % jobs.length]!;
      // A deleted job stays deleted (the application never writes to it again).
      if (deleted.has(job.id)) {
        i++;
        continue;
      }
      const old = oldKeyFor(job.id);
      const fresh = newKey(job);
      switch (i++ % 5) {
        case 0: { // create a new job in both schemas
          const id = `live-${next++}`;
          const fields = { workspace_id: "ws-live", status: "queued", n: String(i) };
          await app.hset(oldKeyFor(id), fields);
          await app.hset(newKeyFor("ws-live", id), fields);
          counts.create++;
          break;
        }
        case 1: { // rewrite the whole object
          const fields = {
            ...job.fields,
            workspace_id: job.workspace,
            status: `all-${i}`,
            extra: "x",
          };
          await app.hset(old, fields);
          await app.hset(fresh, fields);
          counts.updateAll++;
          break;
        }
        case 2: // one field (creates a partial new key when the job was not migrated yet)
          await app.hset(old, "status", `one-${i}`);
          await app.hset(fresh, "status", `one-${i}`);
          counts.updateField++;
          break;
        case 3:
          deleted.add(job.id);
          await app.del(old);
          await app.del(fresh);
          counts.delete++;
          break;
        case 4:
          await app.expire(old, 5000);
          await app.expire(fresh, 5000);
          counts.expire++;
          break;
      }
    }
  } finally {
    app.disconnect();
  }
  return counts;
}

Deno.test("live dual-writes: every job ends equal in both schemas, nothing overwritten or re-created", async () => {
  await withRedis(async (server, client) => {
    const jobs = makeJobs(6000);
    await seedOld(client, jobs);
    let done = false;
    const writer = applicationWriter(server, jobs, () => done);
    const result = await runJson([
      "--execute",
      "--rps",
      "3000",
      "--batch",
      "200",
      "--redis-url",
      server.url,
    ]);
    done = true;
    const counts = await writer;
    assert.equal(result.code, 0, result.stderr);
    for (const [op, n] of Object.entries(counts)) assert.ok(n > 20, `${op}: ${n}`);

    // Full audit: every old job has an equal new twin (fields, TTL) and every new key an old twin.
    let cursor = "0";
    let audited = 0;
    do {
      const [next, keys] = await client.scanBuffer(cursor, "MATCH", "ai:jobs:*", "COUNT", 1000);
      cursor = next.toString();
      for (const old of keys) {
        const fields = await client.hgetall(old);
        const fresh = newKeyFor(fields.workspace_id!, old.subarray(8));
        assert.deepEqual(await client.hgetall(fresh), fields, old.toString());
        const [a, b] = [await client.pttl(old), await client.pttl(fresh)];
        assert.ok((a === -1) === (b === -1) && Math.abs(a - b) < 2000, `${old} ttl ${a} vs ${b}`);
        audited++;
      }
    } while (cursor !== "0");
    assert.ok(audited > 5000);
    do {
      const [next, keys] = await client.scanBuffer(cursor, "MATCH", "ai:job:*", "COUNT", 1000);
      cursor = next.toString();
      for (const key of keys) {
        const parsed = parseNewKey(key)!;
        assert.equal(await client.exists(oldKeyFor(parsed.jobId)), 1, `resurrected ${key}`);
      }
    } while (cursor !== "0");
  });
});

Deno.test("keys that expire mid-run never leave an immortal copy", async () => {
  await withRedis(async (server, client) => {
    const jobs = makeJobs(3000);
    await seedOld(client, jobs);
    const pipeline = client.pipeline();
    jobs.forEach((job, i) => pipeline.pexpire(oldKeyFor(job.id), 50 + (i % 40) * 20));
    await pipeline.exec();
    const result = await runJson([
      "--execute",
      "--rps",
      "3000",
      "--batch",
      "100",
      "--redis-url",
      server.url,
    ]);
    assert.equal(result.code, 0);
    // Every scanned key was copied or had expired. SCAN may return a key twice while the
    // expiring table shrinks: its second read finds its own copy (skipped_exists).
    const { migrated, skipped_gone, skipped_exists, scanned } = result.summary;
    assert.equal(Number(migrated) + Number(skipped_gone) + Number(skipped_exists), scanned);
    assert.ok(Number(skipped_exists) <= 10, `SCAN's duplicates: ${skipped_exists}`);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    assert.equal(await countKeys(client, "ai:jobs:*"), 0);
    assert.equal(await countKeys(client, "ai:job:*"), 0, "every copy expired with its original");
  });
});

Deno.test("a 100k-field hash and a 20 MB value are copied whole", async () => {
  await withRedis(async (server, client) => {
    const wide: Record<string, string> = { workspace_id: "ws-a" };
    for (let i = 0; i < 100_000; i++) wide[`f${i}`] = `v${i}`;
    await client.hset("ai:jobs:wide", wide);
    const big = Buffer.alloc(20 * 1024 * 1024, 0x61);
    await client.hset("ai:jobs:big", { workspace_id: "ws-b", blob: big });
    // A partial new twin of the wide hash: the repair must add 99,999 fields without overwriting.
    await client.hset("ai:job:ws-a:wide", { f0: "app-value" });
    const result = await runJson(["--execute", "--rps", "0", "--redis-url", server.url]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.summary.migrated, 1);
    assert.equal(result.summary.repaired, 1);
    assert.equal(await client.hlen("ai:job:ws-a:wide"), 100_001);
    assert.equal(await client.hget("ai:job:ws-a:wide", "f0"), "app-value");
    assert.equal(await client.hget("ai:job:ws-a:wide", "f99999"), "v99999");
    assert.deepEqual(await client.hgetBuffer("ai:job:ws-b:big", "blob"), big);
    assert.ok(!result.stderr.includes("aaaaaaaa"), "no value in the logs");
  });
});

Deno.test("odd keys: non-hash types and empty job ids are invalid; nothing crashes", async () => {
  await withRedis(async (server, client) => {
    await client.set("ai:jobs:s", "x");
    await client.sadd("ai:jobs:set", "x");
    await client.zadd("ai:jobs:z", 1, "x");
    await client.xadd("ai:jobs:stream", "*", "workspace_id", "ws-a");
    await client.hset("ai:jobs:", { workspace_id: "ws-a" });
    await client.hset("ai:jobs:ok", { workspace_id: "ws-a" });
    const result = await runJson(["--execute", "--rps", "0", "--redis-url", server.url]);
    assert.equal(result.code, 0);
    assert.equal(result.summary.skipped_invalid, 5);
    assert.equal(result.summary.migrated, 1);
    assert.equal(await countKeys(client, "ai:job:*"), 1);
  });
});
