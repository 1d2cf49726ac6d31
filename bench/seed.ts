/**
 * Seeds old-schema jobs inside the server with a Lua script (the seed is not what is measured, so
 * it takes the fastest honest route). The data is deterministic: key `i` always gets the same job id,
 * fields and TTL.
 *
 * - ~8 fields / ~300 bytes per job, every value <= 64 bytes (so hashes stay listpack-encoded, as
 *   small job hashes are in production);
 * - every third key has a TTL of one day (plus up to an hour), so nothing expires during the bench;
 * - every 50th key (2%) is invalid, in turn: a string, a list, a hash without `workspace_id`, a hash
 *   with an empty `workspace_id`, a hash with a `workspace_id` containing `:` and a space.
 *
 * @module
 */
import type { Redis } from "../src/redis/ioredis.ts";

/** What was seeded. */
export interface SeedStats {
  keys: number;
  /** Hashes with a valid workspace id: what a backfill migrates. */
  valid: number;
  /** Keys a backfill skips as invalid. */
  invalid: number;
  withTtl: number;
  /** Mean bytes of field names + values of the valid hashes. */
  meanHashBytes: number;
  seconds: number;
}

const SEED_SCRIPT = `
local first, count = tonumber(ARGV[1]), tonumber(ARGV[2])
local statuses = {'queued', 'running', 'succeeded', 'failed'}
local models = {'gpt-4o-mini-2024-07-18', 'claude-3-5-haiku-latest', 'llama-3.1-70b-instruct'}
local words = 'summarize the attached quarterly report and list the three biggest risks for '
local valid, invalid, ttl, bytes = 0, 0, 0, 0
local function h(i, salt)
  return (i * 1103515245 + salt * 12345 + 7) % 2147483648
end
local function stamp(s)
  return string.format('2025-%02d-%02dT%02d:%02d:%02d.%03dZ',
    s % 12 + 1, s % 28 + 1, s % 24, s % 60, (s * 7) % 60, s % 1000)
end
for i = first, first + count - 1 do
  local id = string.format('%08x-%04x-4%03x-%04x-%012x',
    h(i, 1), h(i, 2) % 65536, h(i, 3) % 4096, h(i, 4) % 65536, i)
  local key = 'ai:jobs:' .. id
  local r = h(i, 5)
  local fields = {
    'status', statuses[r % 4 + 1],
    'model', models[r % 3 + 1],
    'created_at', stamp(r),
    'updated_at', stamp(r + 3600),
    'user_id', string.format('usr_%010x%010x', h(i, 6), h(i, 7)),
    'input_preview', string.sub(words .. words, r % 16 + 1, r % 16 + 60),
    'params', '{"temperature":0.7,"max_tokens":' .. (r % 4096) .. ',"stream":false}',
  }
  if i % 50 == 7 then
    invalid = invalid + 1
    local kind = math.floor(i / 50) % 5
    if kind == 0 then
      redis.call('SET', key, cjson.encode(fields))
    elseif kind == 1 then
      redis.call('RPUSH', key, 'queued', 'running')
    else
      if kind == 3 then
        fields[#fields + 1] = 'workspace_id'; fields[#fields + 1] = ''
      elseif kind == 4 then
        fields[#fields + 1] = 'workspace_id'; fields[#fields + 1] = 'bad:ws ' .. (r % 100)
      end
      redis.call('HSET', key, unpack(fields))
    end
  else
    valid = valid + 1
    fields[#fields + 1] = 'workspace_id'
    fields[#fields + 1] = string.format('ws-%04d', h(i, 8) % 400)
    for _, f in ipairs(fields) do bytes = bytes + #f end
    redis.call('HSET', key, unpack(fields))
  end
  if i % 3 == 0 then
    ttl = ttl + 1
    redis.call('EXPIRE', key, 86400 + i % 3600)
  end
end
return {valid, invalid, ttl, bytes}
`;

/** Seeds `keys` old-schema jobs (keys 0..keys-1) into an empty database. */
export async function seed(client: Redis, keys: number, chunk = 20_000): Promise<SeedStats> {
  const started = performance.now();
  const sha = await client.script("LOAD", SEED_SCRIPT) as string;
  const stats = { valid: 0, invalid: 0, withTtl: 0, bytes: 0 };
  for (let first = 0; first < keys; first += chunk) {
    const count = Math.min(chunk, keys - first);
    const [valid, invalid, ttl, bytes] = await client.evalsha(sha, 0, first, count) as number[];
    stats.valid += valid ?? 0;
    stats.invalid += invalid ?? 0;
    stats.withTtl += ttl ?? 0;
    stats.bytes += bytes ?? 0;
  }
  const dbsize = await client.dbsize();
  if (dbsize !== keys) throw new Error(`seeded ${keys} keys but DBSIZE is ${dbsize}`);
  return {
    keys,
    valid: stats.valid,
    invalid: stats.invalid,
    withTtl: stats.withTtl,
    meanHashBytes: stats.valid ? Math.round(stats.bytes / stats.valid) : 0,
    seconds: (performance.now() - started) / 1000,
  };
}
