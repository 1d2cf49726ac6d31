/**
 * URL → connected client. Also the one place that redacts Redis URLs for logs and errors.
 *
 * @module
 */
import type { TlsOptions } from "../cli/args.ts";
import { RedisUnavailableError, UsageError } from "../errors.ts";
import { type Cluster, Redis, type RedisOptions } from "./ioredis.ts";

/** A connected Redis deployment: one standalone server, or a cluster (see issue 3). */
export interface RedisTarget {
  readonly kind: "standalone" | "cluster";
  /** Client for key reads and writes (routes by slot in a cluster). */
  readonly client: Redis | Cluster;
  /** One connection per master; the scanner runs over each. Standalone: the client itself. */
  masters(): Redis[];
  /** `host:port` of a node; never credentials. */
  nodeName(node: Redis): string;
  /** The seed URL(s), redacted. */
  readonly redacted: string;
  /** Closes every connection. */
  close(): Promise<void>;
}

/** Options for {@linkcode connectRedis}. */
export interface ConnectOptions {
  tls?: TlsOptions;
  /** Give up (exit 3) when no connection succeeds within this many ms. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** `redis://user:secret@host:6379/0` → `redis://user:***@host:6379/0`. Never throws. */
export function redactUrl(text: string): string {
  try {
    const url = new URL(text);
    if (url.password) url.password = "***";
    return url.toString();
  } catch {
    return "<unparseable url>";
  }
}

/** ioredis options for one URL (TLS files read here; a missing file is a usage error). */
export async function clientOptions(text: string, tls: TlsOptions = {}): Promise<RedisOptions> {
  const url = new URL(text);
  const db = url.pathname.length > 1 ? Number(url.pathname.slice(1)) : 0;
  if (!Number.isInteger(db) || db < 0) {
    throw new UsageError("--redis-url has an invalid database number");
  }
  const options: RedisOptions = {
    host: url.hostname.replace(/^\[|\]$/g, ""),
    port: url.port ? Number(url.port) : 6379,
    username: url.username ? decodeURIComponent(url.username) : undefined,
    password: url.password ? decodeURIComponent(url.password) : undefined,
    db,
    lazyConnect: true,
    // Fail commands fast while disconnected; the engine owns outage handling (wait, then resume
    // from the checkpoint), so queued retries inside the client would only hide the outage.
    maxRetriesPerRequest: 1,
    enableAutoPipelining: false,
    connectTimeout: 5_000,
    retryStrategy: (attempt) => Math.min(100 * 2 ** attempt, 2_000),
    // A failover leaves us talking to a replica: reconnect so DNS / the sentinel give the new primary.
    reconnectOnError: (error) => error.message.startsWith("READONLY") ? 2 : false,
  };
  if (url.protocol === "rediss:" || tls.ca || tls.cert) {
    options.tls = {
      ca: tls.ca ? await readTlsFile(tls.ca, "--tls-ca") : undefined,
      cert: tls.cert ? await readTlsFile(tls.cert, "--tls-cert") : undefined,
      key: tls.key ? await readTlsFile(tls.key, "--tls-key") : undefined,
      servername: tls.servername ?? options.host,
    };
  }
  return options;
}

async function readTlsFile(path: string, flag: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    throw new UsageError(`${flag} file cannot be read: ${(error as Error).name}`);
  }
}

/**
 * Connects to a standalone Redis, retrying until `timeoutMs` (default 10 s) passes.
 *
 * @throws {RedisUnavailableError} when no connection succeeds in time, or credentials are refused.
 */
export async function connectRedis(
  urls: string[],
  options: ConnectOptions = {},
): Promise<RedisTarget> {
  const seed = urls[0];
  if (seed === undefined) throw new UsageError("no Redis URL given");
  const redacted = urls.map(redactUrl).join(",");
  const clientOpts = await clientOptions(seed, options.tls);
  const client = new Redis(clientOpts);
  const name = `${clientOpts.host}:${clientOpts.port}`;
  // ioredis emits 'error' on every failed reconnect; without a listener it prints to stderr.
  client.on("error", () => {});
  await connectWithin(client, name, options.timeoutMs ?? 10_000, options.signal);
  return {
    kind: "standalone",
    client,
    masters: () => [client],
    nodeName: () => name,
    redacted,
    async close() {
      client.disconnect();
      await Promise.resolve();
    },
  };
}

/** Connects and PINGs, retrying with backoff until the deadline; never overruns it. */
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
    const message = outcome instanceof Error ? outcome.message : String(outcome);
    if (/WRONGPASS|NOAUTH|NOPERM|invalid password/i.test(message)) {
      client.disconnect();
      throw new RedisUnavailableError(
        `Redis at ${name} refused the credentials (${message.split(" ")[0]})`,
      );
    }
    lastError = message.split("\n")[0] ?? message;
    const pause = Math.min(100 * 2 ** attempt, 1_000, Math.max(deadline - Date.now(), 0));
    await new Promise((resolve) => setTimeout(resolve, pause));
  }
  client.disconnect();
  throw new RedisUnavailableError(
    `Redis at ${name} is unreachable after ${Math.round(timeoutMs / 1000)} s (${lastError})`,
  );
}

/** Resolves `undefined` when `work` succeeds in time, else the error (or a timeout error). */
async function withTimeout(work: Promise<void>, ms: number): Promise<unknown> {
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
