/**
 * The physical limit on this machine: one server-side Lua script that does SCAN + HGET + COPY over
 * the whole keyspace, with no network in the loop. It blocks Redis while it runs, so it is no
 * production tool. It is called in chunks of ~100k keys (a handful of round trips in all) so that a
 * single call stays within the bench server's Lua time limit.
 *
 * @module
 */
import type { Redis } from "../src/redis/ioredis.ts";
import { redisCpuSeconds, resetStats, slowCalls } from "./server.ts";

/** What the ceiling script did. */
export interface CeilingResult {
  scanned: number;
  migrated: number;
  invalid: number;
  exists: number;
  seconds: number;
  keysPerSecond: number;
  redisCpuMicrosPerKey: number;
  /**
   * Noise gauge: calls inside the script (an HGET or COPY, normally 1-5 us) that took over 2 ms.
   * Redis runs flat out here, so each one is a stall of the server process itself (descheduled by
   * the OS or the hypervisor, a page fault), not work the bench asked for.
   */
  stalls: number;
  maxStallMs: number;
}

// Validity is the default --workspace-pattern, ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$, in Lua patterns.
const CEILING_SCRIPT = `
local cursor, limit = ARGV[1], tonumber(ARGV[2])
local scanned, migrated, invalid, exists = 0, 0, 0, 0
repeat
  local reply = redis.call('SCAN', cursor, 'MATCH', 'ai:jobs:*', 'COUNT', 1000)
  cursor = reply[1]
  for _, key in ipairs(reply[2]) do
    scanned = scanned + 1
    local ws = redis.pcall('HGET', key, 'workspace_id')
    if type(ws) == 'string' and #ws <= 64 and string.find(ws, '^[%w][%w_%-]*$') then
      if redis.call('COPY', key, 'ai:job:' .. ws .. ':' .. string.sub(key, 9)) == 1 then
        migrated = migrated + 1
      else
        exists = exists + 1
      end
    else
      invalid = invalid + 1
    end
  end
until cursor == '0' or scanned >= limit
return {cursor, scanned, migrated, invalid, exists}
`;

/** Runs the ceiling script over the whole keyspace. */
export async function runCeiling(client: Redis, chunkKeys = 100_000): Promise<CeilingResult> {
  const sha = await client.script("LOAD", CEILING_SCRIPT) as string;
  await resetStats(client);
  const cpuBefore = await redisCpuSeconds(client);
  let cursor = "0", scanned = 0, migrated = 0, invalid = 0, exists = 0;
  const started = performance.now();
  do {
    const reply = await client.evalsha(sha, 0, cursor, chunkKeys) as [string, ...number[]];
    cursor = reply[0];
    scanned += reply[1] ?? 0;
    migrated += reply[2] ?? 0;
    invalid += reply[3] ?? 0;
    exists += reply[4] ?? 0;
  } while (cursor !== "0");
  const seconds = (performance.now() - started) / 1000;
  const cpu = await redisCpuSeconds(client) - cpuBefore;
  const stalls = (await slowCalls(client)).filter((call) => call.inScript);
  return {
    scanned,
    migrated,
    invalid,
    exists,
    seconds,
    keysPerSecond: scanned / seconds,
    redisCpuMicrosPerKey: migrated ? cpu * 1e6 / migrated : 0,
    stalls: stalls.length,
    maxStallMs: (stalls[0]?.micros ?? 0) / 1000,
  };
}
