/**
 * The Lua scripts of the cross-slot copy (Redis Cluster). An old key and its new key hash to
 * different slots, usually on different nodes, so no single script can see both; each script
 * touches one key and is atomic on that key's node:
 *
 * READ (old key's node, `no-writes`): type, workspace id, absolute expiry (PEXPIRETIME) and every
 *   field, in one consistent snapshot. Reply `{0}` gone · `{1}` not a hash or no workspace field (ARGV[2]) ·
 *   `{2, ws}` another workspace than ARGV[1] (fields not sent) · `{3, ws, expire_at, {f, v, …}}`.
 * WRITE (new key's node): create-only. The new key absent → HSET every field + PEXPIREAT → `{0}`
 *   migrated. Present → HSETNX each field and PEXPIREAT only if it has no TTL → `{1}` repaired or
 *   `{2}` exists; never overwrites a value. Another type → `{6, "WRONGTYPE"}`. DRY_WRITE makes the
 *   same decisions with EXISTS/HEXISTS/PTTL, flagged `no-writes` so Redis refuses any write.
 * UNDO (new key's node): deletes the new key only while it holds exactly the fields and values we
 *   wrote (the application deleted the job between our read and our write). Reply 1 deleted, 0 kept.
 *
 * ARGV of WRITE and UNDO: WRITE [1] expire-at in unix ms (-1 = none), [2..] field, value pairs;
 * UNDO [1..] field, value pairs. Values are bytes; nothing is re-encoded.
 *
 * @module
 */

/** Result codes shared with the in-server script (see copy_script.ts's ScriptCode). */
export const CrossSlotCode = {
  gone: 0,
  invalid: 1,
  filtered: 2,
  copy: 3,
} as const;

/** Read-only snapshot of an old key. */
export const READ_SCRIPT = `#!lua flags=no-writes
local t = redis.call("TYPE", KEYS[1])["ok"]
if t == "none" then return {0} end
if t ~= "hash" then return {1} end
local ws = redis.call("HGET", KEYS[1], ARGV[2])
if not ws then return {1} end
if ARGV[1] ~= "" and ws ~= ARGV[1] then return {2, ws} end
return {3, ws, redis.call("PEXPIRETIME", KEYS[1]), redis.call("HGETALL", KEYS[1])}
`;

const WRITE_BODY = `
local dry = DRY
local new = KEYS[1]
local at = ARGV[1]
local has_ttl = tonumber(at) > 0

local function err_code(reply)
  return string.match(reply.err, "^(%u+)") or "ERR"
end

if redis.call("EXISTS", new) == 0 then
  if not dry then
    -- In chunks: unpack() of a very large hash would overflow Lua's C stack.
    for j = 2, #ARGV, 200 do
      local r = redis.pcall("HSET", new, unpack(ARGV, j, math.min(j + 199, #ARGV)))
      if type(r) == "table" then return {6, err_code(r)} end
      -- The expiry goes on with the first chunk: a later chunk that fails (OOM) must not leave
      -- an immortal partial copy behind.
      if j == 2 and has_ttl then redis.call("PEXPIREAT", new, at) end
    end
  end
  return {0}
end
if redis.call("TYPE", new)["ok"] ~= "hash" then return {6, "WRONGTYPE"} end
local added = 0
for j = 2, #ARGV, 2 do
  if dry then
    added = added + (1 - redis.call("HEXISTS", new, ARGV[j]))
  else
    local r = redis.pcall("HSETNX", new, ARGV[j], ARGV[j + 1])
    if type(r) == "table" then return {6, err_code(r)} end
    added = added + r
  end
end
if has_ttl and redis.call("PTTL", new) == -1 then
  if not dry then
    local r = redis.pcall("PEXPIREAT", new, at)
    if type(r) == "table" then return {6, err_code(r)} end
  end
  added = added + 1
end
if added > 0 then return {1} end
return {2}
`;

/**
 * Create-only write. Deliberately without a shebang: as a plain script Redis checks memory at its
 * first write (an OOM reply per key, which the engine retries after the memory guard), like the
 * in-server script.
 */
export const WRITE_SCRIPT: string = WRITE_BODY.replace("DRY", "false");
/** The dry-run variant of WRITE: `no-writes`, so Redis itself refuses any write. */
export const DRY_WRITE_SCRIPT: string = "#!lua flags=no-writes\n" +
  WRITE_BODY.replace("DRY", "true");

/** Compare-and-delete of a copy the application's delete overtook. */
export const UNDO_SCRIPT = `
if redis.call("TYPE", KEYS[1])["ok"] ~= "hash" then return 0 end
if redis.call("HLEN", KEYS[1]) * 2 ~= #ARGV then return 0 end
for j = 1, #ARGV, 2 do
  if redis.call("HGET", KEYS[1], ARGV[j]) ~= ARGV[j + 1] then return 0 end
end
return redis.call("DEL", KEYS[1])
`;
