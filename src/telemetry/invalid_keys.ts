/**
 * Invalid old keys in the log: the first ones of a run one by one (escaped: a key name is
 * untrusted), then one line with the count by reason, so "why are keys skipped?" has an answer
 * without flooding the log on a keyspace full of junk.
 *
 * @module
 */
import type { BatchReport, Logger, RunObserver } from "../run_events.ts";
import { escapeForLog } from "./redact.ts";
import { UNKNOWN_INVALID_REASON } from "./outcome_metrics.ts";

/** How many invalid keys a run logs one by one. */
const INVALID_KEYS_LOGGED = 100;

/** Logs `invalid_key` for each of the first named invalid keys, then `invalid_keys` at the end. */
export class InvalidKeyLog implements RunObserver {
  readonly #logger: Logger;
  #logged = 0;
  readonly #byReason = new Map<string, number>();

  constructor(options: { logger: Logger }) {
    this.#logger = options.logger;
  }

  /** Counts the batch's invalid keys and logs the first ones. */
  onBatch(batch: BatchReport): void {
    for (const result of batch.results) {
      if (result.outcome !== "skipped_invalid") continue;
      const reason = result.invalidReason ?? UNKNOWN_INVALID_REASON;
      this.#byReason.set(reason, (this.#byReason.get(reason) ?? 0) + 1);
      if (result.key === undefined || this.#logged >= INVALID_KEYS_LOGGED) continue;
      this.#logged++;
      this.#logger.log("warn", "invalid_key", `skipping invalid old key (${reason})`, {
        key: escapeForLog(result.key, 200),
        reason,
        node: batch.node,
      });
      if (this.#logged === INVALID_KEYS_LOGGED) {
        this.#logger.log(
          "warn",
          "invalid_key",
          `logged the first ${INVALID_KEYS_LOGGED} invalid keys; the rest are only counted`,
        );
      }
    }
  }

  /** One line with the run's invalid keys by reason (nothing when there were none). */
  onEnd(): void {
    const total = [...this.#byReason.values()].reduce((a, b) => a + b, 0);
    if (total === 0) return;
    const fields: Record<string, number> = { total };
    for (const [reason, count] of [...this.#byReason].sort()) fields[reason] = count;
    this.#logger.log("warn", "invalid_keys", `${total} invalid old keys skipped`, fields);
  }
}
