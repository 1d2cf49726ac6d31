/**
 * The lane script of `verify --full`: the SCAN runs inside a read-only script, and each master's
 * keyspace is split into {@linkcode LANES} "lanes" by the low bits of the SCAN cursor.
 *
 * Why lanes partition the keyspace: Redis's dictScan walks the buckets in reverse-binary order of
 * the cursor, so the cursor's low 2 bits change slowest (00, 10, 01, 11). Lane j starts at cursor
 * rev_2(j) (0, 2, 1, 3) and owns the buckets whose index has those low bits: one contiguous
 * stretch of one full SCAN. That holds through table growth, shrink and rehash while the table has
 * at least 4 buckets (Redis never makes a main table smaller): a bucket of the small table and its
 * expansions in the big one share their low bits. It does NOT hold where the cursor's low bits are
 * something else (cluster servers that keep one dict per slot, Redis ≥ 7.2 here: the low bits are
 * the slot): those stay on the sub-batch path.
 *
 * The end rule: one SCAN call loops over buckets until it has COUNT keys, so a lane's last SCAN can
 * run past the lane's end into the next lane's first buckets ("stop when the low bits change"
 * alone checks those keys twice). A step whose SCAN crossed the end throws that reply away and
 * walks the rest of the lane with COUNT 1 (one non-empty bucket per SCAN, at most 10 empty ones):
 * a step that ends exactly on the next lane's start cursor was still in this lane (its keys count);
 * one that ends anywhere else past the end read the next lane's bucket, and its keys are dropped.
 *
 * A call: a first SCAN of COUNT (sized by the client from the pace), then top-ups sized to 80% of
 * what is left of the own-time limit at the pace so far (a TIME per step), then the pair check per
 * old key in Lua (the default workspace rule as a Lua pattern). Field values never leave Redis.
 *
 * The limit holds per key, not per step: how many of a SCAN step's keys match the old schema
 * varies widely (COUNT 22 returned 7 old keys, the next COUNT 16 returned 10; sized by the first,
 * ~5% of calls ran past 240 µs of their own time). So the script predicts its clock from a cost per
 * key (the client's until this call has checked one, then this call's) and reads TIME when the
 * next key might not fit; once one does not, the step's remaining keys come back unchecked
 * ({@linkcode LaneVerdict.deferred}) and the client compares them on the sub-batch path, which
 * bounds its own calls. The SCAN's work is not lost, and the cursor still moves past them.
 *
 * ARGV: [1] cursor, [2] this lane's low bits, [3] the next lane's start cursor ("0" for the last
 * lane), [4] first COUNT, [5] most COUNT units a call ("0" = no cap; `--rps`), [6] own-time limit
 * µs, [7] MATCH pattern, [8] workspace field, [9] the key mapping (`KeySchema.luaSpec`, read by
 * the shared `KEY_LUA`), [10] TTL tolerance ms, [11] workspace Lua pattern, [12] its max length,
 * [13] the slot ranges this node serves ("a-b,c-d"; "" on a standalone), [14] the client's own µs
 * per checked key (0: unknown).
 *
 * Reply: `{next cursor ("" = lane done), own µs, COUNT units, matched names joined, {their
 * lengths}, {name, verdict, ...}}`: every name comes back, so the client can drop keys SCAN
 * returned twice; the matched ones as one bulk string (the client makes far less garbage).
 *
 * @module
 */
import { KEY_LUA } from "../../schema.ts";
import { PAIR_LUA } from "./pair_lua.ts";

/** Lanes per node (a power of two; the script reads the low bits from the cursor's last digits). */
export const LANES = 4;

/** Per-key verdicts of the lane script for the keys it did not find matched. */
export const LaneVerdict = {
  oldGone: 1,
  oldNotHash: 2,
  noWorkspace: 3,
  invalidWorkspace: 4,
  newAbsent: 5,
  newNotHash: 6,
  fieldsDiffer: 7,
  expiryDiffers: 8,
  /** The new key lives on another node (or its read failed): compared by the sub-batch path. */
  remote: 9,
  /** The call's time ran out before this key: compared by the sub-batch path. */
  deferred: 10,
} as const;

/** Verdicts that say the pair differs (a suspect that then matches cleared: `transient`). */
export function isLaneMismatch(verdict: number): boolean {
  return verdict >= LaneVerdict.newAbsent && verdict <= LaneVerdict.expiryDiffers;
}

/** rev_2(j): lane `lane`'s start cursor. */
export function laneStart(lane: number): string {
  return String(((lane & 1) << 1) | ((lane >> 1) & 1));
}

/** The next lane's start cursor ("0" after the last lane). */
export function nextLaneStart(lane: number): string {
  return lane + 1 < LANES ? laneStart(lane + 1) : "0";
}

