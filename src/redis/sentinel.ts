/**
 * Redis Sentinel: `redis+sentinel://[user:pass@]host:port[,host:port]/master[/db]` (and
 * `rediss+sentinel://` for TLS). ioredis asks the sentinels for the primary after every reconnect,
 * so a failover moves the run to the new primary (a new `run_id`: a rescan from cursor 0).
 * Credentials in the URL are the data nodes'; sentinels with a password of their own take
 * `?sentinel_username=…&sentinel_password=…`.
 *
 * @module
 */
import { redactSecrets } from "../telemetry/redact.ts";
import { backoffMs, RECONNECT } from "../async/backoff.ts";
import { UsageError } from "../errors.ts";
import { BASE_OPTIONS, nodeAddress, tlsConnectionOptions } from "./options.ts";
import { connectWithin, openConnection } from "./reach.ts";
import { LossClock } from "./availability.ts";
import { oneClientTarget, type RedisTarget } from "./target.ts";
import type { Redis } from "./ioredis.ts";
import type { ConnectOptions } from "./connect.ts";

const SENTINEL_PORT = 26379;

/** A parsed Sentinel URL. */
export interface SentinelUrl {
  /** `rediss+sentinel://`: TLS to the sentinels and the data nodes. */
  tls: boolean;
  sentinels: { host: string; port: number }[];
  /** The monitored master's name. */
  master: string;
  db: number;
  username?: string;
  password?: string;
  sentinelUsername?: string;
  sentinelPassword?: string;
}

const SENTINEL_URL =
  /^(rediss?)\+sentinel:\/\/(?:([^@/?#]*)@)?([^/?#]+)\/([^/?#]+)(?:\/(\d+))?\/?(?:\?([^#]*))?$/i;

/** True for `redis+sentinel://` and `rediss+sentinel://` URLs. */
export function isSentinelUrl(text: string): boolean {
  return /^rediss?\+sentinel:\/\//i.test(text);
}

/**
 * Parses a Sentinel URL. Messages never echo the URL (it may hold a password).
 *
 * @throws {UsageError} when the URL has no master name, no host, or a bad port or database.
 */
export function parseSentinelUrl(text: string): SentinelUrl {
  const match = SENTINEL_URL.exec(text.trim());
  if (!match) {
    throw new UsageError(
      "a Sentinel URL is redis+sentinel://[user:pass@]host:port[,host:port]/mastername[/db]",
    );
  }
  const [, scheme, userinfo, hostList, master, dbText, query] = match;
  const sentinels = hostList!.split(",").map((part) => parseHostPort(part.trim()));
  const params = new URLSearchParams(query ?? "");
  const colon = userinfo?.indexOf(":") ?? -1;
  const decode = (value: string | undefined) =>
    value === undefined || value === "" ? undefined : decodeURIComponent(value);
  return {
    tls: scheme!.toLowerCase() === "rediss",
    sentinels,
    master: decodeURIComponent(master!),
    db: dbText === undefined ? 0 : Number(dbText),
    username: decode(colon >= 0 ? userinfo!.slice(0, colon) : userinfo),
    password: decode(colon >= 0 ? userinfo!.slice(colon + 1) : undefined),
    sentinelUsername: params.get("sentinel_username") ?? undefined,
    sentinelPassword: params.get("sentinel_password") ?? undefined,
  };
}

function parseHostPort(text: string): { host: string; port: number } {
  const match = /^(?:\[([0-9a-f:.]+)\]|([^:\[\]]+))(?::(\d{1,5}))?$/i.exec(text);
  const port = match?.[3] === undefined ? SENTINEL_PORT : Number(match[3]);
  if (!match || port < 1 || port > 65535) {
    throw new UsageError("a Sentinel URL lists hosts as host:port, separated by commas");
  }
  return { host: match[1] ?? match[2]!, port };
}

/** Merges several Sentinel URLs for the same master (repeated `--redis-url`) into one. */
export function mergeSentinelUrls(urls: string[]): SentinelUrl {
  const parsed = urls.map(parseSentinelUrl);
  const first = parsed[0];
  if (first === undefined) throw new UsageError("no Redis URL given");
  if (parsed.some((p) => p.master !== first.master || p.tls !== first.tls)) {
    throw new UsageError("all Sentinel URLs must name the same master and scheme");
  }
  return { ...first, sentinels: parsed.flatMap((p) => p.sentinels) };
}

/**
 * Connects to the master that the sentinels name, retrying until the deadline.
 *
 * @throws {RedisUnavailableError} when no sentinel names a reachable master in time.
 */
export async function connectSentinel(
  urls: string[],
  options: ConnectOptions & { timeoutMs: number },
): Promise<RedisTarget> {
  const url = mergeSentinelUrls(urls);
  const redacted = urls.map(redactSecrets).join(",");
  const tls = await tlsConnectionOptions(url.tls, options.tls ?? {}, undefined);
  const via = url.sentinels.map((s) => nodeAddress(s.host, s.port)).join(",");
  const label = `master '${url.master}' via sentinels ${via}`;
  // One connection, which follows the primary: its loss is the deployment's, whatever its address.
  const losses = new LossClock(options.silenceMs);
  const client = openConnection(
    {
      ...BASE_OPTIONS,
      socketTimeout: options.silenceMs,
      sentinels: url.sentinels,
      name: url.master,
      db: url.db,
      username: url.username,
      password: url.password,
      sentinelUsername: url.sentinelUsername,
      sentinelPassword: url.sentinelPassword,
      // Keep asking the sentinels while none answers; connectWithin owns the deadline.
      sentinelRetryStrategy: (attempt) => backoffMs(attempt, RECONNECT),
      ...(tls ? { tls, enableTLSForSentinelMode: true, sentinelTLS: tls } : {}),
    },
    losses,
    (client) => currentAddress(client) ?? label,
    () => label,
  );
  await connectWithin(client, label, options.timeoutMs, options.signal);
  return oneClientTarget("sentinel", client, {
    redacted,
    nodeName: () => currentAddress(client) ?? label,
    lossLabel: label,
    losses,
  });
}

/** `host:port` of the server `client` is connected to right now (the current primary). */
function currentAddress(client: Redis): string | undefined {
  const stream = (client as unknown as { stream?: { remoteAddress?: string; remotePort?: number } })
    .stream;
  if (!stream?.remoteAddress) return undefined;
  return nodeAddress(stream.remoteAddress.replace(/^::ffff:/, ""), stream.remotePort);
}
