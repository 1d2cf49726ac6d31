/**
 * The `verify_progress` log line of `verify --full`: a node's running counts, at most once per
 * interval, as chunks are committed.
 *
 * @module
 */
import type { Logger } from "../../run_events.ts";
import type { NodeProgress } from "./checkpoint.ts";
import { mismatched } from "./summary.ts";

/** Logs a node's progress at most once per `intervalMs`. */
export class ProgressLog {
  #last = performance.now();
  #sessionChecked = 0;

  constructor(readonly logger: Logger, readonly intervalMs: number) {}

  /** Notes `keys` more keys checked on `node` and logs its counts when the interval passed. */
  note(node: string, progress: NodeProgress, keys: number): void {
    this.#sessionChecked += keys;
    const now = performance.now();
    if (now - this.#last < this.intervalMs) return;
    this.#last = now;
    const c = progress.counts;
    this.logger.log(
      "info",
      "verify_progress",
      `${node} ${progress.phase}: ${c.checked} checked, ${c.matched} matched, ${c.orphans} orphans`,
      {
        node,
        phase: progress.phase,
        checked: c.checked,
        matched: c.matched,
        mismatched: mismatched(c),
        orphans: c.orphans,
        scanned_this_session: this.#sessionChecked,
      },
    );
  }
}
