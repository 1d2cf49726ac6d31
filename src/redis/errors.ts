/**
 * The one place that reads Redis and ioredis error text (their errors carry their meaning only in
 * it: `OOM command not allowed…`, `Connection is closed.`). {@linkcode classify} turns any failure
 * into a kind and a short code; everything else decides on those, never on a message.
 *
 * @module
 */
/**
 * What kind of failure an error is: a Redis reply code's (lower-case), `outage` (the connection
 * or the server is gone, not the command), `notlocal` (a script touched an undeclared key of a
 * slot this node does not serve), `credentials` and `tls` (retrying cannot help), `execabort` (a
 * transaction discarded for a cause we could not read), or `other`.
 */
export type ErrorKind =
  | "outage"
  | "loading"
  | "readonly"
  | "masterdown"
  | "clusterdown"
  | "tryagain"
  | "oom"
  | "busy"
  | "noscript"
  | "moved"
  | "ask"
  | "wrongtype"
  | "notlocal"
  | "credentials"
  | "tls"
  | "execabort"
  | "other";

/** A classified failure. */
export interface Classified {
  kind: ErrorKind;
  /** A Redis error code (`OOM`), a system code (`ECONNREFUSED`) or a short phrase; never a value. */
  code: string;
  /** Redis is not there right now: wait for it, then resume from the checkpoint. */
  outage: boolean;
  /** The error is an `EXECABORT` whose cause is what `kind` and `code` describe. */
  inTransaction: boolean;
}

/** Reply codes whose kind is their lower-case name. */
const REPLY_KINDS: Record<string, ErrorKind> = {
  OOM: "oom",
  BUSY: "busy",
  NOSCRIPT: "noscript",
  MOVED: "moved",
  ASK: "ask",
  READONLY: "readonly",
  LOADING: "loading",
  MASTERDOWN: "masterdown",
  CLUSTERDOWN: "clusterdown",
  TRYAGAIN: "tryagain",
  WRONGTYPE: "wrongtype",
  WRONGPASS: "credentials",
  NOAUTH: "credentials",
  NOPERM: "credentials",
  EXECABORT: "execabort",
};

/**
 * Kinds during which Redis (or the node serving a slot) is unavailable, not the command wrong.
 * `busy`: another client's script holds Redis until it ends or is killed; `readonly`: the node is
 * a replica now, so writes wait for a primary.
 */
const OUTAGE_KINDS: ReadonlySet<ErrorKind> = new Set(
  ["outage", "busy", "loading", "readonly", "masterdown", "clusterdown", "tryagain"],
);

/** The code of a connection silent for its whole `socketTimeout` with commands pending. */
export const NO_ANSWER = "no answer";

