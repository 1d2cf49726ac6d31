/**
 * The loop a quick script would use: SCAN, then per key three awaited round trips -
 * `HGET workspace_id`, `EXISTS <new key>`, `COPY` - over a fixed number of keys.
 *
 * @module
 */
import type { Redis } from "../src/redis/ioredis.ts";
import { Buffer } from "node:buffer";
import { DEFAULT_WORKSPACE_PATTERN, KeySchema } from "../src/schema.ts";

/** What the naive loop did. */
export interface NaiveResult {
  keys: number;
  migrated: number;
  invalid: number;
  exists: number;
  seconds: number;
  keysPerSecond: number;
}

/** Runs the naive loop over the first `limit` old keys SCAN returns. */
export async function runNaive(client: Redis, limit: number): Promise<NaiveResult> {
  const valid = new RegExp(DEFAULT_WORKSPACE_PATTERN, "u");
  const schema = new KeySchema();
  let keys = 0, migrated = 0, invalid = 0, exists = 0;
  let cursor = "0";
  const started = performance.now();
  do {
    const [next, batch] = await client.scan(cursor, "MATCH", schema.oldMatch, "COUNT", 100);
    cursor = next;
    for (const key of batch) {
      if (keys >= limit) break;
      keys++;
      let workspace: string | null;
      try {
        workspace = await client.hget(key, "workspace_id");
      } catch {
        invalid++; // WRONGTYPE: not a hash
        continue;
      }
      if (workspace === null || !valid.test(workspace)) {
        invalid++;
        continue;
      }
      const newKey = schema.newKeyOf(Buffer.from(key), [workspace])!;
      if (await client.exists(newKey)) {
        exists++;
        continue;
      }
      migrated += await client.copy(key, newKey);
    }
  } while (cursor !== "0" && keys < limit);
  const seconds = (performance.now() - started) / 1000;
  return { keys, migrated, invalid, exists, seconds, keysPerSecond: keys / seconds };
}
