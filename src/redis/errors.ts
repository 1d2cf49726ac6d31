/**
 * Which Redis failures mean "Redis is not there right now" (wait for it, then resume from the
 * checkpoint) as opposed to a failure of one command.
 *
 * @module
 */

const OUTAGE = new RegExp(
  [
    "Connection is closed",
    "ECONNREFUSED",
    "ECONNRESET",
    "EPIPE",
    "ETIMEDOUT",
    "EHOSTUNREACH",
    "max retries per request",
    "Stream isn't writeable",
    "Socket closed unexpectedly",
    "connect ETIMEDOUT",
    "^LOADING",
    "^READONLY",
    "^MASTERDOWN",
    "^CLUSTERDOWN",
    "^TRYAGAIN",
    "None of the sentinels are available",
    "Failed to refresh slots cache",
  ].join("|"),
  "i",
);

/** True when `error` says the connection (or the server's availability) is gone, not the command. */
export function isOutage(error: unknown): boolean {
  return error instanceof Error && OUTAGE.test(error.message);
}

/** ioredis's connection-state messages, as short codes for log lines. */
const CONNECTION_STATES: [RegExp, string][] = [
  [/re-established to another server/i, "node changed"],
  [/Connection is closed/i, "connection closed"],
  [/Stream isn't writeable/i, "connection not writable"],
  [/max retries per request/i, "connection retries exhausted"],
  [/Socket closed unexpectedly/i, "socket closed"],
];

/** The Redis error code of `error` (`OOM`, `WRONGTYPE`, ...), or its class name; never values. */
export function errorCode(error: unknown): string {
  if (!(error instanceof Error)) return "UNKNOWN";
  const reply = error.message.match(/^([A-Z][A-Z_]+)\b/)?.[1];
  if (reply) return reply;
  // Connection errors: the system code (ECONNREFUSED, ...) or the first phrase of the message,
  // which names at most host:port (ioredis never puts credentials in error messages).
  const system = (error as { code?: unknown }).code;
  if (typeof system === "string" && system.length > 0) return system;
  const known = CONNECTION_STATES.find(([pattern]) => pattern.test(error.message))?.[1];
  return known ?? error.message.match(/\b(E[A-Z]{3,})\b/)?.[1] ?? error.name;
}

/**
 * True when Redis refused a write for lack of memory: an `OOM` reply, or a transaction aborted
 * (`EXECABORT`) because one of its commands got one.
 */
export function isOom(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  if (error.message.startsWith("OOM")) return true;
  const previous = (error as { previousErrors?: unknown[] }).previousErrors ?? [];
  return error.message.startsWith("EXECABORT") && previous.some(isOom);
}

/**
 * True when a cluster node refused a key it does not serve: a redirect (`MOVED`, `ASK`) or, inside
 * a script whose keys are undeclared, "Script attempted to access a non local key".
 */
export function isNotServedHere(error: unknown): boolean {
  const message = error instanceof Error ? error.message : typeof error === "string" ? error : "";
  return /^(MOVED|ASK)\b|non local key/.test(message);
}

/** True when a node has not cached a script (`NOSCRIPT`: a restart, failover or SCRIPT FLUSH). */
export function isScriptMissing(error: unknown): boolean {
  return error instanceof Error && error.message.startsWith("NOSCRIPT");
}

/** The Redis error code, also inside ioredis's "Too many Cluster redirections. Last error: …". */
export function clusterErrorCode(error: unknown): string {
  if (error instanceof Error) {
    const last = /Last error: (?:\w+: )?([A-Z][A-Z_]+)\b/.exec(error.message);
    if (last) return last[1]!;
  }
  return errorCode(error);
}
