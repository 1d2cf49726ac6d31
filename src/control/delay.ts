/**
 * The one abortable sleep of the control loops.
 *
 * @module
 */

/**
 * Resolves after `ms`, or rejects with `signal.reason` as soon as the signal aborts (the timer is
 * cleared either way, so Deno's leak sanitizers stay quiet).
 *
 * @example
 * ```ts
 * import { delay } from "./delay.ts";
 * await delay(10, { signal: AbortSignal.timeout(1000) });
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
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
