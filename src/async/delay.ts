/**
 * The one sleep of the tool, so a stop signal (SIGINT, SIGTERM, a lost lock) cuts every wait
 * short, and a bound on how long to wait for a promise.
 *
 * @module
 */

/**
 * Resolves after `ms` milliseconds; rejects with `signal.reason` as soon as `signal` aborts (or at
 * once when it already has). The timer and the listener are removed either way.
 *
 * @example
 * ```ts
 * import { delay } from "./delay.ts";
 * await delay(1);
 * ```
 */
export function delay(ms: number, options: { signal?: AbortSignal } = {}): Promise<void> {
  const { signal } = options;
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, Math.max(ms, 0));
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Like {@linkcode delay}, but resolves `false` instead of rejecting when `signal` aborts: for loops
 * that stop quietly (`if (!await pause(ms, { signal })) return`).
 */
export async function pause(ms: number, options: { signal?: AbortSignal } = {}): Promise<boolean> {
  try {
    await delay(ms, options);
    return true;
  } catch (error) {
    if (options.signal?.aborted) return false;
    throw error;
  }
}

/** Resolves `undefined` when `work` succeeds in time, else the error (or a timeout error). */
export async function withTimeout(work: Promise<unknown>, ms: number): Promise<unknown> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<Error>((resolve) =>
    timer = setTimeout(() => resolve(new Error("timed out")), Math.max(ms, 0))
  );
  try {
    return await Promise.race([work.then(() => undefined, (error: unknown) => error), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