/** ioredis's and Node's connection failures, with the short code a log line shows. */
const CONNECTION_LOST: [RegExp, string][] = [
  [/Connection is closed/i, "connection closed"],
  [/Stream isn't writeable/i, "connection not writable"],
  [/max retries per request/i, "connection retries exhausted"],
  [/Socket closed unexpectedly/i, "socket closed"],
  [/^Socket timeout/i, NO_ANSWER],
  // A system code names these best (found on the error or in its text).
  [/ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|EHOSTUNREACH/, ""],
  [/Connection refused|Connection reset/i, "connection refused"],
  [/None of the sentinels are available/i, "no sentinel"],
  [/Failed to refresh slots cache/i, "slots unknown"],
];

const CREDENTIALS = /WRONGPASS|NOAUTH|NOPERM|invalid password|invalid username/i;
const TLS_FAILURE =
  /certificate|altnames|fatal alert|UnknownIssuer|NotValidForName|CERT_|self[- ]signed|handshake/i;

/**
 * Classifies `error`. An `EXECABORT` is classified by its cause (ioredis's `previousErrors`, else
 * the text after "because of:"); a cluster's "Too many Cluster redirections. Last error: …" by
 * that last error.
 *
 * @example
 * ```ts
 * import { classify } from "./errors.ts";
 * const { kind, outage } = classify(new Error("LOADING Redis is loading the dataset in memory"));
 * // kind === "loading", outage === true
 * ```
 */
export function classify(error: unknown): Classified {
  if (!(error instanceof Error)) return result("other", "UNKNOWN");
  if (error instanceof ServerChangedError) return result("outage", "node changed");
  const message = error.message;
  const code = replyCode(message);
  if (code === "EXECABORT") {
    const cause = transactionCause(error);
    if (cause !== undefined) return { ...classify(cause), inTransaction: true };
    return result("execabort", code);
  }
  const known = code === undefined ? undefined : REPLY_KINDS[code];
  if (code !== undefined && known !== undefined) return result(known, code);
  if (/non local key/.test(message)) return result("notlocal", "MOVED");
  const redirected = /Last error: (?:\w+: )?([A-Z][A-Z_]+\b.*)$/s.exec(message)?.[1];
  if (redirected !== undefined) return classify(new Error(redirected));
  // `ERR invalid password` (an old server's AUTH reply) is refused credentials too.
  if (CREDENTIALS.test(message)) {
    const named = /\b(WRONGPASS|NOAUTH|NOPERM)\b/.exec(message)?.[1];
    return result("credentials", named ?? code ?? "WRONGPASS");
  }
  if (code !== undefined) return result("other", code);
  // A system code on the error counts (a probe's worker reports "Connection refused (os error
  // 111)" with code ECONNREFUSED), else one in the text.
  const system = systemCode(error);
  if (TLS_FAILURE.test(message)) return result("tls", system ?? error.name);
  const inText = /\b(E[A-Z]{3,})\b/.exec(message)?.[1];
  const lost = CONNECTION_LOST.find(([pattern]) =>
    pattern.test(message) || pattern.test(system ?? "")
  );
  if (lost) return result("outage", system ?? (lost[1] || inText) ?? error.name);
  return result("other", system ?? inText ?? error.name);
}

/** A continued SCAN refused because the server behind the connection changed (fence.ts). */
export class ServerChangedError extends Error {
  constructor(name: string) {
    super(
      `Connection is closed and was re-established to another server process at ${name} ` +
        `(new run_id): its SCAN cursor is meaningless`,
    );
    this.name = "ServerChanged";
  }
}

/**
 * A Redis error code a script's `redis.pcall` caught for one key, as an error, so that
 * {@linkcode classify} sees it like a reply (`READONLY` for a key is an outage of the node).
 */
export class KeyReplyError extends Error {
  constructor(code: string) {
    super(`${code} (reported by a script for a key)`);
    this.name = "KeyReplyError";
  }
}

/** True when `error` says the connection (or the server's availability) is gone, not the command. */
export function isOutage(error: unknown): boolean {
  return classify(error).outage;
}

/** The Redis error code of `error` (`OOM`, `WRONGTYPE`, ...), or its class name; never values. */
export function errorCode(error: unknown): string {
  return classify(error).code;
}

/** The first line of `error`'s message, at most `max` characters (escape it before logging). */
export function errorLine(error: unknown, max = 200): string {
  const text = error instanceof Error ? error.message : String(error);
  return (text.split(/\r?\n/, 1)[0] ?? "").slice(0, max);
}

function result(kind: ErrorKind, code: string): Classified {
  return { kind, code, outage: OUTAGE_KINDS.has(kind), inTransaction: false };
}

/** The leading upper-case word of a Redis error reply (`OOM`, `EXECABORT`), if any. */
function replyCode(message: string): string | undefined {
  return /^([A-Z][A-Z_]+)\b/.exec(message)?.[1];
}

/** The command error that made Redis discard a transaction, when it can be found. */
function transactionCause(error: Error): unknown {
  const previous = (error as { previousErrors?: unknown[] }).previousErrors ?? [];
  const first = previous.find((e) => e instanceof Error);
  if (first !== undefined) return first;
  const text = /because of: ?(.+)$/s.exec(error.message)?.[1];
  return text !== undefined && replyCode(text) !== undefined ? new Error(text) : undefined;
}

function systemCode(error: Error): string | undefined {
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" && code.length > 0 ? code : undefined;
}

/**
 * True when a cluster node refused a key it does not serve: a redirect (`MOVED`, `ASK`) or, inside
 * a script whose keys are undeclared, "Script attempted to access a non local key".
 */
export function isNotServedHere(error: unknown): boolean {
  const { kind } = classify(typeof error === "string" ? new Error(error) : error);
  return kind === "moved" || kind === "ask" || kind === "notlocal";
}

/** True when a node has not cached a script (`NOSCRIPT`: a restart, failover or SCRIPT FLUSH). */
export function isScriptMissing(error: unknown): boolean {
  return classify(error).kind === "noscript";
}
