/**
 * Preflight: can this Redis user run what `--execute` will run? Asked before anything is written,
 * in one read-only script per master: `redis.acl_check_cmd` (Redis 7) checks a command with its
 * keys without running it, and raises an error for one renamed away (`rename-command`). So a user
 * lacking COPY is refused at once, not failed key by key.
 *
 * @module
 */
import { classify } from "../redis/errors.ts";
import type { Redis } from "../redis/ioredis.ts";
import { Buffer } from "node:buffer";
import type { KeySchema } from "../schema.ts";

/** One command `--execute` runs, with keys of the right names. */
interface Need {
  command: string;
  args: string[];
}

/** The key names the run writes besides jobs; `perSlot`: a cluster's fence and intents hash. */
interface ProgressKeys {
  cursor: string;
  meta: string;
  lock: string;
  control: string;
  status: string;
  perSlot?: string[];
}

/** Everything `--execute` runs, on keys of the names it uses. */
function executeNeeds(progress: ProgressKeys, keys: KeySchema): Need[] {
  // An old key and its new key (every placeholder "preflight"), as the ACL sees key names.
  const oldKey = keys.oldKeyOf(keys.from.names.map(() => Buffer.from("preflight")));
  const old = oldKey.toString();
  const fresh = (keys.newKeyOf(oldKey, keys.fields.map(() => "preflight")) ?? keys.newPrefix)
    .toString();
  const field = keys.workspaceField;
  const need = (command: string, ...args: string[]): Need => ({ command, args });
  return [
    need("HGET", old, field),
    need("HGETALL", old),
    need("HEXISTS", old, field),
    need("HLEN", old),
    need("EXISTS", old),
    need("TYPE", old),
    need("PTTL", old),
    need("PEXPIRETIME", old),
    need("COPY", old, fresh),
    need("HSETNX", fresh, field, "x"),
    need("HSET", fresh, field, "x"),
    need("HDEL", fresh, field),
    need("PEXPIRE", fresh, "1"),
    need("PEXPIREAT", fresh, "1"),
    need("PERSIST", fresh),
    need("DEL", fresh),
    need("EVALSHA", "0000000000000000000000000000000000000000", "0"),
    // The copy scripts read the server's clock (an expiry that passed; their own time).
    need("TIME"),
    need("SCRIPT", "LOAD", "return 1"),
    // The checkpoint and totals writes: one script that reads the lock first (the fence).
    need("GET", progress.lock),
    need("HINCRBY", progress.meta, "x", "1"),
    need("SET", progress.cursor, "0"),
    need("HSET", progress.meta, "run_id", "x"),
    need("DEL", progress.cursor),
    need("SET", progress.lock, "x", "PX", "1", "NX"),
    need("EVAL", "return 1", "1", progress.lock),
    // Live control: the control stream's reads (in a script), a dead predecessor's status.
    need("TYPE", progress.control),
    need("XRANGE", progress.control, "-", "+"),
    need("XREVRANGE", progress.control, "+", "-"),
    need("GET", progress.status),
    need("SET", progress.status, "x", "PX", "1"),
    ...(progress.perSlot ?? []).flatMap((key) => [
      need("HSET", key, "f", "x"),
      need("HGET", key, "f"),
      need("HMGET", key, "f"),
      need("HEXISTS", key, "f"),
      need("HGETALL", key),
      need("HDEL", key, "f"),
    ]),
  ];
}

/** Per need: 1 allowed, 0 refused by the ACL, -1 no such command (renamed or disabled). */
const PREFLIGHT_SCRIPT = `#!lua flags=no-writes
local out = {}
local i = 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local ok, allowed = pcall(redis.acl_check_cmd, unpack(ARGV, i + 1, i + n))
  if not ok then out[#out + 1] = -1 elseif allowed then out[#out + 1] = 1 else out[#out + 1] = 0 end
  i = i + n + 1
end
return out
`;

/**
 * What the current user may not run of `needs` on `node` (command and key, never a value), or
 * `undefined` when the server cannot tell (no `acl_check_cmd` before Redis 7).
 */
async function missingPermissions(
  node: Redis,
  needs: readonly Need[],
  keys: KeySchema,
): Promise<string[] | undefined> {
  const args = needs.flatMap((need) => [String(need.args.length + 1), need.command, ...need.args]);
  let reply: number[];
  try {
    reply = await node.call("EVAL_RO", PREFLIGHT_SCRIPT, "0", ...args) as number[];
  } catch (error) {
    // A node that is not there (or busy) cannot tell now: the caller waits for it and asks again.
    if (classify(error).outage) throw error;
    // A user who may not even run a read-only script cannot run the copy scripts either.
    if (classify(error).kind === "credentials") return ["EVAL_RO / EVALSHA (scripts)"];
    return undefined;
  }
  const missing = new Set<string>();
  needs.forEach((need, i) => {
    if (reply[i] === 0) missing.add(describe(need, keys));
    if (reply[i] === -1) missing.add(`${need.command} (no such command: renamed or disabled)`);
  });
  return [...missing];
}

/** `COPY on ai:jobs:* → ai:job:*`, `SET on ai:backfill:lock`, `MULTI`: what a need touches. */
function describe(need: Need, keys: KeySchema): string {
  const newPrefix = keys.newPrefix.toString();
  const oldPrefix = keys.oldPrefix.toString();
  const shown = (key: string) =>
    key.startsWith(newPrefix) ? `${newPrefix}*` : key.startsWith(oldPrefix) ? `${oldPrefix}*` : key;
  const [first, second] = need.args;
  if (first === undefined || !first.includes(":")) return need.command;
  const to = second !== undefined && second.includes(":") ? ` → ${shown(second)}` : "";
  return `${need.command} on ${shown(first)}${to}`;
}

/** What the user may not run on any of `nodes` (deduplicated); `undefined` if a node cannot tell. */
export async function checkPermissions(
  nodes: readonly Redis[],
  progress: ProgressKeys,
  keys: KeySchema,
): Promise<string[] | undefined> {
  const needs = executeNeeds(progress, keys);
  const perNode = await Promise.all(nodes.map((node) => missingPermissions(node, needs, keys)));
  if (perNode.some((missing) => missing === undefined)) return undefined;
  return [...new Set(perNode.flatMap((missing) => missing!))];
}
