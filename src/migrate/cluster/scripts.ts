/**
 * The Lua scripts of the grouped cluster copy. A call carries the keys of many jobs one master
 * serves, undeclared (zero KEYS, `allow-cross-slot-keys`: declared keys of two slots would get
 * CROSSSLOT); the routed fallback declares one job's key, so the client follows MOVED and ASK.
 * Each script answers one reply per job, in order; a key the node does not serve answers
 * {@linkcode Code.moved} for its job only (every key's first access is a `pcall`, before any
 * write). A snapshot's fields travel as one string, `cmsgpack.pack` of HGETALL's flat list.
 * ARGV starts with the fence and the call record (`fencePrelude`); `ARGS` is the rest:
 *
 * - READ (old keys' node): only-workspace, here ("1" or ""), the key mapping (schema.ts), the
 *   default rule's pattern and maximum length, key… → `{gone}`, `{invalid, reason}`,
 *   `{filtered, ws, v2…vn}` or `{copy, ws, expire_at, packed, v2…vn}` (v2…vn: the other fields
 *   the new name reads). With here (`readHere`, may write) a job whose new key this node serves
 *   is copied at once, like LOCAL: `{migrated|repaired|exists|gone, ws}` or `{error, text, ws}`.
 * - RECHECK (read-only): (key, expire_at, packed)… → `{same}`, `{gone}` or `{changed}`.
 * - LOCAL (old and new key on one node): the key mapping, (old, new, v1…vn)… → an atomic copy
 *   from the live old key: `{migrated|repaired|exists|gone}`, `{changed}` (a value differs from
 *   the validated one) or `{error, text}`.
 * - WRITE (new keys' node): (key, intent key, intent id, old key, expire_at, packed)… → a
 *   create-only copy of the snapshot with its intent (intents.ts): `{created, ttl_set}`,
 *   `{completed, ttl_set, {added…}}`, `{gone}` (the expiry has passed), `{pending}` (an earlier
 *   write's intent is open) or `{error, text, ttl_set, {added…}}`.
 * - SETTLE (new keys' node): (key, intent key, intent id, keep)… → keeps or takes back that
 *   write (intents.ts): `{same}` when done, `{gone}` when the intent is not there (or another's).
 * - INTENTS (read-only): (intent key, new key or "")… → per pair the intents recorded there.
 * - DRY (read-only): (key, expire_at, packed)… → what WRITE would do.
 *
 * Expiries are set after the last chunk of fields: should PEXPIREAT find the time passed and
 * delete the key, no later HSET can re-create it without a TTL.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { KEY_LUA } from "../../schema.ts";
import { ScriptCode } from "../strategy.ts";

/** Per-job reply codes, shared by every script. */
export const Code = {
  gone: 0,
  invalid: 1,
  filtered: 2,
  copy: 3,
  changed: 4,
  migrated: 5,
  repaired: 6,
  exists: 7,
  error: 8,
  moved: 9,
  created: 10,
  completed: 11,
  same: 12,
  /** WRITE: the new key has an intent of another write still to complete (see intents.ts). */
  pending: 13,
} as const;

/** A script and what running it needs. */
export interface ClusterScript {
  readonly lua: string;
  readonly sha: string;
  /** Flagged `no-writes`: run with EVALSHA_RO. */
  readonly readOnly: boolean;
}

/** A call record key's life after its last write (lost replies are read within seconds). */
const RECORD_TTL_MS = 3_600_000;

const CODES = Object.entries(Code).map(([name, value]) => `local ${name.toUpperCase()} = ${value}`)
  .join("\n");

/**
 * ARGV starts with the fence (safety/lock.ts): a fence key of a slot the call touches ("": none),
 * n, n (lock key, token) pairs; then the call record's key, field and id ("" for none). A script
 * that writes refuses the whole call with `FENCED` unless the fence holds this runner's token
 * for every lock: a runner whose lock was lost (taken over, or gone with a master restarted
 * empty) writes nothing.
 */
