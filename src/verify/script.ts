/**
 * The read-only Lua script of both verifies: values are compared in Redis and never reach the
 * client; only type codes, absolute expiries, SHA-1 digests and field NAMES leave it. Flagged
 * `no-writes` (called with EVALSHA_RO) and `allow-cross-slot-keys`: keys come in ARGV (numkeys 0),
 * so one call reads many slots of one node. A key the node does not serve fails the whole call
 * ("non local key"): the caller refreshes its slot map and retries, so a stale map never reads as
 * a missing key.
 *
 * ARGV: [1] mode, [2] "1" for old keys, [3] field cap, [4] salt, [5] `KeySchema.luaSpec` (the
 * templates and the n fields the new name reads, workspace first), [6] only this workspace ("" =
 * all), [7] slot ranges this node serves ("a-b,c-d"; "" on a standalone), [8] own-time limit in µs,
 * [9] TTL tolerance in ms, [10..] keys. [6], [7] and [9] matter in `pair` mode only. Entries of old
 * keys end with the other fields' values (v2…vn); a key missing one counts as without workspace.
 * The reply is `{processed, elapsed_us, entry...}`: the call stops after the key that reaches the
 * field cap, or when its clock says the next keys would pass the time limit. Per-key entries:
 * - `side`: `{code, workspace, expire_at_ms, digest, v2…vn}`. code: 0 absent, 1 not a hash, 2 a
 *   hash without the workspace field or with an empty job id (old key), 3 a hash. `digest`: SHA-1
 *   of the fields sorted by name, each name and value length-prefixed.
 * - `fields`: `{code, {name, sha1(salt .. value), ...}}`.
 * - `owner`: `{code, workspace, v2…vn}` (no digest).
 * - `pair` (old keys): `{code, workspace, expire_at_ms, digest, new_code, new_expire_at_ms, same,
 *   v2…vn}`: the old key and its new key in ONE call; `same` is 1 when both hold the same fields
 *   and values. new_code -1: new key not read (old key invalid, or another workspace than [6]);
 *   -2: this node does not serve it (slot checked first, so errorstats stay quiet; a failed read
 *   anyway is a stale map) or no new key: `digest` is then the old key's and the caller reads the
 *   new key on its node. A pair that matches entirely with ASCII values is answered with the
 *   workspace bytes alone (more fields: the values joined by `:`, which no valid value holds): a
 *   bulk string costs a fraction of the array, and nearly every key of a finished backfill is one.
 *
 * @module
 */
import { KEY_LUA } from "../schema.ts";

/** Per-key type codes of the script. */
export const KeyCode = { absent: 0, notHash: 1, noWorkspace: 2, hash: 3 } as const;

export type KeyCodeValue = typeof KeyCode[keyof typeof KeyCode];

/** What the script is asked per key. */
export type ScriptMode = "side" | "fields" | "owner" | "pair";

/** Number of ARGV entries before the keys. */
export const HEADER_ARGS = 9;

/** Lua of the one pair rule (fields, values, expiries, locality), shared with the bench. */
export const PAIR_LUA = `
-- The slot ranges a node serves, from "a-b,c-d" ("" on a standalone: none).
local function slot_ranges(text)
  local ranges = {}
  for a, b in string.gmatch(text, "(%d+)-(%d+)") do
    ranges[#ranges + 1] = {tonumber(a), tonumber(b)}
  end
  return ranges
end

-- True when this node serves key's slot (asked first, so a foreign key never raises an error).
local function is_local(key, ranges)
  local slot = redis.call("CLUSTER", "KEYSLOT", key)
  for _, r in ipairs(ranges) do
    if slot >= r[1] and slot <= r[2] then return true end
  end
  return false
end

-- As the client's sameExpiry: both without expiry, or both expiring at most tolerance ms apart.
local function same_expiry(a, b, tolerance)
  if a < 0 or b < 0 then return a == b end
  return math.abs(a - b) <= tolerance
end

-- Both hashes hold the same fields with the same values; also the fields read (both sides).
local function same_fields(a, b)
  local fa, fb = redis.call("HGETALL", a), redis.call("HGETALL", b)
  local read = (#fa + #fb) / 2
  if #fa ~= #fb then return false, read end
  local values = {}
  for j = 1, #fa, 2 do values[fa[j]] = fa[j + 1] end
  for j = 1, #fb, 2 do
    if values[fb[j]] ~= fb[j + 1] then return false, read end
  end
  return true, read
end
`;

