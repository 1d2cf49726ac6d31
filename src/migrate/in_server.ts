/**
 * Standalone strategy: one script call per sub-batch does the whole per-key work inside Redis
 * (see copy_script.ts). The client never reads a value and writes it back.
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
import { isScriptMissing } from "../redis/errors.ts";
import type { Redis } from "../redis/ioredis.ts";
import { DEFAULT_WORKSPACE_LUA, type KeySchema } from "../schema.ts";
import { CallRecords, type LostCopies, recordArgs, type RecordedCall } from "./call_record.ts";
import { COPY_SCRIPT, DRY_RUN_SCRIPT } from "./copy_script.ts";
import {
  invalidResult,
  type MigrateOptions,
  type MigrationStrategy,
  resultOfCode,
  ScriptCode,
  type StrategyResult,
} from "./strategy.ts";

/** Parses `INFO server`'s redis_version into [major, minor]. */
export function redisVersion(info: string): [number, number] {
  const match = info.match(/redis_version:(\d+)\.(\d+)/);
  return match ? [Number(match[1]), Number(match[2])] : [0, 0];
}

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

/**
 * Migrates with one atomic script call per sub-batch on a standalone Redis (≥ 6.2). Each script
 * reports its own Redis time, from which the next call is sized (`nextCallSize`).
 */
export class InServerCopy implements MigrationStrategy {
  /** One connection: a batch's save runs between the next batch's calls (run/checkpointer.ts). */
  readonly batchesInFlight = 2;
  readonly #client: Redis;
  readonly #keys: KeySchema;
  readonly #sizer: CallSizer;
  readonly #clockMode: CallClockMode;
  #clock = new CallClock("script");
  #copySha = "";
  #drySha = "";
  /** EVALSHA_RO exists from Redis 7.0; before that the dry script runs as plain EVALSHA. */
  #hasReadOnlyEval = true;
  readonly #fence: [string, string];
  /** The call record's key (absent: no record), and its calls (migrate/call_record.ts). */
  readonly #record?: string;
  readonly #calls = new CallRecords();

  constructor(client: Redis, keys: KeySchema, options: InServerCopyOptions = {}) {
    this.#client = client;
    this.#keys = keys;
    this.#sizer = new CallSizer({ maxCallMs: options.maxCallMs });
    this.#clockMode = options.callClock ?? "auto";
    this.#fence = options.lock ? [options.lock.key, options.lock.value] : ["", ""];
    this.#record = options.callRecord;
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
    this.#hasReadOnlyEval = major >= 7;
    await this.#load();
  }

  async #load(): Promise<void> {
    const dry = this.#hasReadOnlyEval ? DRY_RUN_SCRIPT : DRY_RUN_SCRIPT.replace(/^#!.*\n/, "");
    // Both report their own Redis time (TIME at start and end), which sizes the next call, where
    // the server lets time pass inside a script (probed again here: a failover may change it).
    this.#clock = await probeCallClock(this.#client, this.#clockMode);
    this.#copySha = await this.#client.script("LOAD", timedScript(COPY_SCRIPT)) as string;
    this.#drySha = await this.#client.script("LOAD", timedScript(dry)) as string;
  }

  async migrate(keys: readonly Buffer[], options: MigrateOptions): Promise<StrategyResult[]> {
    if (keys.length === 0) return [];
    const width = replyWidth(this.#keys);
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
        results[i] = resultOfCode(replyAt(probed, i, width));
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
    const send = async (record?: RecordedCall) => {
      const args = [
        keys.length,
        ...keys,
        this.#keys.luaSpec,
        options.workspace ?? "",
        DEFAULT_WORKSPACE_LUA.pattern,
        String(DEFAULT_WORKSPACE_LUA.maxLength),
        rule[0]!,
        ...(options.dryRun ? ["", ""] : this.#fence),
        ...recordArgs(record),
        ...rule.slice(1),
      ];
      const call = () =>
        options.dryRun
          ? this.#client.callBuffer(
            this.#hasReadOnlyEval ? "EVALSHA_RO" : "EVALSHA",
            this.#drySha,
            ...args,
          )
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
      answer = this.#record !== undefined && !options.dryRun
        ? await this.#calls.send(this.#record, keys, send)
        : await send();
    } catch (error) {
      throw refusedAsFenced(error) ?? error;
    }
    this.#sizer.record({ keys: keys.length, micros: answer.micros });
    return decodeTimed<(number | Buffer)[]>(answer.value).result ?? [];
  }

  /**
   * What the calls that failed without a reply copied, read from their records once Redis
   * answers again (migrate/call_record.ts).
   */
  async lostCopies(): Promise<LostCopies[]> {
    if (this.#calls.unanswered === 0) return [];
    return await this.#calls.lookUp((key, fields) => this.#client.hmget(key, ...fields));
  }
}

/** Per-key results of a copy script reply. */
function decode(reply: (number | Buffer)[], width: number): StrategyResult[] {
  const results: StrategyResult[] = [];
  for (let i = 0; i * width < reply.length; i++) {
    results.push(resultOfCode(replyAt(reply, i, width)));
  }
  return results;
}

/**
 * Entries per key in the copy script's reply: code, workspace id, detail, and the values of the
 * other fields the new name reads (see copy_script.ts): 3 with one field.
 */
function replyWidth(keys: KeySchema): number {
  return 2 + keys.fields.length;
}

/** Key `i`'s part of a copy script reply. */
function replyAt(
  reply: (number | Buffer)[],
  i: number,
  width: number,
): { code: number; workspace: string; detail: string } {
  const at = width * i;
  return {
    code: reply[at] as number,
    workspace: (reply[at + 1] as Buffer).toString("utf8"),
    detail: (reply[at + 2] as Buffer).toString("utf8"),
  };
}
