/**
 * Keeping secrets and hostile bytes out of logs and metrics. Telemetry output ends up in log
 * pipelines and dashboards that many people can read, so everything that leaves through it passes
 * through here first.
 *
 * @module
 */

// scheme://user:password@ or scheme://token@. The password part is greedy up to the last `@` before
// a `/` or whitespace, so an unencoded `@` inside a password is redacted too instead of leaking its tail.
const USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)([^\s/@:]*)(?::([^\s/]*))?@/gi;

/** `password=` and `sentinel_password=` URL parameters (a Sentinel URL's credentials). */
const PASSWORD_PARAM = /([?&](?:sentinel_)?password=)[^&#\s]*/gi;

/**
 * Replaces the password of every URL in `text` with `***` (`redis://user:secret@host` becomes
 * `redis://user:***@host`), also in URLs `URL` cannot parse (a Sentinel URL listing several hosts)
 * and in `password=` / `sentinel_password=` parameters. A user-info part without `:` is redacted
 * whole (`scheme://***@host`), because clients such as ioredis may read it as a password. The one
 * redactor: `--redis-url` as logged and anything else that leaves through telemetry.
 *
 * @example
 * ```ts
 * import { redactSecrets } from "./redact.ts";
 * redactSecrets("redis://app:hunter2@10.0.0.1:6379/0"); // "redis://app:***@10.0.0.1:6379/0"
 * ```
 */
export function redactSecrets(text: string): string {
  return text.replace(
    USERINFO,
    (_match, scheme: string, user: string, password: string | undefined) =>
      password === undefined ? `${scheme}***@` : `${scheme}${user}:***@`,
  ).replace(PASSWORD_PARAM, "$1***");
}

/**
 * Makes an untrusted value (an invalid workspace id, a raw key) safe to show in one log line:
 * printable ASCII passes, `\` and everything else becomes `\xNN` (bytes) or `\u{N}` (code points),
 * and the result is cut to at most `maxLength` characters (an escape is never split) with `...`
 * appended when something was cut.
 *
 * @example
 * ```ts
 * import { escapeForLog } from "./redact.ts";
 * escapeForLog("bad\nid"); // "bad\\x0aid"
 * ```
 */
export function escapeForLog(value: string | Uint8Array, maxLength = 64): string {
  if (!Number.isInteger(maxLength) || maxLength < 1) {
    throw new RangeError(`maxLength must be a positive integer, got ${maxLength}`);
  }
  const pieces: string[] = [];
  if (typeof value === "string") {
    for (const char of value) pieces.push(escapeCodePoint(char.codePointAt(0) ?? 0));
  } else {
    for (const byte of value) pieces.push(escapeByte(byte));
  }
  const whole = pieces.join("");
  if (whole.length <= maxLength) return whole;
  // Cut on piece boundaries so a half escape never looks like a different value; keep room for "...".
  let out = "";
  for (const piece of pieces) {
    if (out.length + piece.length > maxLength - 3) break;
    out += piece;
  }
  return `${out}...`;
}

function isPlain(code: number): boolean {
  return code >= 0x20 && code <= 0x7e && code !== 0x5c;
}

function escapeByte(byte: number): string {
  return isPlain(byte) ? String.fromCharCode(byte) : `\\x${byte.toString(16).padStart(2, "0")}`;
}

/** A code point as itself when printable ASCII (not `\`), else as `\xNN` or `\u{N}`. */
export function escapeCodePoint(code: number): string {
  if (isPlain(code)) return String.fromCodePoint(code);
  if (code <= 0xff) return `\\x${code.toString(16).padStart(2, "0")}`;
  return `\\u{${code.toString(16)}}`;
}