function fencePrelude(checked: boolean): string {
  return `
local ARGS = {}
local RECORD
do
  local n = tonumber(ARGV[2])
  RECORD = {ARGV[3 + 2 * n], ARGV[4 + 2 * n], ARGV[5 + 2 * n]}
  for i = 6 + 2 * n, #ARGV do ARGS[#ARGS + 1] = ARGV[i] end
  if ${checked} and ARGV[1] ~= "" then
    local fields = {}
    for i = 3, 2 + 2 * n, 2 do fields[#fields + 1] = ARGV[i] end
    local held = redis.pcall("HMGET", ARGV[1], unpack(fields))
    -- Not served here (a slot that moved) or a cluster still settling: the runner falls back to
    -- routed calls per job, which follow redirects and retry until the cluster is up.
    if held.err then
      return redis.error_reply("TRYAGAIN the fence is not readable on this node: " .. held.err)
    end
    for j = 1, n do
      if held[j] ~= ARGV[2 + 2 * j] then
        return redis.error_reply("FENCED the run lock " .. fields[j] ..
          " is no longer held by this runner (taken over, or lost with a restarted master)")
      end
    end
  end
end
`;
}

const PRELUDE = `
${CODES}
-- The call record (migrate/call_record.ts), in the standalone script's digits; a refused write
-- (OOM, a slot that moved) only loses the count, never a copy.
local function note_copies(out)
  if RECORD[1] == "" then return end
  local digits, copied = {}, false
  for i, r in ipairs(out) do
    local c = r[1]
    local d = "${ScriptCode.exists}"
    if c == MIGRATED or c == CREATED then d = "${ScriptCode.migrated}"
    elseif c == REPAIRED or (c == COMPLETED and (r[2] == 1 or #r[3] > 0)) then d = "${ScriptCode.repaired}"
    end
    if d ~= "${ScriptCode.exists}" then copied = true end
    digits[i] = d
  end
  if not copied then return end
  redis.pcall("HSET", RECORD[1], RECORD[2], RECORD[3] .. ":" .. table.concat(digits))
  -- Routed calls spread records over many slots: each expires long after its look-up.
  redis.pcall("PEXPIRE", RECORD[1], ${RECORD_TTL_MS})
end
local function kind(key)
  local r = redis.pcall("TYPE", key)
  if type(r) == "table" and r.err then return nil end
  return r.ok
end
local function err_code(reply)
  return string.match(reply.err, "^(%u+)") or "ERR"
end
-- The first line of an error reply (Redis's own words, never a field value).
local function err_text(reply)
  return string.match(reply.err, "^[^\\r\\n]*")
end
-- Creates key from flat[first..last] in chunks (unpack has a stack limit), then sets the
-- expiry. Returns the error text, or nil.
local function create(key, flat, first, last, at)
  for j = first, last, 200 do
    local r = redis.pcall("HSET", key, unpack(flat, j, math.min(j + 199, last)))
    if type(r) == "table" then
      redis.call("DEL", key) -- created by this call, so only ours
      return err_text(r)
    end
  end
  if at > 0 then redis.call("PEXPIREAT", key, at) end
  return nil
end
-- Copies old (its expiry at and fields flat, read in this call) into new, create-only: HSET when
-- absent, else HSETNX and the expiry only where new has none.
local function copy_here(new, t_new, at, flat)
  if t_new == "none" then
    local failed = create(new, flat, 1, #flat, at)
    if failed then return {ERROR, failed} end
    -- PEXPIREAT deletes a key whose time has passed: then the job is gone.
    if at > 0 and redis.call("EXISTS", new) == 0 then return {GONE} end
    return {MIGRATED}
  end
  if t_new ~= "hash" then return {ERROR, "WRONGTYPE the new key holds another type than a hash"} end
  local added = 0
  for j = 1, #flat, 2 do
    local r = redis.pcall("HSETNX", new, flat[j], flat[j + 1])
    if type(r) == "table" then return {ERROR, err_text(r)} end
    added = added + r
  end
  if at > 0 and redis.call("PTTL", new) == -1 then
    redis.call("PEXPIREAT", new, at)
    added = added + 1
  end
  if added > 0 then return {REPAIRED} end
  return {EXISTS}
end
`;

