/**
 * The Lua script that classifies and migrates a sub-batch of old keys inside Redis, atomically per
 * call: between reading an old key and creating its new key nothing else runs, so a job deleted by
 * the application is never re-created and a value it dual-wrote is never overwritten.
 *
 * Per key (KEYS[i] = an old key):
 *   HGET <workspace field> → WRONGTYPE: invalid · nil: gone (key missing) or invalid (field missing)
 *   HGET each other field the new name reads (a name built from several) → nil: invalid
 *   empty job id or an invalid value of any field → invalid · other workspace than the filter →
 *   filtered
 *   COPY old new (no REPLACE): 1 → migrated (fields and TTL copied by the server)
 *   0 → the new key exists: HSETNX each field it lacks and PEXPIRE it with the old TTL if it has
 *       none → repaired, or nothing to add → exists. A new key of another type is an error.
 * In dry-run the same decisions are made with EXISTS/HEXISTS/PTTL and nothing is written; the dry
 * variant carries `flags=no-writes` and runs as EVALSHA_RO, so Redis itself refuses any write.
 *
 * ARGV (all from schema.ts, so no key name or field name is spelled in Lua):
 *       [1] the key mapping (`KeySchema.luaSpec`, read by the shared `KEY_LUA`: the templates and
 *       the n fields the new name reads, the workspace first), [2] workspace filter ("" = none),
 *       [3] the default workspace rule as a Lua pattern, [4] its maximum length,
 *       [5] rule: "default" (check the default rule here, on every field) | "expect"
 *           (ARGV[10 + (i-1)·n + j] is the value of field j the client validated for KEYS[i]; a
 *           different value now → "changed") | "probe" (report values only)
 *       [6] the run lock's key, [7] its value ("" = unfenced): executing, the call is refused as a
 *           whole (`FENCED`, nothing written) when the lock no longer holds that value
 *       [8] the call record's key, [9] its field, [10] the call's id ("" = none): a call that
 *           copied records its per-key codes there (`<id>:<codes>`, one digit per key), so that
 *           a call whose reply is lost can still be counted (in_server.ts)
 * Reply: a flat array, 2 + n entries per key: the code; the workspace id when the values are valid
 * ("" when not); the detail: for an error (6), the first line of Redis's error text; for an
 * invalid key (3), the reason (`not_hash`, `no_workspace_id`, `empty_job_id`,
 * `invalid_workspace_id`: the last two name the workspace, and cover every field the new name
 * reads); else ""; then the values of the other fields (none with one field), "" when not valid.
 *
 * @module
 */
import { KEY_LUA } from "../schema.ts";

