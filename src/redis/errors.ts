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

/** The Redis error code of `error` (`OOM`, `WRONGTYPE`, ...), or its class name; never values. */
export function errorCode(error: unknown): string {
  if (!(error instanceof Error)) return "UNKNOWN";
  return error.message.match(/^([A-Z][A-Z_]+)\b/)?.[1] ?? error.name;
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