const READ = `
${KEY_LUA}
local only, here = ARGS[1], ARGS[2] == "1"
local key_parts, new_key, key_fields = key_mapping(ARGS[3])
local field, nf = key_fields[1], #key_fields
local pattern, max_len = ARGS[4], tonumber(ARGS[5])
-- values[2..nf]: the other fields of the key at hand (a name built from several), by name.
local values, other = {}, {}
for j = 2, nf do other[key_fields[j]] = j end
local function invalid(v)
  return #v > max_len or not string.find(v, pattern)
end
-- With "here", a job whose new key this node serves is copied at once (the default rule checked
-- on every field); the others return their snapshot.
local function here_or_snapshot(key, ws, flat)
  local at = redis.call("PEXPIRETIME", key)
  if here then
    local parts = key_parts(key)
    if not parts then return {INVALID, "empty_job_id"} end
    if invalid(ws) then return {INVALID, "invalid_workspace_id"} end
    for j = 2, nf do
      if invalid(values[j]) then return {INVALID, "invalid_workspace_id"} end
    end
    values[1] = ws
    local new = new_key(parts, values)
    if not new then return {INVALID, "invalid_workspace_id"} end
    local t_new = kind(new)
    if t_new ~= nil then
      local reply = copy_here(new, t_new, at, flat)
      reply[#reply + 1] = ws
      return reply
    end
  end
  local reply = {COPY, ws, at, cmsgpack.pack(flat)}
  for j = 2, nf do reply[3 + j] = values[j] end
  return reply
end
-- One HGETALL tells all: not served here (an error other than WRONGTYPE), not a hash, gone, or
-- the fields.
local function read(key)
  local flat = redis.pcall("HGETALL", key)
  if flat.err then
    if err_code(flat) == "WRONGTYPE" then return {INVALID, "not_hash"} end
    return {MOVED}
  end
  if #flat == 0 then return {GONE} end
  local ws
  if nf == 1 then
    for j = 1, #flat, 2 do
      if flat[j] == field then ws = flat[j + 1] break end
    end
  else
    for j = 2, nf do values[j] = false end
    for j = 1, #flat, 2 do
      local name = flat[j]
      if name == field then ws = flat[j + 1]
      elseif other[name] then values[other[name]] = flat[j + 1] end
    end
    for j = 2, nf do
      if not values[j] then return {INVALID, "no_workspace_id"} end
    end
  end
  if not ws then return {INVALID, "no_workspace_id"} end
  if only ~= "" and ws ~= only then
    local reply = {FILTERED, ws}
    for j = 2, nf do reply[1 + j] = values[j] end
    return reply
  end
  return here_or_snapshot(key, ws, flat)
end
local out = {}
for i = 6, #ARGS do out[#out + 1] = read(ARGS[i]) end
note_copies(out)
return out
`;

const RECHECK = `
local out = {}
for i = 1, #ARGS, 3 do
  local key = ARGS[i]
  local at = redis.pcall("PEXPIRETIME", key)
  local code = CHANGED
  if type(at) == "table" then code = MOVED
  elseif at == -2 then code = GONE
  elseif at == tonumber(ARGS[i + 1]) then
    -- HGETALL's order changes only with a write or a rehash: a false "changed" costs a re-read,
    -- never a wrong copy.
    local flat = redis.pcall("HGETALL", key)
    if not flat.err and cmsgpack.pack(flat) == ARGS[i + 2] then code = SAME end
  end
  out[#out + 1] = {code}
end
return out
`;

const LOCAL = `
${KEY_LUA}
local _, _, key_fields = key_mapping(ARGS[1])
local nf = #key_fields
-- The fields the new name reads still hold the values the client validated (ARGS[at + j]).
local function unchanged(old, at)
  for j = 1, nf do
    if redis.call("HGET", old, key_fields[j]) ~= ARGS[at + j] then return false end
  end
  return true
end
local function copy(old, new, at)
  local t_old, t_new = kind(old), kind(new)
  if t_old == nil or t_new == nil then return {MOVED} end
  if t_old == "none" then return {GONE} end
  if t_old ~= "hash" or not unchanged(old, at) then return {CHANGED} end
  return copy_here(new, t_new, redis.call("PEXPIRETIME", old), redis.call("HGETALL", old))
end
local out = {}
for i = 2, #ARGS, 2 + nf do out[#out + 1] = copy(ARGS[i], ARGS[i + 1], i + 1) end
note_copies(out)
return out
`;

