/**
 * What another client of the test's Redis does to a run: another runner's lock value, a long
 * script that keeps Redis busy (BUSY to everyone else).
 *
 * @module
 */

/** A run-lock value held by another runner (the shape `safety/lock.ts` writes and reads). */
export function otherRunnersLock(host = "runner-2"): string {
  return JSON.stringify({
    host,
    pid: 2,
    started: new Date().toISOString(),
    token: crypto.randomUUID(),
  });
}

/** Lua that keeps Redis busy for `ms` (TIME advances inside a script on Redis 7). */
export function busyLoop(ms: number): string {
  return `local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
while true do
  local n = redis.call('TIME')
  if n[1] * 1000000 + n[2] - start > ${ms * 1000} then break end
end
return 1`;
}
