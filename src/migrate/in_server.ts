/**
 * Standalone strategy: one script call per sub-batch classifies and copies its old keys inside
 * Redis, atomically: between reading an old key and creating its new key nothing else runs, so a
 * job the application deleted is never re-created and a value it dual-wrote is never overwritten.
 *
 * Per key: HGET the workspace field (WRONGTYPE: invalid; nil: gone, or invalid when the key
 * exists) and each other field the new name reads; validate them (or `filtered`); then COPY old
 * new without REPLACE: 1 → migrated; 0 → HSETNX each field the new key lacks and PEXPIRE it with
 * the old TTL if it has none → repaired, or exists. In dry-run the same decisions are made with
 * EXISTS/HEXISTS/PTTL, in a `no-writes` script (EVALSHA_RO: Redis refuses any write).
 *
 * ARGV (from schema.ts: no key or field name is spelled in Lua): [1] the key mapping
 * (`KeySchema.luaSpec`), [2] workspace filter ("" = none), [3] the default rule's Lua pattern,
 * [4] its maximum length, [5] rule: "default" | "expect" (ARGV[10 + (i-1)·n + j] is the value of
 * field j the client validated for KEYS[i]; another value now → "changed") | "probe" (report
 * values only), [6] the run lock's key, [7] its value ("" = unfenced: a call made when the lock
 * holds another value is refused as `FENCED`, nothing written), [8..10] the call record's key,
 * field and id ("" = none; migrate/call_record.ts).
 * Reply, 2 + n entries per key: the code ({@linkcode ScriptCode}), the workspace id when valid
 * (else ""), the detail (an error's first line, an invalid key's reason, else ""), then the other
 * fields' values ("" when not valid).
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import {
  CallClock,
  type CallClockMode,
  decodeTimed,
  probeCallClock,
  timedScript,
} from "../control/call_clock.ts";
import { CallSizer } from "../control/call_size.ts";
import { SafetyRefusal } from "../errors.ts";
import { refusedAsFenced, type RunLock } from "../safety/lock.ts";
import { redisVersion } from "../redis/availability.ts";
import { isScriptMissing } from "../redis/errors.ts";
import type { Redis } from "../redis/ioredis.ts";
import { DEFAULT_WORKSPACE_LUA, KEY_LUA, type KeySchema } from "../schema.ts";
import { CallRecords, type LostCopies, recordArgs, type RecordedCall } from "./call_record.ts";
import type { Outcome } from "../outcome.ts";
import {
  errorResult,
  invalidResult,
  type MigrateOptions,
  type MigrationStrategy,
  ScriptCode,
  type StrategyResult,
} from "./strategy.ts";

const BODY = `
local dry = DRY
${KEY_LUA}
local key_parts, new_key, key_fields, read_others = key_mapping(ARGV[1])
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
-- The call record: a digit per key (strings: table.concat would format each number)
local record = not dry and ARGV[8] ~= ""
local DIGITS = {[0] = "0", "1", "2", "3", "4", "5", "6", "7"}
local codes, copied = {}, false

local function valid_default(ws)
  return #ws <= default_max and string.find(ws, default_pattern) ~= nil
end

-- With more than one field, values[2..nf] hold the other fields of the key at hand (read_others).
local valid, expected = valid_default, function(i, ws) return ws == ARGV[EXPECTED + i] end
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

-- The first line of an error reply (Redis's own text, never a field value).
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
  elseif nf > 1 and not read_others(old, values) then
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

/** Options of {@linkcode InServerCopy}. */
export interface InServerCopyOptions {
  /** `--max-call-ms`: the Redis time one script call may take. Default 0.25. */
  maxCallMs?: number;
  /** `--call-clock`: `auto` (probe the server) or `client` (see call_clock.ts). */
  callClock?: CallClockMode;
  /** The run lock every executing call checks first (absent: unfenced, no lock held). */
  lock?: Pick<RunLock, "key" | "value">;
  /** The key where executing calls record what they copied (absent: no record). */
  callRecord?: string;
}

/** Migrates on a standalone Redis (≥ 6.2); each call's own Redis time sizes the next. */
export class InServerCopy implements MigrationStrategy {
  /** One connection: a batch's save runs between the next batch's calls (run/checkpointer.ts). */
  readonly batchesInFlight = 2;
  readonly #client: Redis;
  readonly #keys: KeySchema;
  readonly #options: InServerCopyOptions;
  readonly #sizer: CallSizer;
  #clock = new CallClock("script");
  #copySha = "";
  #drySha = "";
  /** EVALSHA_RO exists from Redis 7.0; before that the dry script runs as plain EVALSHA. */
  #dryEval = "EVALSHA_RO";
  readonly #calls = new CallRecords();

  constructor(client: Redis, keys: KeySchema, options: InServerCopyOptions = {}) {
    this.#client = client;
    this.#keys = keys;
    this.#options = options;
    this.#sizer = new CallSizer({ maxCallMs: options.maxCallMs });
  }

  /** Whose clock times the calls (known after {@linkcode init}). */
  get clockSource(): CallClock["source"] {
    return this.#clock.source;
  }

  /** Keys that fit the next call's Redis-time budget (the learnt cost per key; 4 at first). */
  nextCallSize(): number {
    return this.#sizer.nextCount();
  }