const BODY = `
local dry = DRY
${KEY_LUA}
local key_parts, new_key, key_fields = key_mapping(ARGV[1])
local field, nf = key_fields[1], #key_fields
local only = ARGV[2]
local default_pattern = ARGV[3]
local default_max = tonumber(ARGV[4])
local rule = ARGV[5]
local EXPECTED = 10
-- The lock lives on this server: one GET tells whether this runner still holds it.
if not dry and ARGV[6] ~= "" and redis.call("GET", ARGV[6]) ~= ARGV[7] then
  error({err = "FENCED the run lock " .. ARGV[6] ..
    " is no longer held by this runner (taken over, or expired)"})
end
local out = {}
-- The field values a new key's name reads (values[1]: the workspace id)
local values = {}
-- The call record: a digit per key (strings: table.concat would format each number, per key)
local record = not dry and ARGV[8] ~= ""
local DIGITS = {[0] = "0", "1", "2", "3", "4", "5", "6", "7"}
local codes, copied = {}, false

local function valid_default(ws)
  return #ws <= default_max and string.find(ws, default_pattern) ~= nil
end

-- With one field (the default mapping) the checks below are the workspace's alone; with more,
-- values[2..nf] hold the other fields of the key at hand, read by read_others (false when one is
-- missing) once the key is known to be a hash with a workspace.
local valid, expected = valid_default, function(i, ws) return ws == ARGV[EXPECTED + i] end
local function read_others(old)
  for j = 2, nf do
    local v = redis.call("HGET", old, key_fields[j])
    if not v then return false end
    values[j] = v
  end
  return true
end
if nf > 1 then
  valid = function(ws)
    if not valid_default(ws) then return false end
    for j = 2, nf do
      if not valid_default(values[j]) then return false end
    end
    return true
  end
  expected = function(i, ws)
    local at = EXPECTED + (i - 1) * nf
    if ws ~= ARGV[at + 1] then return false end
    for j = 2, nf do
      if values[j] ~= ARGV[at + j] then return false end
    end
    return true
  end
end

-- The first line of an error reply (a line of Redis's own text, never a field value).
local function err_text(reply)
  return string.match(reply.err, "^[^\\r\\n]*")
end

local function complete(old, new)
  local t = redis.call("TYPE", new)["ok"]
  if t ~= "hash" then return 6, "WRONGTYPE the new key holds another type than a hash" end
  local fields = redis.call("HGETALL", old)
  local added = 0
  for j = 1, #fields, 2 do
    if dry then
      added = added + (1 - redis.call("HEXISTS", new, fields[j]))
    else
      local r = redis.pcall("HSETNX", new, fields[j], fields[j + 1])
      if type(r) == "table" then return 6, err_text(r) end
      added = added + r
    end
  end
  if redis.call("PTTL", new) == -1 then
    local pttl = redis.call("PTTL", old)
    if pttl > 0 then
      if not dry then
        local r = redis.pcall("PEXPIRE", new, pttl)
        if type(r) == "table" then return 6, err_text(r) end
      end
      added = added + 1
    end
  end
  if added > 0 then return 1 end
  return 2
end

for i, old in ipairs(KEYS) do
  local code, ws, detail = 3, "", ""
  local got = redis.pcall("HGET", old, field)
  local parts = type(got) == "string" and key_parts(old)
  if type(got) == "table" then
    detail = "not_hash"
  elseif not got then
    if redis.call("EXISTS", old) == 0 then code = 4 else detail = "no_workspace_id" end
  elseif nf > 1 and not read_others(old) then
    detail = "no_workspace_id"
  elseif not parts then
    detail = "empty_job_id"
  elseif (rule == "probe" or (rule == "expect" and expected(i, got))
      or (rule == "default" and valid(got))) then
    ws = got
    if rule == "probe" then
      code = 8
    elseif only ~= "" and got ~= only then
      code = 5
    else
      values[1] = got
      local new = new_key(parts, values)
      if not new then
        -- Holds the literal that follows it in the new key: never valid (nor "expected").
        code, ws, detail = 3, "", "invalid_workspace_id"
      elseif dry then
        if redis.call("EXISTS", new) == 0 then code = 0 else code, detail = complete(old, new) end
      else
        local r = redis.pcall("COPY", old, new)
        if type(r) == "table" then
          code, detail = 6, err_text(r)
        elseif r == 1 then
          code = 0
        else
          code, detail = complete(old, new)
        end
      end
    end
  elseif rule == "expect" then
    code = 7
  else
    detail = "invalid_workspace_id"
  end
  if record then
    codes[i] = DIGITS[code]
    if code <= 1 then copied = true end
  end
  out[#out + 1] = code
  out[#out + 1] = ws
  out[#out + 1] = detail or ""
  if nf > 1 then
    for j = 2, nf do out[#out + 1] = ws ~= "" and values[j] or "" end
  end
end
-- Written only by a call that copied; a refused write (OOM) only loses the count, never a copy.
if copied then redis.pcall("HSET", ARGV[8], ARGV[9], ARGV[10] .. ":" .. table.concat(codes)) end
return out
`;

/** The executing variant (plain EVALSHA; may write). */
export const COPY_SCRIPT: string = BODY.replace("DRY", "false");
/** The dry-run variant: `no-writes`, so it runs as EVALSHA_RO and Redis refuses any write. */
export const DRY_RUN_SCRIPT: string = "#!lua flags=no-writes\n" +
  BODY.replace("DRY", "true");
