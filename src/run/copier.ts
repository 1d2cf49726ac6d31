/**
 * The copier: one batch's keys to Redis and back, in sub-batches (one script call each), each
 * admitted by the {@linkcode Gate} and the node's call window, with the retries of
 * {@linkcode KeyRetry}.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import { backoffMs } from "../async/backoff.ts";
import { pause } from "../async/delay.ts";
import { MAX_CALL_KEYS } from "../control/call_size.ts";
import type { CallWindow } from "../control/call_window.ts";
import type { Throttle } from "../control/throttle.ts";
import type { AdmissionCheck, AdmitOptions, SlidingWindowLimiter } from "../control/rate_limit.ts";
import { BackfillError, SafetyRefusal } from "../errors.ts";
import type { MigrateOptions, MigrationStrategy, StrategyResult } from "../migrate/strategy.ts";
import { nameInvalidKeys } from "../outcome.ts";
import { classify, errorLine, isOutage, KeyReplyError } from "../redis/errors.ts";
import type { Logger, RunObserver } from "../run_events.ts";
import type { KeySchema } from "../schema.ts";
import { escapeForLog } from "../telemetry/redact.ts";
import type { UncountedCopies } from "../migrate/uncounted_copies.ts";

/**
 * The one door work passes before it goes to Redis: the admission check (the throttle: health,
 * memory, a live pause), then the master's own limiter (the throttle's rate) and the run-wide one.
 */
export class Gate {
  readonly #limiter: SlidingWindowLimiter;
  readonly #throttle: AdmissionCheck & Pick<Throttle, "limiterFor" | "setCap">;

  /** `limiter`: the run-wide one; the throttle checks and holds each master's own. */
  constructor(
    limiter: SlidingWindowLimiter,
    throttle: AdmissionCheck & Pick<Throttle, "limiterFor" | "setCap">,
  ) {
    this.#limiter = limiter;
    this.#throttle = throttle;
  }

  /** The run-wide rate limit now (jobs per second; 0 = unlimited). */
  get rps(): number {
    return this.#limiter.rps;
  }

  /** The rate that applies to `node`: the lower of its own and the run-wide one (0 = unlimited). */
  rateFor(node: string): number {
    const own = this.#throttle.limiterFor(node)?.rps ?? 0;
    const all = this.#limiter.rps;
    if (own === 0 || all === 0) return Math.max(own, all);
    return Math.min(own, all);
  }

  /**
   * Waits for the check, then for `n` permits of the node's limiter and the run-wide one.
   *
   * @returns the seconds spent waiting for the limiters.
   * @throws `signal.reason` when the signal aborts.
   */
  async admit(n: number, options: AdmitOptions = {}): Promise<number> {
    const { signal, node } = options;
    signal?.throwIfAborted();
    await this.#throttle.wait({ signal, node });
    const own = node === undefined ? undefined : this.#throttle.limiterFor(node);
    let waited = 0;
    for (const limiter of own ? [own, this.#limiter] : [this.#limiter]) {
      waited += await limiter.acquire(n, signal);
    }
    return waited;
  }

  /** `backfill set-rps N` (0 = no cap): the run-wide limit, and the throttle's cap. */
  setCap(rps: number): void {
    this.#limiter.setRps(rps);
    this.#throttle.setCap(rps);
  }

  /** Waits on the check with a fresh reading (after Redis refused a write for lack of memory). */
  async settle(options: AdmitOptions = {}): Promise<void> {
    await this.#throttle.wait({ signal: options.signal, fresh: true });
  }
}

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
  const wanted = rps > 0 ? Math.ceil(rps / 10) : MAX_CALL_KEYS;
  const fits = options.strategy.nextCallSize?.() ?? MAX_CALL_KEYS;
  return Math.max(1, Math.min(wanted, fits, options.batch, MAX_CALL_KEYS));
}

export interface SentBatch {
  /** Every key's result, in key order, after the retries; rejects with a call's outage. */
  results: Promise<StrategyResult[]>;
  /** False when a stop signal kept part of the batch from being sent. */
  complete: boolean;
}

