/**
 * The Lua scripts of the grouped cluster copy. Each call carries the keys of many jobs that one
 * master serves, undeclared in ARGV with zero KEYS (`allow-cross-slot-keys` lets one script touch
 * keys of several slots on one node; declared KEYS of two slots would get CROSSSLOT). The routed
 * fallback sends one job with its key declared, so the cluster client follows MOVED and ASK.
 *
 * Each script answers one reply per job, in order. A key the node does not serve (the slot moved,
 * or is being migrated and the key is absent here) answers {@linkcode Code.moved} for that job
 * only: the first access of every key is a `pcall`, before anything is written for it.
 *
 * A snapshot's fields travel as one string, `cmsgpack.pack` of HGETALL's flat list (field, value,
 * …): one bulk string per job instead of two per field, for Redis to reply and the client to
 * decode and send on; WRITE, UNDO and DRY unpack it with `cmsgpack.unpack`.
 *
 * - READ (old keys' node): ARGV field, only-workspace, here ("1" or ""), new prefix, old prefix
 *   length, default-rule Lua pattern and maximum length, key… → per key `{gone}`,
 *   `{invalid, reason}` (`not_hash`, `no_workspace_id`, and with here `empty_job_id`,
 *   `invalid_workspace_id`), `{filtered, ws}` or `{copy, ws, expire_at, packed}`. With here = "1" (the `readHere`
 *   variant, which may write), a job whose new key this node serves is checked against the
 *   default rule and copied at once, atomically, like LOCAL: `{migrated|repaired|exists|gone,
 *   ws}` or `{error, text, ws}` (the first line of Redis's error text).
 * - RECHECK (old keys' node, read-only): ARGV (key, expire_at, packed)… → `{same}` when the old
 *   key still has that absolute expiry and packs to the same string (fields in HGETALL's order,
 *   which changes only with a write or a rehash: a false "changed" costs a re-read, never a wrong
 *   copy), else `{gone}` or `{changed}`.
 * - LOCAL (old and new key on one node): ARGV field, (old, new, expected ws)… → the whole copy in
 *   one atomic step from the live old key: `{migrated}`, `{repaired}`, `{exists}`, `{gone}`,
 *   `{changed}` (the workspace id differs from the validated one) or `{error, code}`.
 * - WRITE (new keys' node): ARGV (key, expire_at, packed)… → create-only copy of a snapshot:
 *   `{created, ttl_set}`, `{completed, ttl_set, {added field…}}`, `{gone}` when the absolute
 *   expiry has passed by the server's TIME (nothing written), or `{error, code, ttl_set, {added}}`.
 * - UNDO (new keys' node): ARGV (key, mode, expire_at_we_set, packed snapshot, n, name…)… →
 *   removes what WRITE added, only where it is still as written. Mode 1: created whole (DEL when
 *   unchanged, else the fields that still hold our values); mode 2: unknown what was added (DEL
 *   only when unchanged); mode 0: the n named fields. The expiry is removed only while it is still
 *   the one we set.
 * - DRY (new keys' node, read-only): ARGV (key, expire_at, packed)… → what WRITE would do.
 *
 * Expiries are set after the last chunk of fields: should PEXPIREAT find the time already passed
 * and delete the key, no later HSET can re-create it without a TTL.
 *
 * @module
 */
import { createHash } from "node:crypto";

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
} as const;

/** A script and what running it needs. */
export interface ClusterScript {
  readonly lua: string;
  readonly sha: string;
  /** Flagged `no-writes`: run with EVALSHA_RO. */
  readonly readOnly: boolean;
}

const CODES = Object.entries(Code).map(([name, value]) => `local ${name.toUpperCase()} = ${value}`)
  .join("\n");

const PRELUDE = `
${CODES}
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
-- Creates key from flat[first..last] (field, value pairs) in chunks (unpack has a stack limit),
-- then sets the expiry. Returns an error code, or nil.
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
-- Copies old (its absolute expiry at and HGETALL flat, read in this call) into new on this node,
-- atomically: create-only (HSET when absent, HSETNX completion and the expiry only if the new key
-- has none). t_new is TYPE new.
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
local field, only, here = ARGV[1], ARGV[2], ARGV[3] == "1"
local new_prefix, skip = ARGV[4], tonumber(ARGV[5])
local pattern, max_len = ARGV[6], tonumber(ARGV[7])
-- With "here", a job whose new key this node serves is copied at once (the default workspace
-- rule checked here, as the standalone script does); the others return their snapshot.
local function here_or_snapshot(key, ws, flat)
  local at = redis.call("PEXPIRETIME", key)
  if here then
    local job = string.sub(key, skip + 1)
    if job == "" then return {INVALID, "empty_job_id"} end
    if #ws > max_len or not string.find(ws, pattern) then return {INVALID, "invalid_workspace_id"} end
    local new = new_prefix .. ws .. ":" .. job
    local t_new = kind(new)
    if t_new ~= nil then
      local reply = copy_here(new, t_new, at, flat)
      reply[#reply + 1] = ws
      return reply
    end
  end
  return {COPY, ws, at, cmsgpack.pack(flat)}
end
-- One HGETALL per key tells all: not served here (an error other than WRONGTYPE), not a hash,
-- gone (empty), or the fields with the workspace id among them.
local function read(key)
  local flat = redis.pcall("HGETALL", key)
  if flat.err then
    if err_code(flat) == "WRONGTYPE" then return {INVALID, "not_hash"} end
    return {MOVED}
  end
  if #flat == 0 then return {GONE} end
  local ws
  for j = 1, #flat, 2 do
    if flat[j] == field then ws = flat[j + 1] break end
  end
  if not ws then return {INVALID, "no_workspace_id"} end
  if only ~= "" and ws ~= only then return {FILTERED, ws} end
  return here_or_snapshot(key, ws, flat)
end
local out = {}
for i = 8, #ARGV do out[#out + 1] = read(ARGV[i]) end
return out
`;

