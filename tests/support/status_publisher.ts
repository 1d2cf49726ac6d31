/**
 * A stand-in for a running run's status side until the engine publishes it: publishes a status
 * for `<P>` every 200 ms through control/remote.ts until killed. Usage: status_publisher.ts <url> <P>.
 *
 * @module
 */
import { Redis } from "../../src/redis/ioredis.ts";
import { publishStatus } from "../../src/control/remote.ts";

const [url, progressKey] = Deno.args;
const client = new Redis(url!);
const started = new Date().toISOString();
await publishStatus(client, progressKey!, {
  signal: new AbortController().signal,
  intervalMs: 200,
  snapshot: () => ({
    mode: "execute",
    phase: "running",
    holder: { host: "test-host", pid: Deno.pid },
    started_at: started,
    rate: { rps: 800, cap_rps: 1000, paused: false, throttled: ["redis_busy"] },
    counts: { scanned: 250, migrated: 200, skipped_exists: 50 },
    estimated_total: 1000,
    eta_seconds: 90,
    cursors: { "127.0.0.1:1": "42" },
  }),
});
