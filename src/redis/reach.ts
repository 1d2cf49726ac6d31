/**
 * Establishing a first connection within a deadline: retry what may pass (a server still starting,
 * a network blip), fail at once on what will not (refused credentials, an untrusted certificate).
 *
 * @module
 */
import { delay } from "../async/delay.ts";
import { backoffMs } from "../async/backoff.ts";
import { RedisUnavailableError } from "../errors.ts";
import { classify, errorLine } from "./errors.ts";
import type { Redis } from "./ioredis.ts";

/**
 * Redis refused us for a reason another try (or another seed) cannot fix: the credentials, or the
 * TLS certificate. Exit 3, like any unreachable Redis.
 */
export class ConnectionRefusedError extends RedisUnavailableError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ConnectionRefusedError";
  }
}

/**
 * Connects `client` and PINGs, retrying with backoff until the deadline; never overruns it.
 *
 * @throws {RedisUnavailableError} when the deadline passes, the credentials are refused, or the
 * TLS handshake fails (the message names `name`, i.e. `host:port`, never a password).
 */
export async function connectWithin(
  client: Redis,
  name: string,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<void> {
  // A failed TLS handshake or refused connection reaches us only as an 'error' event; the
  // command itself just sees a closed stream. Keep the event's message for the diagnosis.
  const events: Error[] = [];
  const onError = (error: Error) => events.push(error);
  client.on("error", onError);
  try {
    await attempt(client, name, Date.now() + timeoutMs, events, signal);
  } catch (error) {
    client.disconnect();
    if (error instanceof RedisUnavailableError || signal?.aborted) throw error;
    throw new RedisUnavailableError(
      `Redis at ${name} is unreachable after ${Math.round(timeoutMs / 1000)} s (${
        errorLine(error)
      })`,
    );
  } finally {
    client.off("error", onError);
  }
}

/** Tries until `deadline`; throws the last failure's error (or a RedisUnavailableError at once). */
async function attempt(
  client: Redis,
  name: string,
  deadline: number,
  events: Error[],
  signal?: AbortSignal,
): Promise<void> {
  let last: unknown = new Error("no answer");
  for (let n = 0; Date.now() < deadline; n++) {
    signal?.throwIfAborted();
    const outcome = await withTimeout(
      (async () => {
        if (client.status === "wait" || client.status === "end") await client.connect();
        await client.ping();
      })(),
      Math.min(deadline - Date.now(), 3_000),
    );
    if (outcome === undefined) return;
    // An event says more than "Stream isn't writeable" or "max retries" while ioredis reconnects;
    // a certificate or credentials problem says the most, even when later events followed it.
    last = events.findLast(isFatal) ?? events.at(-1) ?? outcome;
    const message = errorLine(last);
    const { kind } = classify(last);
    if (kind === "credentials") {
      throw new ConnectionRefusedError(
        `Redis at ${name} refused the credentials (${message.split(" ")[0]})`,
        { cause: last },
      );
    }
    if (kind === "tls") {
      throw new ConnectionRefusedError(`TLS connection to Redis at ${name} failed: ${message}`, {
        cause: last,
      });
    }
    const wait = Math.min(
      backoffMs(n, { firstMs: 100, maxMs: 1_000 }),
      Math.max(deadline - Date.now(), 0),
    );
    await delay(wait, { signal });
  }
  throw last;
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

function isFatal(error: Error): boolean {
  const { kind } = classify(error);
  return kind === "credentials" || kind === "tls";
}
