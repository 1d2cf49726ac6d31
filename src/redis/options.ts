/**
 * Redis URL → ioredis connection options, and the one place that redacts Redis URLs for logs and
 * errors. Used by every topology: a standalone server, each node of a cluster, Sentinel's master.
 *
 * @module
 */
import type { TlsOptions } from "../cli/args.ts";
import { UsageError } from "../errors.ts";
import type { RedisOptions } from "./ioredis.ts";

/**
 * `redis://user:secret@host:6379/0` → `redis://user:***@host:6379/0`. Also handles URLs that
 * `URL` cannot parse (a Sentinel URL listing several hosts) and `sentinel_password=` parameters.
 * Never throws and never returns the secret.
 */
export function redactUrl(text: string): string {
  let out: string;
  try {
    const url = new URL(text);
    if (url.password) url.password = "***";
    out = url.toString();
  } catch {
    // Not a URL `URL` understands (several hosts): blank the userinfo's password by pattern.
    out = text.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/?#]*):[^/?#]*@/i, "$1:***@");
    if (out === text && /@/.test(text.split(/[/?#]/, 3).join("/"))) {
      out = text.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#]*@/i, "$1***@");
    }
  }
  return out.replace(/([?&](?:sentinel_)?password=)[^&#]*/gi, "$1***");
}

/** `host:port` for logs: never credentials. IPv6 hosts in brackets. */
export function nodeAddress(host: string | undefined, port: number | undefined): string {
  const h = host ?? "localhost";
  return `${h.includes(":") ? `[${h}]` : h}:${port ?? 6379}`;
}

/** Connection settings shared by every client we open (timeouts, retries, error handling). */
export const BASE_OPTIONS: RedisOptions = {
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
 * TLS settings for `rediss://` (or when a CA or client certificate is given), or `undefined` for a
 * plain connection. SNI is `--tls-servername`, else the host we connect to.
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
    servername: tls.servername ?? host,
  };
}

async function readTlsFile(path: string, flag: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    throw new UsageError(`${flag} file cannot be read: ${(error as Error).name}`);
  }
}
