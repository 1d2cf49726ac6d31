/**
 * Standalone strategy: one script call per sub-batch does the whole per-key work inside Redis
 * (see copy_script.ts). The client never reads a value and writes it back.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import { CallSizer } from "../control/call_size.ts";
import { decodeTimed, timedScript } from "../control/script_clock.ts";
import { SafetyRefusal } from "../errors.ts";
import { classify } from "../redis/errors.ts";
import type { Redis } from "../redis/ioredis.ts";
import {
  DEFAULT_WORKSPACE_LUA,
  NEW_PREFIX,
  OLD_PREFIX,
  WORKSPACE_FIELD,
  type WorkspaceRule,
} from "../schema.ts";
import { COPY_SCRIPT, DRY_RUN_SCRIPT } from "./copy_script.ts";
import {
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
}

/**
 * Migrates with one atomic script call per sub-batch on a standalone Redis (≥ 6.2). Each script
 * reports its own Redis time, from which the next call is sized (`nextCallSize`).
 */
export class InServerCopy implements MigrationStrategy {
  /** One server, one connection: a save sent before the next batch's scripts lands first. */
  readonly checkpointOrdering = "pipelined";
  readonly #client: Redis;
  readonly #rule: WorkspaceRule;
  readonly #sizer: CallSizer;
  #copySha = "";
  #drySha = "";
  /** EVALSHA_RO exists from Redis 7.0; before that the dry script runs as plain EVALSHA. */
  #hasReadOnlyEval = true;

  constructor(client: Redis, rule: WorkspaceRule, options: InServerCopyOptions = {}) {
    this.#client = client;
    this.#rule = rule;
    this.#sizer = new CallSizer({ maxCallMs: options.maxCallMs });
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
    // Both report their own Redis time (TIME at start and end), which sizes the next call.
    this.#copySha = await this.#client.script("LOAD", timedScript(COPY_SCRIPT)) as string;
    this.#drySha = await this.#client.script("LOAD", timedScript(dry)) as string;
  }

  async migrate(keys: readonly Buffer[], options: MigrateOptions): Promise<StrategyResult[]> {
    if (keys.length === 0) return [];
    if (this.#rule.isDefault) return this.#decode(await this.#run(keys, options, ["default"]));
    // A custom pattern is a JavaScript RegExp, which Lua cannot evaluate: read the ids first
    // (probe), validate them here, then migrate with the validated ids; the script re-checks that
    // each id is still the one validated, atomically with the copy.
    const probed = await this.#run(keys, { ...options, dryRun: true }, ["probe"]);
    const results: StrategyResult[] = new Array(keys.length);
    const pending: { index: number; workspace: string }[] = [];
    for (let i = 0; i < keys.length; i++) {
      const code = probed[2 * i] as number;
      const raw = probed[2 * i + 1] as Buffer;
      const workspace = code === ScriptCode.probed ? this.#rule.check(raw) : undefined;
      if (workspace !== undefined) pending.push({ index: i, workspace });
      else {
        results[i] = {
          outcome: code === ScriptCode.gone ? "skipped_gone" : "skipped_invalid",
        };
      }
    }
    if (pending.length > 0) {
      const reply = await this.#run(
        pending.map((p) => keys[p.index]!),
        options,
        ["expect", ...pending.map((p) => p.workspace)],
      );
      const decoded = this.#decode(reply);
      pending.forEach((p, j) => results[p.index] = decoded[j]!);
    }
    return results;
  }

  async #run(
    keys: readonly Buffer[],
    options: MigrateOptions,
    rule: string[],
  ): Promise<(number | Buffer)[]> {
    const args = [
      keys.length,
      ...keys,
      String(OLD_PREFIX.length),
      NEW_PREFIX,
      WORKSPACE_FIELD,
      options.workspace ?? "",
      DEFAULT_WORKSPACE_LUA.pattern,
      String(DEFAULT_WORKSPACE_LUA.maxLength),
      ...rule,
    ];
    const call = () =>
      options.dryRun
        ? this.#client.callBuffer(
          this.#hasReadOnlyEval ? "EVALSHA_RO" : "EVALSHA",
          this.#drySha,
          ...args,
        )
        : this.#client.callBuffer("EVALSHA", this.#copySha, ...args);
    let reply: unknown;
    try {
      reply = await call();
    } catch (error) {
      // The script cache is empty after a restart or failover: load again, once.
      if (classify(error).kind !== "noscript") throw error;
      await this.#load();
      reply = await call();
    }
    const { micros, result } = decodeTimed<(number | Buffer)[]>(reply);
    this.#sizer.record({ keys: keys.length, micros });
    return result ?? [];
  }

  #decode(reply: (number | Buffer)[]): StrategyResult[] {
    const results: StrategyResult[] = [];
    for (let i = 0; i < reply.length; i += 2) {
      results.push(resultOfCode(reply[i] as number, (reply[i + 1] as Buffer).toString("latin1")));
    }
    return results;
  }
}
