/**
 * The Lua functions the verify script (`scripts.ts`) and the bench's ceiling compare a pair with,
 * so both apply one rule:
 * the same fields with the same values, expiries equal or within the tolerance, and a new key
 * read on this node only when it serves the key's slot.
 *
 * @module
 */

/** Lua: `slot_ranges(text)`, `is_local(key, ranges)`, `same_expiry(a, b, tolerance)`, `same_fields(a, b)`. */
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
