/**
 * Typed values out of parsed flags, shared by the subcommands' converters. Each problem is a
 * one-line {@linkcode UsageError}.
 *
 * @module
 */
import type { TlsOptions } from "../redis/options.ts";
import { UsageError } from "../errors.ts";
import { isSentinelUrl, parseSentinelUrl } from "../redis/sentinel.ts";
import { RUN_DEFAULTS } from "../defaults.ts";

/** Flag values as `node:util` parseArgs returns them. */
export type Values = Record<string, string | boolean | string[] | undefined>;

/** The environment the parser reads (injected for tests). */
export interface ParseEnv {
  REDIS_URL?: string;
}

/** `--redis-url` (repeated or comma-separated) or `REDIS_URL`, validated without echoing it. */
export function redisUrlsFrom(values: Values, env: ParseEnv): string[] {
  // A Sentinel URL lists its sentinels with commas itself; other URLs may be comma-separated seeds.
  const fromFlags = (values["redis-url"] as string[] | undefined ?? [])
    .flatMap((url) => isSentinelUrl(url.trim()) ? [url] : url.split(","))
    .map((url) => url.trim())
    .filter((url) => url.length > 0);
  const redisUrls = fromFlags.length > 0
    ? fromFlags
    : [env.REDIS_URL?.trim() || RUN_DEFAULTS.redisUrl];
  for (const url of redisUrls) isSentinelUrl(url) ? parseSentinelUrl(url) : redisUrl(url);
  return redisUrls;
}

export function tlsFrom(values: Values): TlsOptions {
  return {
    ca: str(values, "tls-ca"),
    cert: str(values, "tls-cert"),
    key: str(values, "tls-key"),
    servername: str(values, "tls-servername"),
  };
}

export function progressKeyFrom(values: Values): string {
  const progressKey = str(values, "progress-key") ?? RUN_DEFAULTS.progressKey;
  if (progressKey.length === 0 || /\s/.test(progressKey)) {
    throw new UsageError("--progress-key must be non-empty and contain no whitespace");
  }
  return progressKey;
}

export function str(values: Values, name: string): string | undefined {
  const value = values[name];
  return typeof value === "string" ? value : undefined;
}

/** A flag that is one of `choices`, or `fallback` when absent. */
export function choice<T extends string>(
  values: Values,
  name: string,
  choices: readonly T[],
  fallback: T,
): T {
  const text = str(values, name) ?? fallback;
  if (!(choices as readonly string[]).includes(text)) {
    throw new UsageError(`--${name} must be ${choices.join(" or ")}, got '${text.slice(0, 20)}'`);
  }
  return text as T;
}

/** A number flag in `[min, max]` (no `max`: unbounded), or `fallback` when absent. */
type NumberFlag = (
  values: Values,
  name: string,
  fallback: number,
  min: number,
  max?: number,
) => number;

/** A {@linkcode NumberFlag} of the numbers `pattern` matches, called `what` in its error. */
function numberFlag(what: string, pattern: RegExp, unbounded: number): NumberFlag {
  return (values, name, fallback, min, max = unbounded) => {
    const text = str(values, name);
    if (text === undefined) return fallback;
    const value = Number(text);
    if (!pattern.test(text) || value < min || value > max) {
      const range = max === unbounded ? `>= ${min}` : `from ${min} to ${max}`;
      throw new UsageError(`--${name} must be ${what} ${range}, got '${text.slice(0, 40)}'`);
    }
    return value;
  };
}

export const integer: NumberFlag = numberFlag("an integer", /^\d+$/, 2 ** 53 - 1);
export const decimal: NumberFlag = numberFlag("a number", /^\d+(\.\d+)?$/, Infinity);

/** Validates a Redis URL without ever echoing it (it may hold a password). */
function redisUrl(text: string): void {
  const url = urlOf(text, "--redis-url / REDIS_URL");
  if (!["redis:", "rediss:", "redis+sentinel:", "rediss+sentinel:"].includes(url.protocol)) {
    throw new UsageError(
      "--redis-url / REDIS_URL must start with redis://, rediss://, redis+sentinel:// or rediss+sentinel://",
    );
  }
  if (url.hostname === "") throw new UsageError("--redis-url / REDIS_URL has no host");
}

/** Validates an http(s) URL flag. */
export function httpUrl(text: string, flag: string): void {
  const url = urlOf(text, flag);
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UsageError(`${flag} must be an http:// or https:// URL`);
  }
}

/** `text` as a URL; the error names the flag, never the URL. */
function urlOf(text: string, flag: string): URL {
  try {
    return new URL(text);
  } catch {
    throw new UsageError(`${flag} is not a valid URL`);
  }
}
