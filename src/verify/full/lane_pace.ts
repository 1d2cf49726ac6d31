/**
 * Sizing of one lane's calls (pure): the lane script's own-time limit from the call budget and the
 * outside-time model (`call_budget.ts`), and its first SCAN's COUNT from the lane's pace (own µs
 * per COUNT unit; COUNT counts keys before MATCH, so new keys count too). The script tops the
 * first SCAN up to the limit on its own clock, so the first SCAN aims at a share of it only.
 *
 * @module
 */
import { followPace, ownTimeLimitUs, TARGET_SHARE } from "./call_budget.ts";

/**
 * The first SCAN aims at this share of the own-time limit; top-ups fill the rest. Each SCAN step
 * costs Redis ~5 µs besides its keys: at 0.6 (the prototype's 110 of 185 µs) a call made 2.5
 * steps, at 0.8 two, for ~4% less Redis time per key (300 000 keys, alternated runs).
 */
export const FIRST_SHARE = 0.8;

/** COUNT of a lane's first call, and the most a first SCAN asks for. */
const FIRST_COUNT = 16;
const MAX_COUNT = 1000;

/** One lane's pace and the sizes of its next call. */
export class LanePace {
  #usPerUnit: number | undefined;
  #usPerKey: number | undefined;
  /** Keys the last call returned (their reply is outside the script's clock). */
  #keys = FIRST_COUNT;

  /**
   * @param budgetUs Redis time one call may take (µs).
   * @param cap The most COUNT units a call may SCAN (0 = no cap; `--rps`: a quarter second).
   */
  constructor(readonly budgetUs: number, readonly cap: number) {}

  /**
   * The own-time limit of the next call: {@linkcode TARGET_SHARE} of the budget, minus what Redis
   * spends outside the script's clock for a reply of as many keys as the last call's.
   */
  limitUs(): number {
    return ownTimeLimitUs(this.budgetUs * TARGET_SHARE, this.#keys);
  }

  /** COUNT of the next call's first SCAN: {@linkcode FIRST_SHARE} of the limit at the pace. */
  firstCount(): number {
    const wanted = this.#usPerUnit === undefined
      ? FIRST_COUNT
      : Math.floor(FIRST_SHARE * this.limitUs() / this.#usPerUnit);
    const capped = this.cap > 0 ? Math.min(wanted, this.cap) : wanted;
    return Math.max(1, Math.min(MAX_COUNT, capped));
  }

  /**
   * Own µs per key the script checked (its setup and SCANs included, so on the safe side); 0 until
   * a call has checked one. The script reads its clock when the next key might not fit by it.
   */
  usPerKey(): number {
    return this.#usPerKey ?? 0;
  }

  /**
   * Follows a call: its own time (µs), the COUNT units it SCANned, the keys it returned, and of
   * those the keys it checked (not deferred for time).
   */
  update(ownUs: number, units: number, keys: number, checked: number): void {
    this.#keys = keys;
    if (!(ownUs > 0)) return;
    if (units > 0) this.#usPerUnit = followPace(this.#usPerUnit, ownUs / units);
    if (checked > 0) this.#usPerKey = followPace(this.#usPerKey, ownUs / checked);
  }
}
