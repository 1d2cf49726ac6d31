/**
 * Writes old-schema (and optionally new-schema) jobs for tests, and reads the resulting state.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import assert from "node:assert/strict";
import type { Cluster, Redis } from "../../src/redis/ioredis.ts";
import { WORKSPACE_FIELD } from "../../src/schema.ts";
import { newKeyFor, OLD_PREFIX, oldKeyFor } from "./keys.ts";
import { type RedisServer, withRedis } from "./redis_server.ts";

/** One test job. */
export interface TestJob {
  id: string;
  workspace: string;
  fields?: Record<string, string>;
  /** TTL in seconds (none when absent). */
  ttl?: number;
}

/** `count` jobs `job-<i>` across `workspaces`, every third with a TTL. */
export function makeJobs(count: number, workspaces = ["ws-a", "ws-b", "ws-c"]): TestJob[] {
  return Array.from({ length: count }, (_, i) => ({
    id: `job-${i}`,
    workspace: workspaces[i % workspaces.length]!,
    fields: { status: i % 2 ? "done" : "queued", payload: `p${i}`, attempt: String(i % 4) },
    ttl: i % 3 === 0 ? 3600 + i : undefined,
  }));
}

/** Writes jobs in the old schema (pipelined). */
export async function seedOld(client: Redis, jobs: TestJob[]): Promise<void> {
  for (let i = 0; i < jobs.length; i += 1000) {
    const pipeline = client.pipeline();
    for (const job of jobs.slice(i, i + 1000)) {
      const key = oldKeyFor(job.id);
      pipeline.hset(key, { workspace_id: job.workspace, ...job.fields });
      if (job.ttl) pipeline.expire(key, job.ttl);
    }
    await pipeline.exec();
  }
}

/**
 * Writes `count` old-schema jobs `job-0` … `job-<count-1>` inside Redis (one script per 10 000
 * jobs): tens of thousands in well under a second, where {@linkcode seedOld} pipelines them from
 * here. Each is a hash with a workspace (`ws-a`, `ws-b`, `ws-c` in turn), a status and a payload;
 * none has a TTL. Key prefix and field name come from `schema.ts`.
 */
export async function seedOldInServer(client: Redis, count: number): Promise<void> {
  const script = `
    local workspaces = {"ws-a", "ws-b", "ws-c"}
    for i = tonumber(ARGV[3]), tonumber(ARGV[4]) - 1 do
      redis.call("HSET", ARGV[1] .. "job-" .. i, ARGV[2], workspaces[i % 3 + 1],
        "status", "queued", "payload", "p" .. i)
    end`;
  for (let from = 0; from < count; from += 10_000) {
    const to = Math.min(count, from + 10_000);
    await client.eval(script, 0, OLD_PREFIX, WORKSPACE_FIELD, String(from), String(to));
  }
}

/** The full state of a hash key: fields and TTL in ms (-1 none, -2 missing). */
export async function keyState(
  client: Redis | Cluster,
  key: Buffer | string,
): Promise<{ fields: Record<string, string>; pttl: number }> {
  const [fields, pttl] = await Promise.all([client.hgetall(key), client.pttl(key)]);
  return { fields, pttl };
}

/** The new key of a job. */
export function newKey(job: Pick<TestJob, "id" | "workspace">): Buffer {
  return newKeyFor(job.workspace, job.id);
}

/** Count of keys matching a pattern (SCAN, so it works on big keyspaces). */
export async function countKeys(client: Redis, match: string): Promise<number> {
  let cursor = "0";
  let count = 0;
  do {
    const [next, keys] = await client.scanBuffer(cursor, "MATCH", match, "COUNT", 1000);
    cursor = next.toString();
    count += keys.length;
  } while (cursor !== "0");
  return count;
}

/** `rdb_changes_since_last_save`: grows with every write, so equal before/after proves none. */
export async function writeCounter(client: Redis): Promise<number> {
  const info = await client.info("persistence");
  return Number(info.match(/rdb_changes_since_last_save:(\d+)/)?.[1] ?? NaN);
}

/** Every job's new key has the old key's fields, and its TTL (within 2 s) or none. */
export async function assertMigrated(client: Redis | Cluster, jobs: TestJob[]): Promise<void> {
  for (const job of jobs) {
    const old = await keyState(client, oldKeyFor(job.id));
    const fresh = await keyState(client, newKey(job));
    assert.deepEqual(fresh.fields, old.fields, job.id);
    if (job.ttl) assert.ok(Math.abs(fresh.pttl - old.pttl) < 2000, `${job.id} TTL`);
    else assert.equal(fresh.pttl, -1, `${job.id} has no TTL`);
  }
}

/** Runs `fn` with a fresh redis-server holding `count` old-schema jobs (see {@linkcode makeJobs}). */
export function withSeeded(
  count: number,
  fn: (server: RedisServer, client: Redis) => Promise<void>,
): Promise<void> {
  return withRedis(async (server, client) => {
    await seedOld(client, makeJobs(count));
    await fn(server, client);
  });
}

export { Buffer };
