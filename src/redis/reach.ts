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
  /certificate|UnknownIssuer|NotValidForName|CERT_|self[- ]signed|handshake|InvalidCertificate|tls/i;

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
  const deadline = Date.now() + timeoutMs;
  let lastError = "no answer";
  for (let attempt = 0; Date.now() < deadline; attempt++) {
    signal?.throwIfAborted();
    const outcome = await withTimeout(
      (async () => {
        if (client.status === "wait" || client.status === "end") await client.connect();
        await client.ping();
      })(),
      Math.min(deadline - Date.now(), 3_000),
    );
    if (outcome === undefined) return;
    const message = firstLine(outcome instanceof Error ? outcome.message : String(outcome));
    if (REFUSED_CREDENTIALS.test(message)) {
      client.disconnect();
      throw new RedisUnavailableError(
        `Redis at ${name} refused the credentials (${message.split(" ")[0]})`,
      );
    }
    if (TLS_FAILURE.test(message)) {
      client.disconnect();
      throw new RedisUnavailableError(`TLS connection to Redis at ${name} failed: ${message}`);
    }
    lastError = message;
    const pause = Math.min(100 * 2 ** attempt, 1_000, Math.max(deadline - Date.now(), 0));
    await new Promise((resolve) => setTimeout(resolve, pause));
  }
  client.disconnect();
  throw new RedisUnavailableError(
    `Redis at ${name} is unreachable after ${Math.round(timeoutMs / 1000)} s (${lastError})`,
  );
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

function firstLine(text: string): string {
  return (text.split("\n")[0] ?? text).slice(0, 200);
}