/** The lane script (see the module comment). */
export const LANE_SCRIPT = `#!lua flags=no-writes,allow-cross-slot-keys
local t0 = redis.call("TIME")
local cursor, lane_bits, next_start = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local first, cap, limit = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local pattern, ws_field = ARGV[7], ARGV[8]
${KEY_LUA}
local key_parts, new_key = key_mapping(ARGV[9])
local values = {}
local tolerance = tonumber(ARGV[10])
local ws_pattern, ws_max = ARGV[11], tonumber(ARGV[12])
local cluster = ARGV[13] ~= ""
local last = next_start == "0"
local names, lengths, suspects = {}, {}, {}
-- The clock's prediction: own µs at the last TIME, keys checked since, µs a key (25 until the
-- client knows), keys checked in this call, the prediction at which to read TIME next (first 3
-- keys before the limit, then half of what is left: the prediction's error shrinks as the limit
-- nears); out_of_time once a key did not fit.
local clock_at, since, key_us, checked = 0, 0, tonumber(ARGV[14]), 0
if key_us <= 0 then key_us = 25 end
local next_read = limit - 3 * key_us
local out_of_time = false

${PAIR_LUA}
local ranges = slot_ranges(ARGV[13])

local function verdict(key)
  local t = redis.call("TYPE", key)["ok"]
  if t == "none" then return 1 end
  if t ~= "hash" then return 2 end
  local ws = redis.call("HGET", key, ws_field)
  local parts = ws and key_parts(key)
  if not parts then return 3 end
  if #ws > ws_max or not string.find(ws, ws_pattern) then return 4 end
  values[1] = ws
  local new = new_key(parts, values)
  if not new then return 4 end
  if cluster and not is_local(new, ranges) then return 9 end
  local nt = redis.pcall("TYPE", new)
  if nt["err"] then return 9 end
  if nt["ok"] == "none" then return 5 end
  if nt["ok"] ~= "hash" then return 6 end
  local old_at, new_at = redis.call("PEXPIRETIME", key), redis.call("PEXPIRETIME", new)
  if not same_expiry(old_at, new_at, tolerance) then return 8 end
  if not same_fields(key, new) then return 7 end
  return 0
end

local function elapsed_us()
  local t = redis.call("TIME")
  return (tonumber(t[1]) - tonumber(t0[1])) * 1000000 + tonumber(t[2]) - tonumber(t0[2])
end

-- A clock reading: re-anchors the prediction on this call's own cost a key so far (its setup and
-- SCANs included) once it has checked one; the client's is a moving average that one slow call
-- may have inflated.
local function read_clock()
  clock_at, since = elapsed_us(), 0
  if checked > 0 then key_us = clock_at / checked end
  next_read = clock_at + (limit - clock_at) / 2
  return clock_at
end

local function check(keys)
  for _, key in ipairs(keys) do
    -- TIME only when the prediction passes next_read (before each key once one might not fit).
    if not out_of_time and clock_at + (since + 1) * key_us > next_read then
      out_of_time = read_clock() + key_us > limit
    end
    local v = 10
    if not out_of_time then
      v = verdict(key)
      since, checked = since + 1, checked + 1
    end
    if v == 0 then
      names[#names + 1] = key
      lengths[#lengths + 1] = #key
    else
      suspects[#suspects + 1] = key
      suspects[#suspects + 1] = v
    end
  end
end

-- Past this lane's end: the cursor's low bits changed (or a lane other than the last reached 0).
-- The low 2 bits from the last two decimal digits (100 is a multiple of 4): exact at any size.
local function crossed(c)
  if c == "0" then return not last end
  return tonumber(string.sub(c, -2)) % 4 ~= lane_bits
end

-- The rest of a lane whose SCAN crossed its end, from c: COUNT 1 steps (see the module comment).
local function walk_tail(c)
  for _ = 1, first do
    local r = redis.call("SCAN", c, "MATCH", pattern, "COUNT", 1)
    if crossed(r[1]) then
      if r[1] == next_start then check(r[2]) end
      return ""
    end
    check(r[2])
    if r[1] == "0" then return "" end
    c = r[1]
    if out_of_time then return c end
  end
  return c
end

-- One SCAN step from c and its keys checked; the next cursor, "" when the lane is done.
local function step(c, n)
  local reply = redis.call("SCAN", c, "MATCH", pattern, "COUNT", n)
  if crossed(reply[1]) then return walk_tail(c) end
  check(reply[2])
  if reply[1] == "0" then return "" end
  return reply[1]
end

-- A first step of COUNT, then top-ups sized to 80% of what is left of the limit at the pace so
-- far (setup included), at most the first COUNT, while a top-up would be at least 4 (a few keys'
-- pace is noisy) and within the cap.
local c, units, n = cursor, 0, first
while true do
  c, units = step(c, n), units + n
  if c == "" or out_of_time then break end
  local spent = read_clock()
  n = math.min(first, math.floor(0.8 * (limit - spent) * units / math.max(spent, 1)))
  if cap > 0 then n = math.min(n, cap - units) end
  if n < 4 then break end
end
-- Matched names as one string and their lengths: one reply entry, not one per key.
return {c, elapsed_us(), units, table.concat(names), lengths, suspects}
`;