export interface SendOptions {
  gate: Pick<Gate, "admit">;
  retry: Pick<KeyRetry, "migrate">;
  subBatchSize: (node: string) => number;
  /** `host:port`, for logs. */
  node: string;
  /** A call is sent only when the node's window has room (control/call_window.ts). */
  window?: Pick<CallWindow, "acquire">;
  observer?: Pick<RunObserver, "onLimiterWait" | "onRedisReply">;
  /** A stop: no further sub-batch is sent; the ones sent finish. */
  signal?: AbortSignal;
  /** An earlier batch of this node failed: stop sending (its failure ends the scan anyway). */
  abandon?: AbortSignal;
  /** Where the copies of the calls that replied go when the batch fails (the re-read counts them). */
  uncounted?: Pick<UncountedCopies, "remember">;
}

/**
 * Sends `keys` in sub-batches; resolves once every one is sent (so the engine can send the next
 * batch while replies come), or once one has failed: waiting to send more, e.g. in a memory pause
 * that the failure itself reports, would only hide it.
 */
export async function sendBatch(keys: Buffer[], options: SendOptions): Promise<SentBatch> {
  const { gate, observer, signal, node, window } = options;
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
      if (window) release = await window.acquire({ signal: waiting });
    } catch (error) {
      if (!waiting.aborted) throw error;
      complete = false;
      break;
    }
    const work = options.retry.migrate(chunk, node).then((results) => {
      // The node answered: /healthz and relay_backfill_redis_up notice a frozen Redis by this.
      observer?.onRedisReply?.({ node });
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

/** Pause before the one retry of a sub-batch's failed keys. */
const RETRY_DELAY_MS = 50;
/** Backoff while Redis refuses writes (OOM): 250 ms, doubling, at most 5 s. */
const OOM_BACKOFF = { firstMs: 250, maxMs: 5_000 };

interface KeyRetryOptions {
  strategy: Pick<MigrationStrategy, "migrate">;
  /** What every strategy call is told (mode, workspace filter, stop signal). */
  migrate: MigrateOptions;
  /** Consulted fresh before each OOM retry: the memory pause holds the run while Redis is full. */
  gate: Pick<Gate, "settle">;
  logger: Logger;
  keys: Pick<KeySchema, "idOf">;
  /** How long Redis may refuse writes before the run stops (exit 4), in ms. */
  maxOutageMs: number;
  /** Where a failed retry leaves what the earlier attempts copied (the re-read counts them). */
  uncounted?: Pick<UncountedCopies, "remember">;
}

/** Keys still refused for lack of memory after a retry. */
class StillRefused extends Error {
  constructor(keys: number) {
    super(`${keys} keys still refused for lack of memory`);
    this.name = "StillRefused";
  }
}

/**
 * Migrates sub-batches with their retries: one retry of what failed for a passing reason (a changed
 * workspace id, a lost reply, a moved slot); keys Redis refused for lack of memory are no errors but
 * a reason to back off, retried behind the gate's fresh checks until Redis accepts them or
 * `--max-outage` passes.
 */
export class KeyRetry {
  readonly #options: KeyRetryOptions;

  constructor(options: KeyRetryOptions) {
    this.#options = options;
  }

  /**
   * One sub-batch; each key still failing is logged by job id and error code (never a value).
   *
   * @throws an outage error as is (the engine waits for Redis and re-reads the batch).
   */
  async migrate(keys: Buffer[], node: string): Promise<StrategyResult[]> {
    const results = await this.#attempt(keys);
    try {
      const once = failing(results).filter((i) => results[i]!.errorCode !== "OOM");
      if (once.length > 0) {
        // A stop sends nothing more (it may come just before the locks are released): the
        // sub-batch fails, so its batch is not saved past and is read again by the next run.
        const { signal } = this.#options.migrate;
        if (!await pause(RETRY_DELAY_MS, { signal })) throw signal?.reason;
        await this.#redo(keys, results, once);
      }
      if (failing(results, "OOM").length > 0) {
        await this.untilWritable(node, async () => {
          await this.#redo(keys, results, failing(results, "OOM"));
          const left = failing(results, "OOM").length;
          if (left > 0) throw new StillRefused(left);
        }, { backOffFirst: true });
      }
    } catch (error) {
      this.#options.uncounted?.remember(keys, results);
      throw error;
    }
    this.#logErrors(keys, results, node);
    return results;
  }

  /**
   * Runs `write` until Redis stops refusing it for lack of memory, the gate's checks fresh and the
   * wait doubling between tries.
   *
   * @throws {SafetyRefusal} when Redis refuses writes for longer than `maxOutageMs`: the run stops
   * with the checkpoint kept instead of pressing a full Redis.
   */
  async untilWritable<T>(
    node: string,
    write: () => Promise<T>,
    options: { backOffFirst?: boolean } = {},
  ): Promise<T> {
    const { gate, logger, migrate: { signal } } = this.#options;
    const backOffFirst = options.backOffFirst ?? false;
    const deadline = performance.now() + this.#options.maxOutageMs;
    for (let round = 0;; round++) {
      if (round > 0 || backOffFirst) {
        if (round === (backOffFirst ? 0 : 1)) {
          const message =
            `Redis at ${node} refused writes (OOM): backing off until it accepts them again`;
          logger.log("warn", "redis_oom", message, { node });
        }
        if (performance.now() >= deadline) {
          throw new SafetyRefusal(
            `Redis at ${node} kept refusing writes (OOM) for longer than --max-outage; ` +
              `stopped with the checkpoint kept`,
          );
        }
        // The memory pause may hold as long as Redis stays full: not past the deadline.
        if (!await settledBefore(gate, deadline, signal)) continue;
        await pause(backoffMs(round, OOM_BACKOFF), { signal });
      }
      try {
        return await write();
      } catch (error) {
        const refused = error instanceof StillRefused || classify(error).kind === "oom";
        if (!refused || signal?.aborted) throw error;
      }
    }
  }

  /** One strategy call; a failed command makes every key a retryable error, an outage throws. */
  async #attempt(keys: Buffer[]): Promise<StrategyResult[]> {
    let results: StrategyResult[];
    try {
      results = await this.#options.strategy.migrate(keys, this.#options.migrate);
    } catch (error) {
      const { outage, code } = classify(error);
      // A refusal (this runner's lock is lost) ends the run; it is no key's error.
      if (outage || error instanceof BackfillError) throw error;
      const errorMessage = errorLine(error);
      return keys.map(() => ({
        outcome: "errors",
        errorCode: code,
        errorMessage,
        retryable: true,
      }));
    }
    // A key refused because the node is a replica now (READONLY) or busy is the node's outage:
    // the engine waits for it and re-reads the batch, so the checkpoint never passes such keys.
    for (const r of results) {
      if (r.outcome !== "errors") continue;
      const refusal = new KeyReplyError(r.errorCode ?? "");
      if (isOutage(refusal)) throw refusal;
    }
    return results;
  }

  async #redo(keys: Buffer[], results: StrategyResult[], indices: number[]): Promise<void> {
    const again = await this.#attempt(indices.map((i) => keys[i]!));
    indices.forEach((index, j) => results[index] = again[j]!);
  }

  #logErrors(keys: Buffer[], results: StrategyResult[], node: string): void {
    results.forEach((result, i) => {
      if (result.outcome !== "errors") return;
      const code = result.errorCode ?? "error";
      const job = escapeForLog(this.#options.keys.idOf(keys[i]!) ?? keys[i]!);
      // Redis's own words (escaped, one line): "ERR" alone does not say what to fix.
      const said = escapeForLog(result.errorMessage || code, 200);
      this.#options.logger.log("error", "key_error", `job ${job} failed after retrying: ${said}`, {
        node,
        code,
        ...(result.workspace === undefined ? {} : { workspace: result.workspace }),
      });
    });
  }
}

/** Indices of retryable errors (of one error code, when given). */
function failing(results: StrategyResult[], code?: string): number[] {
  return results.flatMap((r, i) =>
    r.outcome === "errors" && r.retryable && (code === undefined || r.errorCode === code) ? [i] : []
  );
}

/** Waits for the gate's checks (the memory pause) until `deadline`; false when it still held. */
async function settledBefore(
  gate: Pick<Gate, "settle">,
  deadline: number,
  signal?: AbortSignal,
): Promise<boolean> {
  const timeout = new AbortController();
  const timer = setTimeout(() => timeout.abort(), Math.max(0, deadline - performance.now()));
  try {
    await gate.settle({
      signal: signal ? AbortSignal.any([signal, timeout.signal]) : timeout.signal,
    });
    return true;
  } catch (error) {
    if (signal?.aborted || !timeout.signal.aborted) throw error;
    return false;
  } finally {
    clearTimeout(timer);
  }
}