const WRITE = `
local time = redis.call("TIME")
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
-- A write's intent (intents.ts): "<id>|" and the rest packed (SETTLE compares the id without
-- unpacking).
local function record(id, old, at, mode, ttl_set, packed, added)
  return id .. "|" .. cmsgpack.pack({old, at, mode, ttl_set, packed, added})
end
local function write(key, ikey, id, old, at, packed)
  local t = kind(key)
  if t == nil then return {MOVED} end
  -- The old key's absolute expiry has passed: it is gone, and a copy must not outlive it.
  if at > 0 and at <= now then return {GONE} end
  if t ~= "none" and t ~= "hash" then
    return {ERROR, "WRONGTYPE the new key holds another type than a hash", 0, {}}
  end
  -- The intent goes first, so a call stopped part-way is still recorded; until the loop knows
  -- what it added, mode 2 (taken back only if the key is still exactly the snapshot).
  local mode, ttl_mark = 2, 1
  if t == "none" then mode, ttl_mark = 1, at > 0 and 1 or 0 end
  local fresh = redis.pcall("HSETNX", ikey, key, record(id, old, at, mode, ttl_mark, packed, {}))
  if type(fresh) == "table" then return {MOVED} end
  -- Another write of this key is not settled yet: it is completed first (intents.ts).
  if fresh == 0 then return {PENDING} end
  local flat = cmsgpack.unpack(packed)
  if t == "none" then
    local failed = create(key, flat, 1, #flat, at)
    if failed then
      redis.call("HDEL", ikey, key) -- create() removed what it wrote
      return {ERROR, failed, 0, {}}
    end
    if at > 0 and redis.call("EXISTS", key) == 0 then
      redis.call("HDEL", ikey, key)
      return {GONE}
    end
    return {CREATED, at > 0 and 1 or 0}
  end
  local added = {}
  local failed
  for j = 1, #flat, 2 do
    local r = redis.pcall("HSETNX", key, flat[j], flat[j + 1])
    if type(r) == "table" then failed = err_text(r) break end
    if r == 1 then added[#added + 1] = flat[j] end
  end
  local ttl_set = 0
  if not failed and at > 0 and redis.call("PTTL", key) == -1 then
    redis.call("PEXPIREAT", key, at)
    ttl_set = 1
  end
  if #added == 0 and ttl_set == 0 then redis.call("HDEL", ikey, key)
  else redis.call("HSET", ikey, key, record(id, old, at, 0, ttl_set, packed, added)) end
  if failed then return {ERROR, failed, 0, added} end
  return {COMPLETED, ttl_set, added}
end
local out = {}
for i = 1, #ARGS, 6 do
  out[#out + 1] = write(ARGS[i], ARGS[i + 1], ARGS[i + 2], ARGS[i + 3], tonumber(ARGS[i + 4]),
    ARGS[i + 5])
end
note_copies(out)
return out
`;