export const VERIFY_SCRIPT = `#!lua flags=no-writes,allow-cross-slot-keys
local t0 = redis.call("TIME")
local mode = ARGV[1]
local old_side = ARGV[2] == "1"
local cap = tonumber(ARGV[3])
local salt = ARGV[4]
${KEY_LUA}
local key_parts, new_key, key_fields, read_others = key_mapping(ARGV[5])
local ws_field, nf = key_fields[1], #key_fields
local values = {}
local only_ws = ARGV[6]
local cluster = ARGV[7] ~= ""
local limit = tonumber(ARGV[8])
local tolerance = tonumber(ARGV[9])
local out = {0, 0}
local read = 0
${PAIR_LUA}
local ranges = slot_ranges(ARGV[7])

local function elapsed_us()
  local t = redis.call("TIME")
  return (tonumber(t[1]) - tonumber(t0[1])) * 1000000 + tonumber(t[2]) - tonumber(t0[2])
end

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
  if old_side and (not ws or not key_parts(key)) then return {2, "", 0, ""} end
  if old_side and nf > 1 and not read_others(key, values) then return {2, "", 0, ""} end
  local entry = {3, ws or "", redis.call("PEXPIRETIME", key), digest(key)}
  if old_side then
    for j = 2, nf do entry[3 + j] = values[j] end
  end
  return entry
end

local function pair(key)
  local code = code_of(key)
  if code ~= 3 then return {code, "", 0, "", -1, 0, 0} end
  local ws = redis.call("HGET", key, ws_field)
  local parts = ws and key_parts(key)
  if not parts then return {2, "", 0, "", -1, 0, 0} end
  local entry = {3, ws, redis.call("PEXPIRETIME", key), "", -1, 0, 0}
  if nf > 1 then
    if not read_others(key, values) then return {2, "", 0, "", -1, 0, 0} end
    for j = 2, nf do entry[6 + j] = values[j] end
  end
  if only_ws ~= "" and ws ~= only_ws then return entry end
  values[1] = ws
  local new = new_key(parts, values)
  -- No new key (the client's rule decides) or one on another node: the client reads it.
  if not new or (cluster and not is_local(new, ranges)) then
    entry[4], entry[5] = digest(key), -2
    return entry
  end
  local t = redis.pcall("TYPE", new)
  if t["err"] then
    entry[4], entry[5] = digest(key), -2
  elseif t["ok"] == "none" then
    entry[5] = 0
  elseif t["ok"] ~= "hash" then
    entry[5] = 1
  else
    local new_at = redis.call("PEXPIRETIME", new)
    local same, fields_read = same_fields(key, new)
    read = read + fields_read
    -- Matched: the values alone, if ASCII (then their bytes are the client's UTF-8).
    if same and same_expiry(entry[3], new_at, tolerance) then
      local named = ws
      if nf > 1 then named = table.concat(values, ":", 1, nf) end
      if not string.find(named, "[\\128-\\255]") then return named end
    end
    entry[5], entry[6], entry[7] = 3, new_at, same and 1 or 0
  end
  return entry
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
  if nf > 1 and not read_others(key, values) then return {2, ""} end
  local entry = {3, ws}
  for j = 2, nf do entry[1 + j] = values[j] end
  return entry
end

local handle = side
if mode == "fields" then handle = fields elseif mode == "owner" then handle = owner
elseif mode == "pair" then handle = pair end
-- The clock is read at half and three quarters of the keys (TIME per key would cost too much):
-- stop when the keys up to the next reading would pass the limit at the pace so far.
local keys = #ARGV - 9
local half, three_quarters = math.ceil(keys / 2), math.ceil(keys * 3 / 4)
for i = 10, #ARGV do
  out[#out + 1] = handle(ARGV[i])
  local done = out[1] + 1
  out[1] = done
  if read >= cap or done == keys then break end
  if done == half or done == three_quarters then
    local spent = elapsed_us()
    local next_reading = done == half and three_quarters or keys
    if spent * next_reading / done > limit then break end
  end
end
out[2] = elapsed_us()
return out
`;
