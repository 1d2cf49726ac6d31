/**
 * Establishing a first connection within a deadline: retry what may pass (a server still starting,
 * a network blip), fail at once on what will not (refused credentials, an untrusted certificate).
 *
 * @module
 */
import { RedisUnavailableError } from "../errors.ts";
import type { Redis } from "./ioredis.ts";

const REFUSED_CREDENTIALS = /WRONGPASS|NOAUTH|NOPERM|invalid password|invalid username/i;
/** A certificate or handshake problem: retrying cannot fix it. */
const TLS_FAILURE =
  /certificate|altnames|fatal alert|UnknownIssuer|NotValidForName|CERT_|self[- ]signed|handshake/i;

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
        firstLine(error instanceof Error ? error.message : String(error))
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
    last = events.findLast((e) => isFatal(e.message)) ?? events.at(-1) ?? outcome;
    const message = firstLine(last instanceof Error ? last.message : String(last));
    if (REFUSED_CREDENTIALS.test(message)) {
      throw new RedisUnavailableError(
        `Redis at ${name} refused the credentials (${message.split(" ")[0]})`,
      );
    }
    if (TLS_FAILURE.test(message)) {
      throw new RedisUnavailableError(`TLS connection to Redis at ${name} failed: ${message}`);
    }
    const pause = Math.min(100 * 2 ** n, 1_000, Math.max(deadline - Date.now(), 0));
    await new Promise((resolve) => setTimeout(resolve, pause));
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

function isFatal(message: string): boolean {
  return REFUSED_CREDENTIALS.test(message) || TLS_FAILURE.test(message);
}

function firstLine(text: string): string {
  return (text.split("\n")[0] ?? text).slice(0, 200);
}