const SETTLE = `
local function unchanged(key, flat, at)
  if redis.call("HLEN", key) * 2 ~= #flat then return false end
  if redis.call("PEXPIRETIME", key) ~= at then return false end
  for j = 1, #flat, 2 do
    if redis.call("HGET", key, flat[j]) ~= flat[j + 1] then return false end
  end
  return true
end
-- Mode 1: created whole (DEL when unchanged, else the fields still holding our values); mode 2:
-- unknown what was added (DEL only when unchanged); mode 0: the named fields. The expiry goes
-- only while it is still ours.
local function undo(key, mode, at, flat, names)
  if kind(key) ~= "hash" then return {SAME} end
  if mode ~= 0 and unchanged(key, flat, at) then
    redis.call("DEL", key)
    return {SAME}
  end
  if mode == 2 then return {CHANGED} end
  if mode == 0 then
    local value_of = {}
    for j = 1, #flat, 2 do value_of[flat[j]] = flat[j + 1] end
    for _, name in ipairs(names) do
      if redis.call("HGET", key, name) == value_of[name] then redis.call("HDEL", key, name) end
    end
  else
    for j = 1, #flat, 2 do
      if redis.call("HGET", key, flat[j]) == flat[j + 1] then redis.call("HDEL", key, flat[j]) end
    end
  end
  if at > 0 and redis.call("PEXPIRETIME", key) == at then redis.call("PERSIST", key) end
  return {SAME}
end
local function settle(key, ikey, id, keep)
  local raw = redis.pcall("HGET", ikey, key)
  if type(raw) == "table" then return {MOVED} end
  -- Completed already (a retry, or a run's sweep), or another write's intent: not ours to settle.
  if not raw or string.sub(raw, 1, #id + 1) ~= id .. "|" then return {GONE} end
  local reply = {SAME}
  if keep ~= "1" then
    -- old, at, mode, ttl_set, packed, added
    local r = cmsgpack.unpack(string.sub(raw, #id + 2))
    local at = r[4] == 1 and r[2] or -1
    reply = undo(key, r[3], at, cmsgpack.unpack(r[5]), r[6])
  end
  redis.call("HDEL", ikey, key)
  return reply
end
local out = {}
for i = 1, #ARGS, 4 do out[#out + 1] = settle(ARGS[i], ARGS[i + 1], ARGS[i + 2], ARGS[i + 3]) end
return out
`;

const INTENTS = `
local function list(ikey, key)
  local flat
  if key == "" then
    flat = redis.pcall("HGETALL", ikey)
    if flat.err then return {MOVED} end
  else
    local raw = redis.pcall("HGET", ikey, key)
    if type(raw) == "table" then return {MOVED} end
    flat = raw and {key, raw} or {}
  end
  local out = {}
  for j = 1, #flat, 2 do
    local raw = flat[j + 1]
    local bar = string.find(raw, "|", 1, true)
    local r = cmsgpack.unpack(string.sub(raw, bar + 1))
    out[#out + 1] = {flat[j], string.sub(raw, 1, bar - 1), r[1], r[2], r[5]}
  end
  return out
end
local out = {}
for i = 1, #ARGS, 2 do out[#out + 1] = list(ARGS[i], ARGS[i + 1]) end
return out
`;

const DRY = `
local time = redis.call("TIME")
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local function plan(key, at, flat)
  local t = kind(key)
  if t == nil then return {MOVED} end
  if at > 0 and at <= now then return {GONE} end
  if t == "none" then return {MIGRATED} end
  if t ~= "hash" then return {ERROR, "WRONGTYPE the new key holds another type than a hash"} end
  for j = 1, #flat, 2 do
    if redis.call("HEXISTS", key, flat[j]) == 0 then return {REPAIRED} end
  end
  if at > 0 and redis.call("PTTL", key) == -1 then return {REPAIRED} end
  return {EXISTS}
end
local out = {}
for i = 1, #ARGS, 3 do
  out[#out + 1] = plan(ARGS[i], tonumber(ARGS[i + 1]), cmsgpack.unpack(ARGS[i + 2]))
end
return out
`;

function script(body: string, readOnly: boolean): ClusterScript {
  const flags = readOnly ? "no-writes,allow-cross-slot-keys" : "allow-cross-slot-keys";
  const lua = `#!lua flags=${flags}\n${fencePrelude(!readOnly)}${PRELUDE}${body}`;
  return { lua, sha: createHash("sha1").update(lua).digest("hex"), readOnly };
}

/** The scripts, by step. */
export const SCRIPTS = {
  read: script(READ, true),
  /** READ that also copies the jobs whose new key the same node serves (execute, default rule). */
  readHere: script(READ, false),
  recheck: script(RECHECK, true),
  local: script(LOCAL, false),
  write: script(WRITE, false),
  settle: script(SETTLE, false),
  intents: script(INTENTS, true),
  dry: script(DRY, true),
} as const;
