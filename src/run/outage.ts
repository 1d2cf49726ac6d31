/**
 * A lost node: wait for it (up to --max-outage since the outage began), then go on from the
 * checkpoint, or from cursor 0 when the node came back as another server process (a restart or a
 * failover gives a new `run_id`, and a SCAN cursor means nothing to another process).
 *
 * @module
 */
import { backoffMs, RECONNECT } from "../async/backoff.ts";
import { delay } from "../async/delay.ts";
import { RedisUnavailableError } from "../errors.ts";
import { serverRunId, waitForRedis } from "../redis/availability.ts";
import { classify } from "../redis/errors.ts";
import type { RedisTarget } from "../redis/target.ts";
import type { Logger, RunObserver } from "../run_events.ts";
import type { NodeState } from "./checkpointer.ts";

/** How a lost Redis is waited for. */
export interface OutageOptions {
  target: Pick<RedisTarget, "masters" | "nodeName" | "lostSince"> & { redacted?: string };
  logger: Logger;
  /** Seconds an outage may last (`--max-outage`). */
  maxOutage: number;
  signal?: AbortSignal;
}

/**
 * Runs one start-up step through outages, as the main loop does per node: an outage (`classify`)
 * is waited for with backoff and the step runs again, up to --max-outage since the outage began. A
 * stop signal ends the step, or the wait, at once: `readOnly` steps even while their commands are
 * pending (a step that writes, like taking the lock, is awaited, so nothing it did is left behind).
 *
 * @throws {RedisUnavailableError} when the outage outlasts --max-outage.
 * @throws `signal.reason` when a stop signal ended it (main.ts maps a signal to its exit code).
 */
export async function throughOutages<T>(
  step: () => Promise<T>,
  options: OutageOptions & { what: string; readOnly?: boolean },
): Promise<T> {
  const { signal, target, logger, maxOutage } = options;
  let since: number | undefined;
  for (let attempt = 0;; attempt++) {
    signal?.throwIfAborted();
    try {
      return await (options.readOnly ? untilSignal(step(), signal) : step());
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      const { outage, code } = classify(error);
      if (!outage) throw error;
      const now = performance.now();
      const masters = target.masters();
      const lost = masters.find((node) => target.lostSince?.(node) !== undefined);
      since ??= Math.min(now, lost ? target.lostSince!(lost)! : now);
      const named = lost ?? (masters.length === 1 ? masters[0] : undefined);
      const where = named ? target.nodeName(named) : target.redacted ?? "its masters";
      if (attempt === 0) {
        logger.log(
          "warn",
          "redis_lost",
          `lost Redis at ${where} (${code}) while ${options.what}; waiting up to ${maxOutage} s`,
          { node: where, code },
        );
      }
      if (now - since >= maxOutage * 1000) {
        throw new RedisUnavailableError(
          `lost Redis at ${where} (${code}) while ${options.what}, for longer than ` +
            `--max-outage; the run stopped before its first batch`,
          { cause: error },
        );
      }
      await delay(backoffMs(attempt, RECONNECT), { signal });
    }
  }
}

/** `work`, or `signal.reason` as soon as the signal aborts (`work` is left to settle unseen). */
function untilSignal<T>(work: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (signal === undefined) return work;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/**
 * Waits for the node of `state` after `error`. False when a stop signal ended the wait; true when
 * the node is back, with `state.committed` (and `state.runId`) set to where the scan goes on.
 * `needsPrimary`: also wait until the node is a primary (a failover can leave us on a replica).
 *
 * @throws {RedisUnavailableError} when the outage outlasts --max-outage.
 */
export async function recoverNode(
  state: NodeState,
  error: unknown,
  options: OutageOptions & {
    needsPrimary: boolean;
    observer?: Pick<RunObserver, "onRedisDown" | "onRedisReply">;
  },
): Promise<boolean> {
  const { target, logger, maxOutage } = options;
  // The outage began when the node's connections first lost it (a frozen node: when it went
  // silent): waits before this one (a cluster call's own retries) count against the same bound.
  const now = performance.now();
  state.outageSince = Math.min(state.outageSince ?? now, target.lostSince?.(state.node) ?? now);
  const deadline = state.outageSince + maxOutage * 1000;
  const { code } = classify(error);
  // Named now, not at the start: after a failover the node is another host.
  const where = target.nodeName(state.node);
  const message = `lost Redis at ${where} (${code}); waiting up to ${maxOutage} s`;
  logger.log("warn", "redis_lost", message, { node: where, code });
  options.observer?.onRedisDown?.({ node: where, reason: code });
  let runId: string | undefined;
  while (runId === undefined) {
    const back = await waitForRedis(state.node, {
      name: where,
      deadline,
      cursor: state.committed,
      needsPrimary: options.needsPrimary,
      signal: options.signal,
    });
    if (!back) return false;
    if (performance.now() >= deadline) {
      throw new RedisUnavailableError(
        `Redis at ${where} kept failing (${code}) for longer than --max-outage; ` +
          `the checkpoint is kept at cursor=${state.committed}`,
        { cause: error },
      );
    }
    // Lost again between its PING and this read: wait again, within the same bound.
    runId = await serverRunId(state.node).catch((again) => {
      if (!classify(again).outage) throw again;
      return undefined;
    });
  }
  const serving = target.nodeName(state.node);
  options.observer?.onRedisReply?.({ node: serving });
  if (runId === state.runId) {
    const message = `Redis at ${serving} is back; resuming from cursor=${state.committed}`;
    logger.log("info", "redis_back", message, { node: serving });
    return true;
  }
  const restarted = `Redis at ${serving} restarted or failed over (new run_id): its SCAN cursor ` +
    `is meaningless, rescanning from cursor 0`;
  logger.log("warn", "redis_restarted", restarted, { node: serving });
  state.runId = runId;
  state.committed = "0";
  state.within = undefined;
  return true;
}
