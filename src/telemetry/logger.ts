/**
 * Structured logs on stderr, as text for people or JSON lines for log pipelines. URL passwords are
 * redacted and, in text, control characters escaped: one event is one line, without credentials.
 *
 * @module
 */
import type { Logger, LogLevel } from "../run_events.ts";
import { escapeCodePoint, redactSecrets } from "./redact.ts";

export type LogFormat = "text" | "json";

export interface LoggerOptions {
  /** `text`: `time LEVEL event: message k=v`; `json`: one object per line. */
  format: LogFormat;
  /** Drop `debug` and `info`; warnings and errors stay (a run that goes wrong must say why). */
  quiet?: boolean;
  /** Also write `debug` events (default `false`); `quiet` wins. */
  debug?: boolean;
  /** Writes one finished line (newline included) to stderr. */
  write: (text: string) => void;
  /** Current time in epoch milliseconds (default `Date.now`). */
  now?: () => number;
}

const SEVERITY: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };
/** Keys every JSON line has; a field with one of these names is renamed `field_<name>`. */
const RESERVED = new Set(["time", "level", "event", "message"]);
/** Text values that need no quotes: they cannot be mistaken for a separator or another field. */
const BARE = /^[A-Za-z0-9_.:/@%+,*-]+$/;

/** A {@linkcode Logger} writing to `write`. */
export function createLogger(options: LoggerOptions): Logger {
  const { format, write } = options;
  const now = options.now ?? Date.now;
  const min = options.quiet ? SEVERITY.warn : options.debug ? SEVERITY.debug : SEVERITY.info;
  return {
    log(level, event, message, fields = {}) {
      if ((SEVERITY[level] ?? SEVERITY.error) < min) return;
      const time = new Date(now()).toISOString();
      if (format === "json") {
        const record: Record<string, unknown> = { time, level, event, message };
        for (const [key, value] of Object.entries(fields)) {
          record[RESERVED.has(key) ? `field_${key}` : key] = value;
        }
        write(`${safeJson(record)}\n`);
        return;
      }
      const head = `${time} ${level.toUpperCase()} ${oneLine(event)}`;
      let line = `${head}: ${oneLine(redactSecrets(message))}`;
      for (const [key, value] of Object.entries(fields)) {
        if (value !== undefined) line += ` ${oneLine(key)}=${textValue(value)}`;
      }
      write(`${line}\n`);
    },
  };
}

function textValue(value: unknown): string {
  if (value === null || ["number", "boolean", "bigint"].includes(typeof value)) {
    return String(value);
  }
  const text = typeof value === "string"
    ? redactSecrets(value)
    : value instanceof Error
    ? redactSecrets(`${value.name}: ${value.message}`)
    : safeJson(value);
  return BARE.test(text) ? text : JSON.stringify(text);
}

/** JSON that never throws: bigints become strings, errors `name: message`, bytes escaped text. */
function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value, (_key, v: unknown) => {
      if (typeof v === "string") return redactSecrets(v);
      if (typeof v === "bigint") return v.toString();
      if (v instanceof Error) return redactSecrets(`${v.name}: ${v.message}`);
      if (v instanceof Uint8Array) return `<${v.byteLength} bytes>`;
      return v;
    }) ?? "null";
  } catch {
    return JSON.stringify("[unserializable]");
  }
}

/** Escapes control characters (and Unicode line breaks) so a value can never start a new line. */
function oneLine(text: string): string {
  // deno-lint-ignore no-control-regex
  const breaking = /[\u0000-\u001f\u007f\u0085\u2028\u2029]/g;
  return text.replace(breaking, (c) => escapeCodePoint(c.charCodeAt(0)));
}
