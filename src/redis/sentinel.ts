/**
 * Sentinel URLs: `redis+sentinel://[user:pass@]host:port[,host:port]/master[/db]` (and
 * `rediss+sentinel://` for TLS). Credentials in the URL are the data nodes'; sentinels with a
 * password of their own take `?sentinel_username=…&sentinel_password=…`.
 *
 * @module
 */
import { UsageError } from "../errors.ts";

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
