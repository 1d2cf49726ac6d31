/**
 * Keeping secrets and hostile bytes out of logs and metrics: everything that leaves through
 * telemetry (read by many people) passes through here first.
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
 * whole (`scheme://***@host`), because clients such as ioredis may read it as a password.
 */
export function redactSecrets(text: string): string {
  return text.replace(
    USERINFO,
    (_match, scheme: string, user: string, password: string | undefined) =>
      password === undefined ? `${scheme}***@` : `${scheme}${user}:***@`,
  ).replace(PASSWORD_PARAM, "$1***");
}

/** An error's message (or the thrown value as text), its URL passwords redacted. */
export function errorMessage(error: unknown): string {
  return redactSecrets(error instanceof Error ? error.message : String(error));
}

/**
 * Makes an untrusted value (an invalid workspace id, a raw key) safe to show in one log line:
 * printable ASCII passes, `\` and everything else becomes `\xNN` (bytes) or `\u{N}` (code points),
 * cut to at most `maxLength` characters (never inside an escape) with `...` when cut.
 */
export function escapeForLog(value: string | Uint8Array, maxLength = 64): string {
  if (!Number.isInteger(maxLength) || maxLength < 1) {
    throw new RangeError(`maxLength must be a positive integer, got ${maxLength}`);
  }
  // A byte is escaped like the code point of the same number.
  const codes = typeof value === "string" ? [...value].map((c) => c.codePointAt(0) ?? 0) : value;
  const pieces = Array.from(codes, escapeCodePoint);
  const whole = pieces.join("");
  if (whole.length <= maxLength) return whole;
  // A half escape would look like a different value.
  let out = "";
  for (const piece of pieces) {
    if (out.length + piece.length > maxLength - 3) break;
    out += piece;
  }
  return `${out}...`;
}

/** A code point as itself when printable ASCII (not `\`), else as `\xNN` or `\u{N}`. */
export function escapeCodePoint(code: number): string {
  if (code >= 0x20 && code <= 0x7e && code !== 0x5c) return String.fromCodePoint(code);
  if (code <= 0xff) return `\\x${code.toString(16).padStart(2, "0")}`;
  return `\\u{${code.toString(16)}}`;
}
