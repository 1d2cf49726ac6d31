/**
 * The call record: how a copy whose reply was lost still counts as this run's copy. Every
 * executing call that copies carries a record key, a field and its id; a call that copied writes
 * `<id>:<codes>` there, one {@linkcode ScriptCode} digit per key in call order. A call that fails
 * without a reply (a lost connection, a timeout) may have run: its record, read once Redis answers
 * again, tells which keys it copied, and uncounted_copies.ts counts the retry's `skipped_exists`
 * for them as those copies.
 *
 * A field is held from its call's send until the call is answered or, when its reply was lost,
 * until its record has been read: a later call never overwrites a record still to be read.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import type { Outcome } from "../outcome.ts";
import { isOutage } from "../redis/errors.ts";
import { ScriptCode, type StrategyResult } from "./strategy.ts";

const COPIED_DIGITS: Readonly<Record<string, Outcome>> = {
  [String(ScriptCode.migrated)]: "migrated",
  [String(ScriptCode.repaired)]: "repaired",
};

/** Where one call records what it copied. */
export interface RecordedCall {
  key: string;
  field: string;
  id: string;
}

/** A call's three record arguments (`key`, `field`, `id`); empty strings for no record. */
export function recordArgs(call: RecordedCall | undefined): [string, string, string] {
  return call ? [call.key, call.field, call.id] : ["", "", ""];
}

/** What the lost calls copied: per call, the old keys it copied and their outcomes. */
export interface LostCopies {
  keys: Buffer[];
  results: StrategyResult[];
}

/** The calls of one run: their record fields and ids, and those whose reply was lost. */
export class CallRecords {
  /** Tells this run's call ids from an earlier run's. */
  readonly #nonce = crypto.randomUUID().slice(0, 8);
  #calls = 0;
  /** Per record key, the fields held by a call in flight or a lost call not looked up yet. */
  readonly #held = new Map<string, Set<number>>();
  #unanswered: (RecordedCall & { keys: Buffer[] })[] = [];

  /**
   * Sends a copying call of `keys` (old keys, in call order) recorded under `key`; after an outage
   * error its field stays held until {@linkcode lookUp} reads its record.
   */
  async send<T>(
    key: string,
    keys: readonly Buffer[],
    call: (record: RecordedCall) => Promise<T>,
  ): Promise<T> {
    const record = this.#take(key);
    try {
      const reply = await call(record);
      this.#release(record);
      return reply;
    } catch (error) {
      if (isOutage(error)) this.#unanswered.push({ ...record, keys: [...keys] });
      else this.#release(record);
      throw error;
    }
  }

  /** Calls whose reply was lost and that are not looked up yet. */
  get unanswered(): number {
    return this.#unanswered.length;
  }

  /** The lowest field of `key` no call holds. */
  #take(key: string): RecordedCall {
    let held = this.#held.get(key);
    if (held === undefined) this.#held.set(key, held = new Set());
    let field = 0;
    while (held.has(field)) field++;
    held.add(field);
    return { key, field: String(field), id: `${this.#nonce}:${this.#calls++}` };
  }

  #release(call: RecordedCall): void {
    this.#held.get(call.key)?.delete(Number(call.field));
  }

  /**
   * What the unanswered calls copied, read with `read` (a call that copied nothing left no
   * record). The calls of a record key that cannot be read now stay for the next look-up.
   */
  async lookUp(
    read: (key: string, fields: string[]) => Promise<(string | null)[]>,
  ): Promise<LostCopies[]> {
    const calls = this.#unanswered;
    this.#unanswered = [];
    const byKey = Map.groupBy(calls, (call) => call.key);
    const found: LostCopies[] = [];
    for (const [key, group] of byKey) {
      let records: (string | null)[];
      try {
        records = await read(key, group.map((call) => call.field));
      } catch {
        this.#unanswered.push(...group);
        continue;
      }
      group.forEach((call, i) => {
        this.#release(call);
        const record = records[i];
        if (!record?.startsWith(`${call.id}:`)) return;
        const codes = record.slice(call.id.length + 1);
        const copied: LostCopies = { keys: [], results: [] };
        call.keys.forEach((key, k) => {
          const outcome = COPIED_DIGITS[codes[k] ?? ""];
          if (outcome === undefined) return;
          copied.keys.push(key);
          copied.results.push({ outcome });
        });
        if (copied.keys.length > 0) found.push(copied);
      });
    }
    return found;
  }
}
