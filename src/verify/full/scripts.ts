/**
 * The read-only Lua script of `verify --full`. It runs on one node, flagged `no-writes` (Redis
 * refuses any write, and it is called with EVALSHA_RO) and `allow-cross-slot-keys`: the keys come
 * in ARGV (numkeys 0), so one call reads many keys of many slots of that node. A key that the node
 * does not serve makes Redis fail the whole call ("non local key"): the caller refreshes its slot
 * map and retries, so a stale map never reads as a missing key.
 *
 * Only verdicts leave Redis: type codes, absolute expiries, SHA-1 digests and field NAMES; field
 * values never do. Key prefixes and the workspace field name come in ARGV from `schema.ts`.
 *
 * ARGV: [1] mode, [2] workspace field, [3] old prefix length, [4] field cap, [5] salt, [6..] keys.
 * Modes and their per-key entries (the reply is `{processed, elapsed_us, entry...}`; the call stops
 * after the key that reaches the field cap, `processed` tells how many keys it answered):
 * - `side`: `{code, workspace, expire_at_ms, digest}`. code: 0 absent, 1 not a hash, 2 a hash
 *   without the workspace field or with an empty job id (old key), 3 a hash. `digest` is the
 *   SHA-1 of the fields sorted by name, each name and value length-prefixed.
 * - `fields`: `{code, {name, sha1(salt .. value), ...}}`: names and salted value hashes.
 * - `owner`: `{code, workspace}`: who a key says it belongs to (no digest).
 *
 * @module
 */

/** Per-key type codes of the script. */
export const KeyCode = { absent: 0, notHash: 1, noWorkspace: 2, hash: 3 } as const;

/** A key's type code. */
export type KeyCodeValue = typeof KeyCode[keyof typeof KeyCode];

/** What the script is asked per key. */
export type ScriptMode = "side" | "fields" | "owner";

/** Number of ARGV entries before the keys. */
export const HEADER_ARGS = 5;

/** The script (see the module comment). */
export const VERIFY_SCRIPT = `#!lua flags=no-writes,allow-cross-slot-keys
local mode = ARGV[1]
local ws_field = ARGV[2]
local old_prefix_len = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
local salt = ARGV[5]
local t0 = redis.call("TIME")
local out = {0, 0}
local read = 0

local function code_of(key)
  local t = redis.call("TYPE", key)["ok"]
  if t == "none" then return 0 end
  if t ~= "hash" then return 1 end
  return 3
end

local function digest(key)
  local flat = redis.call("HGETALL", key)
  local order = {}
  for j = 1, #flat, 2 do order[#order + 1] = j end
  table.sort(order, function(a, b) return flat[a] < flat[b] end)
  local parts = {}
  for _, j in ipairs(order) do
    local f, v = flat[j], flat[j + 1]
    parts[#parts + 1] = #f .. ":" .. f .. #v .. ":" .. v
  end
  read = read + #order
  return redis.sha1hex(table.concat(parts))
end

local function side(key)
  local code = code_of(key)
  if code ~= 3 then return {code, "", 0, ""} end
  local ws = redis.call("HGET", key, ws_field)
  if old_prefix_len > 0 and (not ws or #key <= old_prefix_len) then return {2, "", 0, ""} end
  return {3, ws or "", redis.call("PEXPIRETIME", key), digest(key)}
end

local function fields(key)
  local code = code_of(key)
  if code ~= 3 then return {code, {}} end
  local flat = redis.call("HGETALL", key)
  local named = {}
  for j = 1, #flat, 2 do
    named[#named + 1] = flat[j]
    named[#named + 1] = redis.sha1hex(salt .. flat[j + 1])
  end
  read = read + #flat / 2
  return {code, named}
end

local function owner(key)
  local code = code_of(key)
  if code ~= 3 then return {code, ""} end
  local ws = redis.call("HGET", key, ws_field)
  if not ws then return {2, ""} end
  return {3, ws}
end

local handle = side
if mode == "fields" then handle = fields elseif mode == "owner" then handle = owner end
for i = 6, #ARGV do
  out[#out + 1] = handle(ARGV[i])
  out[1] = out[1] + 1
  if read >= cap then break end
end
local t1 = redis.call("TIME")
out[2] = (tonumber(t1[1]) - tonumber(t0[1])) * 1000000 + tonumber(t1[2]) - tonumber(t0[2])
return out
`;
