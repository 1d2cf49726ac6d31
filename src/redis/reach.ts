/**
 * Opening a connection: the set-up every connection gets before its first connect, and a first
 * connect within a deadline that retries what may pass (a server still starting, a network blip)
 * and fails at once on what will not (refused credentials, an untrusted certificate).
 *
 * @module
 */
import { delay } from "../async/delay.ts";
import { backoffMs } from "../async/backoff.ts";
import { RedisUnavailableError } from "../errors.ts";
import type { LossClock } from "./availability.ts";
import { classify, errorLine } from "./errors.ts";
import { fenceScanCursors } from "./fence.ts";
import { Redis, type RedisOptions } from "./ioredis.ts";

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
 * A connection the run scans over (a standalone server, a Sentinel primary, a cluster master),
 * set up before its first connect: a silent 'error' listener (without one, ioredis prints every
 * failed reconnect to stderr, unredacted), the SCAN fence (which must see the first `run_id`), the
 * stream guard, and the loss watch under `lossName` (default: `name`, its `host:port`).
 */
export function openConnection(
  options: RedisOptions,
  losses: LossClock,
  name: (client: Redis) => string,
  lossName: (client: Redis) => string = name,
): Redis {
  const client = new Redis(options);
  client.on("error", () => {});
  fenceScanCursors(client, () => name(client));
  guardStreamErrors(client);
  losses.watch(client, () => lossName(client));
  return client;
}

/**
 * ioredis listens for a socket's 'error' with `once`. Under Deno a TLS socket can emit a second
 * error after the first (a write EPIPE right after the server's fatal alert, e.g. when it demands
 * a client certificate); with no listener left, that error is uncaught and ends the process
 * instead of becoming an exit-3 "unreachable". This keeps a listener on every socket `client`
 * opens (install it before the first connect); ioredis still handles the first error.
 */
export function guardStreamErrors(client: Redis): void {
  const connector = (client as unknown as { connector?: Connector }).connector;
  if (!connector) return;
  const connect = connector.connect.bind(connector);
  connector.connect = async (...args: unknown[]) => {
    const stream = await connect(...args);
    stream.on("error", () => {});
    return stream;
  };
}

interface Connector {
  connect(...args: unknown[]): Promise<{ on(event: "error", fn: () => void): unknown }>;
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
  const deadline = Date.now() + timeoutMs;
  // A failed TLS handshake or refused connection reaches us only as an 'error' event; the
  // command itself just sees a closed stream. Keep the event's message for the diagnosis.
  const events: Error[] = [];
  const onError = (error: Error) => events.push(error);
  client.on("error", onError);
  try {
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
      // An event says more than "Stream isn't writeable" or "max retries" while ioredis
      // reconnects; a certificate or credentials problem says the most, even when others followed.
      last = events.findLast((event) => FATAL.has(classify(event).kind)) ?? events.at(-1) ??
        outcome;
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

/** Failures another try cannot fix. */
const FATAL: ReadonlySet<string> = new Set(["credentials", "tls"]);

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
