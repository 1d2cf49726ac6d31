/**
 * Sends one batch: sub-batches through the gate (rate limit, admission checks), each a script call
 * with its retries, in key order, as many in flight as the node's call window allows. Returns once
 * every sub-batch is sent, so the engine can send the next batch while this one's replies are
 * still coming.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import type { CallWindow } from "../control/call_window.ts";
import type { Gate } from "../control/gate.ts";
import type { MigrationStrategy, StrategyResult } from "../migrate/strategy.ts";
import { nameInvalidKeys } from "../outcome.ts";
import type { RunObserver } from "../run_events.ts";
import type { BatchSteps, SentBatch } from "./pipeline.ts";
import type { KeyRetry } from "./retry.ts";
import type { UncountedCopies } from "./uncounted_copies.ts";

/** Largest sub-batch: a guard only; the strategy sizes calls by Redis time (`--max-call-ms`). */
export const MAX_SUB_BATCH = 100;

/**
 * Keys of the next script call for `node`: about a tenth of a second's worth of its rate now, no
 * more than the strategy's time budget fits (`--max-call-ms`), the batch, and the guard.
 */
export function callSize(
  node: string,
  options: {
    gate: Pick<Gate, "rps"> & Partial<Pick<Gate, "rateFor">>;
    strategy: Pick<MigrationStrategy, "nextCallSize">;
    batch: number;
  },
): number {
  const rps = options.gate.rateFor?.(node) ?? options.gate.rps;
  const wanted = rps > 0 ? Math.ceil(rps / 10) : MAX_SUB_BATCH;
  const fits = options.strategy.nextCallSize?.() ?? MAX_SUB_BATCH;
  return Math.max(1, Math.min(wanted, fits, options.batch, MAX_SUB_BATCH));
}

/** Options of {@linkcode sendBatch}. */
export interface SendOptions {
  gate: Pick<Gate, "admit">;
  retry: Pick<KeyRetry, "migrate">;
  /** Keys of the next script call to `node` (its rate now, the Redis-time budget). */
  subBatchSize: (node: string) => number;
  /** `host:port`, for logs. */
  node: string;
  /** The node's calls in flight: a call is sent only when there is room (control/call_window.ts). */
  window?: Pick<CallWindow, "acquire">;
  /** The in-script checkpoint's steps of this batch (one per call). */
  steps?: BatchSteps;
  observer?: Pick<RunObserver, "onLimiterWait" | "onRedisReply">;
  /** A stop: no further sub-batch is sent; the ones sent finish. */
  signal?: AbortSignal;
  /** An earlier batch of this node failed: stop sending (its failure ends the scan anyway). */
  abandon?: AbortSignal;
  /** Where the copies of the calls that replied go when the batch fails (the re-read counts them). */
  uncounted?: Pick<UncountedCopies, "remember">;
}

/**
 * Sends `keys` in sub-batches; resolves when the last one is sent, or when one already sent has
 * failed (its outage or refusal ends the batch: waiting to send more, e.g. in a memory pause that
 * the failure itself reports, would only hide it).
 */
export async function sendBatch(keys: Buffer[], options: SendOptions): Promise<SentBatch> {
  const { gate, observer, signal, node } = options;
  const inFlight: Promise<StrategyResult[]>[] = [];
  const chunks: Buffer[][] = [];
  const failed = new AbortController();
  const waiting = AbortSignal.any(
    [signal, options.abandon, failed.signal].filter((s): s is AbortSignal => s !== undefined),
  );
  let complete = true;
  for (let i = 0; i < keys.length && !failed.signal.aborted;) {
    const chunk = keys.slice(i, i + options.subBatchSize(node));
    i += chunk.length;
    let release = () => {};
    try {
      const waited = await gate.admit(chunk.length, { signal: waiting, node });
      if (waited > 0) observer?.onLimiterWait?.(waited);
      if (options.window) release = await options.window.acquire({ signal: waiting });
    } catch (error) {
      if (!waiting.aborted) throw error;
      complete = false;
      break;
    }
    const last = i >= keys.length;
    const work = options.retry.migrate(chunk, options.node, options.steps?.step(last))
      .then((results) => {
        // The node answered: /healthz and relay_backfill_redis_up notice a frozen Redis by this.
        observer?.onRedisReply?.({ node: options.node });
        return nameInvalidKeys(chunk, results);
      });
    work.then(release, () => {
      release();
      failed.abort();
    });
    inFlight.push(work);
    chunks.push(chunk);
  }
  const results = Promise.allSettled(inFlight).then((settled) => {
    const failure = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
    if (failure) {
      // The batch will be read again; what its answered calls copied is this run's work.
      settled.forEach((s, i) => {
        if (s.status === "fulfilled") options.uncounted?.remember(chunks[i]!, s.value);
      });
      throw failure.reason;
    }
    return settled.flatMap((s) => (s as PromiseFulfilledResult<StrategyResult[]>).value);
  });
  results.catch(() => {});
  return { results, complete };
}