  async init(): Promise<void> {
    const [major, minor] = redisVersion(await this.#client.info("server"));
    if (major < 6 || (major === 6 && minor < 2)) {
      throw new SafetyRefusal(
        `Redis ${major}.${minor} has no COPY command; backfill needs Redis 6.2 or newer`,
      );
    }
    if (major < 7) this.#dryEval = "EVALSHA";
    await this.#load();
  }

  async #load(): Promise<void> {
    const dry = this.#dryEval === "EVALSHA"
      ? DRY_RUN_SCRIPT.replace(/^#!.*\n/, "")
      : DRY_RUN_SCRIPT;
    // Both report their own Redis time (TIME at start and end), which sizes the next call, where
    // the server lets time pass inside a script (probed again here: a failover may change it).
    this.#clock = await probeCallClock(this.#client, this.#options.callClock ?? "auto");
    this.#copySha = await this.#client.script("LOAD", timedScript(COPY_SCRIPT)) as string;
    this.#drySha = await this.#client.script("LOAD", timedScript(dry)) as string;
  }

  async migrate(keys: readonly Buffer[], options: MigrateOptions): Promise<StrategyResult[]> {
    if (keys.length === 0) return [];
    const width = 2 + this.#keys.fields.length;
    if (this.#keys.isDefaultRule) {
      return decode(await this.#run(keys, options, ["default"]), width);
    }
    // A custom pattern is a JavaScript RegExp, which Lua cannot evaluate: read the field values
    // first (probe), validate them here, then migrate with the validated values; the script
    // re-checks that each is still the one validated, atomically with the copy.
    const probed = await this.#run(keys, { ...options, dryRun: true }, ["probe"]);
    const results: StrategyResult[] = new Array(keys.length);
    const pending: { index: number; values: string[] }[] = [];
    for (let i = 0; i < keys.length; i++) {
      const at = width * i;
      const code = probed[at] as number;
      if (code !== ScriptCode.probed) {
        results[i] = resultAt(probed, i, width);
        continue;
      }
      // The workspace, then the other fields (after the detail).
      const values = this.#keys.checkValues([
        probed[at + 1] as Buffer,
        ...probed.slice(at + 3, at + width) as Buffer[],
      ]);
      if (values !== undefined) pending.push({ index: i, values });
      else results[i] = invalidResult("invalid_workspace_id");
    }
    if (pending.length > 0) {
      const reply = await this.#run(
        pending.map((p) => keys[p.index]!),
        options,
        ["expect", ...pending.flatMap((p) => p.values)],
      );
      const decoded = decode(reply, width);
      pending.forEach((p, j) => results[p.index] = decoded[j]!);
    }
    return results;
  }

  async #run(
    keys: readonly Buffer[],
    options: MigrateOptions,
    rule: string[],
  ): Promise<(number | Buffer)[]> {
    const { lock, callRecord } = this.#options;
    const send = async (record?: RecordedCall) => {
      const args = [
        keys.length,
        ...keys,
        this.#keys.luaSpec,
        options.workspace ?? "",
        DEFAULT_WORKSPACE_LUA.pattern,
        String(DEFAULT_WORKSPACE_LUA.maxLength),
        rule[0]!,
        ...(options.dryRun || !lock ? ["", ""] : [lock.key, lock.value]),
        ...recordArgs(record),
        ...rule.slice(1),
      ];
      const call = () =>
        options.dryRun
          ? this.#client.callBuffer(this.#dryEval, this.#drySha, ...args)
          : this.#client.callBuffer("EVALSHA", this.#copySha, ...args);
      const timed = () => this.#clock.time(call, (reply) => decodeTimed(reply).micros, keys.length);
      try {
        return await timed();
      } catch (error) {
        // The script cache is empty after a restart or failover: load again, once.
        if (!isScriptMissing(error)) throw error;
        await this.#load();
        return await timed();
      }
    };
    let answer: { value: unknown; micros: number };
    try {
      // A call that copies is recorded: without a reply it may have run, and its record tells.
      answer = callRecord !== undefined && !options.dryRun
        ? await this.#calls.send(callRecord, keys, send)
        : await send();
    } catch (error) {
      throw refusedAsFenced(error) ?? error;
    }
    this.#sizer.record({ keys: keys.length, micros: answer.micros });
    return decodeTimed<(number | Buffer)[]>(answer.value).result ?? [];
  }

  async lostCopies(): Promise<LostCopies[]> {
    if (this.#calls.unanswered === 0) return [];
    return await this.#calls.lookUp((key, fields) => this.#client.hmget(key, ...fields));
  }
}

const OUTCOME_OF_CODE: Readonly<Record<number, Outcome>> = {
  [ScriptCode.migrated]: "migrated",
  [ScriptCode.repaired]: "repaired",
  [ScriptCode.exists]: "skipped_exists",
  [ScriptCode.invalid]: "skipped_invalid",
  [ScriptCode.gone]: "skipped_gone",
  [ScriptCode.filtered]: "filtered",
  [ScriptCode.error]: "errors",
  [ScriptCode.changed]: "errors",
};

/** Per-key results of a copy script reply (`width` entries per key). */
function decode(reply: (number | Buffer)[], width: number): StrategyResult[] {
  return Array.from({ length: reply.length / width }, (_, i) => resultAt(reply, i, width));
}

/**
 * Key `i`'s result in a copy script reply.
 *
 * @throws {Error} on a code or an invalid-key reason the script never sends.
 */
function resultAt(reply: (number | Buffer)[], i: number, width: number): StrategyResult {
  const at = width * i;
  const code = reply[at] as number;
  const outcome = OUTCOME_OF_CODE[code];
  if (outcome === undefined) throw new Error(`migration script returned unknown code ${code}`);
  const workspace = (reply[at + 1] as Buffer).toString("utf8") || undefined;
  const detail = (reply[at + 2] as Buffer).toString("utf8");
  if (code === ScriptCode.error) return errorResult(detail, { workspace });
  if (code === ScriptCode.changed) {
    return { outcome, workspace, errorCode: "CHANGED", retryable: true };
  }
  if (outcome === "skipped_invalid") return invalidResult(detail);
  if (outcome === "skipped_gone") return { outcome };
  return { outcome, workspace };
}