const RECHECK = `
local out = {}
for i = 1, #ARGV, 3 do
  local key = ARGV[i]
  local at = redis.pcall("PEXPIRETIME", key)
  local code = CHANGED
  if type(at) == "table" then code = MOVED
  elseif at == -2 then code = GONE
  elseif at == tonumber(ARGV[i + 1]) then
    -- Packed in HGETALL's order, which changes only with a write or a rehash: a false "changed"
    -- costs a re-read, never a wrong copy. The workspace id is one of the fields.
    local flat = redis.pcall("HGETALL", key)
    if not flat.err and cmsgpack.pack(flat) == ARGV[i + 2] then code = SAME end
  end
  out[#out + 1] = {code}
end
return out
`;

const LOCAL = `
local field = ARGV[1]
local function copy(old, new, expect)
  local t_old, t_new = kind(old), kind(new)
  if t_old == nil or t_new == nil then return {MOVED} end
  if t_old == "none" then return {GONE} end
  if t_old ~= "hash" or redis.call("HGET", old, field) ~= expect then return {CHANGED} end
  return copy_here(new, t_new, redis.call("PEXPIRETIME", old), redis.call("HGETALL", old))
end
local out = {}
for i = 2, #ARGV, 3 do out[#out + 1] = copy(ARGV[i], ARGV[i + 1], ARGV[i + 2]) end
return out
`;

const WRITE = `
local time = redis.call("TIME")
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local function write(key, at, flat)
  local t = kind(key)
  if t == nil then return {MOVED} end
  -- The old key's absolute expiry has passed: it is gone, and a copy must not outlive it.
  if at > 0 and at <= now then return {GONE} end
  if t == "none" then
    local failed = create(key, flat, 1, #flat, at)
    if failed then return {ERROR, failed, 0, {}} end
    if at > 0 and redis.call("EXISTS", key) == 0 then return {GONE} end
    return {CREATED, at > 0 and 1 or 0}
  end
  if t ~= "hash" then return {ERROR, "WRONGTYPE the new key holds another type than a hash", 0, {}} end
  local added = {}
  for j = 1, #flat, 2 do
    local r = redis.pcall("HSETNX", key, flat[j], flat[j + 1])
    if type(r) == "table" then return {ERROR, err_text(r), 0, added} end
    if r == 1 then added[#added + 1] = flat[j] end
  end
  local ttl_set = 0
  if at > 0 and redis.call("PTTL", key) == -1 then
    redis.call("PEXPIREAT", key, at)
    ttl_set = 1
  end
  return {COMPLETED, ttl_set, added}
end
local out = {}
for i = 1, #ARGV, 3 do
  out[#out + 1] = write(ARGV[i], tonumber(ARGV[i + 1]), cmsgpack.unpack(ARGV[i + 2]))
end
return out
`;

const UNDO = `
local function unchanged(key, flat, at)
  if redis.call("HLEN", key) * 2 ~= #flat then return false end
  if redis.call("PEXPIRETIME", key) ~= at then return false end
  for j = 1, #flat, 2 do
    if redis.call("HGET", key, flat[j]) ~= flat[j + 1] then return false end
  end
  return true
end
local function undo(key, mode, at, flat, first, last)
  local t = kind(key)
  if t == nil then return {MOVED} end
  if t ~= "hash" then return {SAME} end
  if mode ~= 0 and unchanged(key, flat, at) then
    redis.call("DEL", key)
    return {SAME}
  end
  if mode == 2 then return {CHANGED} end
  local ours = {}
  if mode == 0 then
    -- Only the fields this write added (their names in ARGV), with the snapshot's values.
    local value_of = {}
    for j = 1, #flat, 2 do value_of[flat[j]] = flat[j + 1] end
    for j = first, last do ours[#ours + 1] = ARGV[j]; ours[#ours + 1] = value_of[ARGV[j]] end
  else
    ours = flat
  end
  for j = 1, #ours, 2 do
    if redis.call("HGET", key, ours[j]) == ours[j + 1] then redis.call("HDEL", key, ours[j]) end
  end
  if at > 0 and redis.call("PEXPIRETIME", key) == at then redis.call("PERSIST", key) end
  return {SAME}
end
local out = {}
local i = 1
while i <= #ARGV do
  local n = tonumber(ARGV[i + 4])
  local flat = cmsgpack.unpack(ARGV[i + 3])
  out[#out + 1] = undo(ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), flat, i + 5, i + 4 + n)
  i = i + 5 + n
end
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
for i = 1, #ARGV, 3 do
  out[#out + 1] = plan(ARGV[i], tonumber(ARGV[i + 1]), cmsgpack.unpack(ARGV[i + 2]))
end
return out
`;

function script(body: string, readOnly: boolean): ClusterScript {
  const flags = readOnly ? "no-writes,allow-cross-slot-keys" : "allow-cross-slot-keys";
  const lua = `#!lua flags=${flags}\n${PRELUDE}${body}`;
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
  undo: script(UNDO, false),
  dry: script(DRY, true),
} as const;
