/**
 * Redis CPU per job of each step of the cross-node cluster copy, in isolation: a 3-master cluster,
 * 6,000 jobs shaped like the bench's (8 fields, ~300 bytes), 100-job calls repeated on the first
 * master, CPU from `INFO cpu` (used_cpu_user + used_cpu_sys) around them. The same 100 jobs are
 * read over and over, so the data is hot in the CPU caches: these are lower bounds, meant for
 * comparing the steps with each other, not absolute costs (the bench's Redis CPU per key, over a
 * whole run, is the absolute figure).
 *
 * `deno run -A bench/cluster_steps.ts`
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { intentKey } from "../src/migrate/cluster/intents.ts";
import { SCRIPTS } from "../src/migrate/cluster/scripts.ts";
import { keySlot } from "../src/redis/slot.ts";
import type { Redis } from "../src/redis/ioredis.ts";
import { DEFAULT_WORKSPACE_LUA, KeySchema } from "../src/schema.ts";
import { startCluster } from "../tests/support/cluster.ts";
import { print } from "./report.ts";
import { redisCpuSeconds } from "./server.ts";

const JOBS_PER_CALL = 100;
const REPEATS = 300;

type FlatCall = (command: string, ...args: unknown[]) => Promise<unknown>;

/** Microseconds of Redis CPU per job of `call`, run {@linkcode REPEATS} times. */
async function cpuPerJob(node: Redis, call: () => Promise<unknown>): Promise<number> {
  const before = await redisCpuSeconds(node);
  for (let r = 0; r < REPEATS; r++) await call();
  return (await redisCpuSeconds(node) - before) * 1e6 / (REPEATS * JOBS_PER_CALL);
}

const schema = new KeySchema();
const cluster = await startCluster({ masters: 3 });
const client = cluster.client();
const node = cluster.nodes[0]!.client();
try {
  const writes: Promise<unknown>[] = [];
  for (let i = 0; i < 6000; i++) {
    writes.push(client.hset(schema.oldKeyOf([Buffer.from(`job-${i}`)]), {
      status: "queued",
      model: "gpt-4o-mini-2024-07-18",
      created_at: "2025-01-01T00:00:00.000Z",
      updated_at: "2025-01-01T01:00:00.000Z",
      user_id: "usr_0123456789abcdef0123",
      input_preview: "summarize the attached quarterly report and list the three b",
      params: '{"temperature":0.7,"max_tokens":1234,"stream":false}',
      workspace_id: `ws-${i % 7}`,
    }));
  }
  await Promise.all(writes);
  const [, keys] = await node.scanBuffer("0", "MATCH", schema.oldMatch, "COUNT", 10_000);
  const batch = keys.slice(0, JOBS_PER_CALL);
  for (const script of Object.values(SCRIPTS)) await node.call("SCRIPT", "LOAD", script.lua);
  const call = node.callBuffer.bind(node) as unknown as FlatCall;
  // Unfenced (an empty fence key) and unrecorded: the fence's one HMGET and the record's one HSET
  // per call are not per-job costs.
  const evalsha = (sha: string, args: unknown[]) =>
    call("EVALSHA", sha, 0, ["", "0", "", "", "", ...args]);
  const header = [
    "",
    "",
    schema.luaSpec,
    DEFAULT_WORKSPACE_LUA.pattern,
    DEFAULT_WORKSPACE_LUA.maxLength,
  ];
  const snapshots = await evalsha(SCRIPTS.read.sha, [...header, ...batch]) as unknown[][];
  const recheck: unknown[] = [];
  snapshots.forEach((s, i) => recheck.push(batch[i], s[2], s[3]));
  // New keys this master serves (slots 0-5460 go to the first master), fresh for every write.
  const fresh: Buffer[] = [];
  for (let i = 0; fresh.length < REPEATS * JOBS_PER_CALL; i++) {
    const key = schema.newKeyOf(schema.oldKeyOf([Buffer.from(`fresh-${i}`)]), ["ws-1"])!;
    if (keySlot(key) <= 5460) fresh.push(key);
  }
  let next = 0;
  let written: Buffer[] = [];
  const rows: [string, number][] = [
    [
      "READ (snapshot)",
      await cpuPerJob(node, () => evalsha(SCRIPTS.read.sha, [...header, ...batch])),
    ],
    ["RECHECK (unchanged)", await cpuPerJob(node, () => evalsha(SCRIPTS.recheck.sha, recheck))],
    [
      "WRITE (new key absent)",
      await cpuPerJob(node, () => {
        const args: unknown[] = [];
        written = [];
        snapshots.forEach((s, i) => {
          const key = fresh[next++]!;
          written.push(key);
          args.push(key, intentKey("bench", key), `w${next}`, batch[i], s[2], s[3]);
        });
        return evalsha(SCRIPTS.write.sha, args);
      }),
    ],
  ];
  // SETTLE (kept) of the last call's writes: clears their intents.
  const settle: unknown[] = [];
  written.forEach((key, i) => {
    settle.push(key, intentKey("bench", key), `w${next - written.length + i + 1}`, "1");
  });
  const before = await redisCpuSeconds(node);
  await evalsha(SCRIPTS.settle.sha, settle);
  rows.push([
    "SETTLE (kept, one call)",
    (await redisCpuSeconds(node) - before) * 1e6 / written.length,
  ]);
  for (const [name, us] of rows) print(`${name.padEnd(36)} ${us.toFixed(2)} us/job`);
} finally {
  client.disconnect();
  node.disconnect();
  await cluster.stop();
}
