/**
 * Redis URL → ioredis connection options, and the settings every client shares.
 *
 * @module
 */
import { isIP } from "node:net";
import { UsageError } from "../errors.ts";
import { backoffMs, RECONNECT } from "../async/backoff.ts";
import { classify } from "./errors.ts";
import type { RedisOptions } from "./ioredis.ts";

/** TLS material for `rediss://` connections (`--tls-ca`, `--tls-cert`, `--tls-key`, `--tls-servername`). */
export interface TlsOptions {
  ca?: string;
  cert?: string;
  key?: string;
  servername?: string;
}

/** `host:port` for logs: never credentials. IPv6 hosts in brackets. */
export function nodeAddress(host: string | undefined, port: number | undefined): string {
  const h = host ?? "localhost";
  return `${h.includes(":") ? `[${h}]` : h}:${port ?? 6379}`;
}

/** The name of every connection the backfill opens (`CLIENT SETNAME`). */
export const CLIENT_NAME = "backfill";

/** Connection settings shared by every client we open. */
export const BASE_OPTIONS: RedisOptions = {
  lazyConnect: true,
  // Commands fail at once when the connection drops (the engine owns outages), and are never
  // re-sent or queued for whatever server answers next: a SCAN with an old cursor could reach a
  // restarted server and silently skip keys (fence.ts).
  maxRetriesPerRequest: 0,
  enableOfflineQueue: false,
  enableAutoPipelining: false,
  // The pace tells the backfill's connections from the application's in `CLIENT LIST`.
  connectionName: CLIENT_NAME,
  connectTimeout: 5_000,
  retryStrategy: (attempt) => backoffMs(attempt, RECONNECT),
  // A failover leaves us talking to a replica: reconnect so DNS / the sentinel give the new primary.
  reconnectOnError: (error) => classify(error).kind === "readonly" ? 2 : false,
};

/** ioredis options for one `redis://` or `rediss://` URL (TLS files read here; a missing file is a usage error). */
export async function clientOptions(text: string, tls: TlsOptions = {}): Promise<RedisOptions> {
  const url = new URL(text);
  const db = url.pathname.length > 1 ? Number(url.pathname.slice(1)) : 0;
  if (!Number.isInteger(db) || db < 0) {
    throw new UsageError("--redis-url has an invalid database number");
  }
  const options: RedisOptions = {
    ...BASE_OPTIONS,
    host: url.hostname.replace(/^\[|\]$/g, ""),
    port: url.port ? Number(url.port) : 6379,
    username: url.username ? decodeURIComponent(url.username) : undefined,
    password: url.password ? decodeURIComponent(url.password) : undefined,
    db,
  };
  const tlsOptions = await tlsConnectionOptions(url.protocol === "rediss:", tls, options.host);
  if (tlsOptions) options.tls = tlsOptions;
  return options;
}

/**
 * TLS settings for `rediss://` (or when a CA or client certificate is given), else `undefined`.
 * SNI (the name the certificate must match) is `--tls-servername`, else the host.
 */
export async function tlsConnectionOptions(
  secure: boolean,
  tls: TlsOptions,
  host: string | undefined,
): Promise<RedisOptions["tls"]> {
  if (!secure && !tls.ca && !tls.cert) return undefined;
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    throw new UsageError("--tls-cert and --tls-key must be given together");
  }
  return {
    ca: tls.ca ? await readTlsFile(tls.ca, "--tls-ca") : undefined,
    cert: tls.cert ? await readTlsFile(tls.cert, "--tls-cert") : undefined,
    key: tls.key ? await readTlsFile(tls.key, "--tls-key") : undefined,
    servername: tls.servername ?? sniFor(host),
  };
}

/** `host` as SNI: names only (node:tls refuses an IP); an IP host is verified against IP SANs. */
export function sniFor(host: string | undefined): string | undefined {
  return host === undefined || isIP(host) !== 0 ? undefined : host;
}

async function readTlsFile(path: string, flag: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    throw new UsageError(`${flag} file cannot be read: ${(error as Error).name}`);
  }
}
