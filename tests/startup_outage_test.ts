/**
 * The pieces behind a run's start-up and its per-server outage clock: `throughOutages` (a start-up
 * step waited through outages, bounded by --max-outage, cut short by a stop signal) with fakes,
 * and `LossClock` against a real redis-server (killed, frozen, given up on).
 */
import assert from "node:assert/strict";
import { RedisUnavailableError } from "../src/errors.ts";
import { AbandonedServerError, LossClock } from "../src/redis/availability.ts";
import { classify } from "../src/redis/errors.ts";
import { Redis } from "../src/redis/ioredis.ts";
import { throughOutages } from "../src/run/outage.ts";
import type { LogLevel } from "../src/run_events.ts";
import { startRedis } from "./support/redis_server.ts";
import { startDelayProxy } from "../bench/delay_proxy.ts";

function startup(maxOutage: number, signal?: AbortSignal) {
  const logs: { level: LogLevel; event: string; message: string }[] = [];
  const node = {} as Redis;
  return {
    logs,
    options: {
      what: "taking the run lock",
      target: { masters: () => [node], nodeName: () => "10.0.0.1:6379" },
      logger: {
        log: (level: LogLevel, event: string, message: string) =>
          logs.push({ level, event, message }),
      },
      maxOutage,
      signal,
    },
  };
}

Deno.test("throughOutages: an outage is waited out and the step runs again; one warning", async () => {
  const { logs, options } = startup(5);
  let calls = 0;
  const value = await throughOutages(() => {
    calls++;
    if (calls < 3) return Promise.reject(new Error("BUSY Redis is busy running a script."));
    return Promise.resolve("held");
  }, options);
  assert.equal(value, "held");
  assert.equal(calls, 3);
  assert.deepEqual(logs.map((l) => l.event), ["redis_lost"]);
  assert.match(
    logs[0]!.message,
    /lost Redis at 10\.0\.0\.1:6379 \(BUSY\) while taking the run lock/,
  );
});

Deno.test("throughOutages: past --max-outage, exit 3 in one line; a command error is not waited on", async () => {
  const { options } = startup(0.3);
  const started = performance.now();
  await assert.rejects(
    () => throughOutages(() => Promise.reject(new Error("Connection is closed.")), options),
    (error: unknown) =>
      error instanceof RedisUnavailableError && error.exitCode === 3 &&
      /while taking the run lock, for longer than --max-outage/.test(error.message),
  );
  assert.ok(performance.now() - started >= 300);
  const wrong = new Error("WRONGTYPE Operation against a key holding the wrong kind of value");
  await assert.rejects(
    () => throughOutages(() => Promise.reject(wrong), options),
    (e) => e === wrong,
  );
});

Deno.test("throughOutages: a stop signal ends a read-only step at once with the signal's reason", async () => {
  const stop = new AbortController();
  const { options } = startup(60, stop.signal);
  const hung = new Promise<never>(() => {});
  setTimeout(() => stop.abort("SIGTERM"), 20);
  await assert.rejects(
    () => throughOutages(() => hung, { ...options, readOnly: true }),
    (reason) => reason === "SIGTERM",
  );
  // Also during the wait between two tries.
  const again = new AbortController();
  setTimeout(() => again.abort("SIGINT"), 50);
  await assert.rejects(
    () =>
      throughOutages(() => Promise.reject(new Error("Connection is closed.")), {
        ...options,
        signal: again.signal,
      }),
    (reason) => reason === "SIGINT",
  );
});

Deno.test("LossClock: a frozen server is lost from the start of its silence; ready clears; one given up on fails every command at once", async () => {
  const server = await startRedis();
  const name = `127.0.0.1:${server.port}`;
  const clock = new LossClock(800);
  const client = new Redis({
    port: server.port,
    lazyConnect: true,
    socketTimeout: 800,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => 100,
  });
  client.on("error", () => {});
  clock.watch(client, () => name);
  try {
    await client.connect();
    assert.equal(clock.lostSince(name), undefined);
    // Frozen: the PING waits; after 800 ms of silence the connection is closed, and the loss
    // dates from when the silence began.
    server.signal("SIGSTOP");
    const frozen = performance.now();
    await assert.rejects(() => client.ping(), (error) => classify(error).outage);
    const since = clock.lostSince(name);
    assert.ok(since !== undefined && Math.abs(since - frozen) < 300, `lost since ${since}`);
    server.signal("SIGCONT");
    await new Promise<void>((resolve) => client.once("ready", () => resolve()));
    assert.equal(clock.lostSince(name), undefined);
    // Given up on: every later command fails at once, as an outage.
    clock.abandon(name);
    await assert.rejects(
      () => client.ping(),
      (error) => error instanceof AbandonedServerError && classify(error).outage,
    );
  } finally {
    server.signal("SIGCONT");
    client.disconnect();
    await server.stop();
  }
});

Deno.test("LossClock: a socket timeout on a healthy connection (a timer its dropped predecessor armed) is no loss of a server that answers", async () => {
  const server = await startRedis();
  const proxy = startDelayProxy({ targetPort: server.port, delayMs: 50 });
  const name = `127.0.0.1:${proxy.port}`;
  const clock = new LossClock(800);
  const client = new Redis({
    port: proxy.port,
    lazyConnect: true,
    socketTimeout: 800,
    maxRetriesPerRequest: 0,
    retryStrategy: () => 50,
  });
  client.on("error", () => {});
  clock.watch(client, () => name);
  const timeouts: { at: number; lostSince: number | undefined }[] = [];
  client.on("error", (error: Error) => {
    if (/^Socket timeout/.test(error.message)) {
      timeouts.push({ at: performance.now(), lostSince: clock.lostSince(name) });
    }
  });
  try {
    await client.connect();
    // A command in flight when the connection drops: its socket timer is never cleared.
    const lost = client.ping().catch(() => "lost");
    await new Promise((resolve) => setTimeout(resolve, 20));
    proxy.drop();
    assert.equal(await lost, "lost");
    // The server answers on the new connection all along, until the old timer fires on it.
    const deadline = performance.now() + 3000;
    while (timeouts.length === 0 && performance.now() < deadline) {
      await client.ping().catch(() => {});
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(timeouts.length, 1, "ioredis raised a socket timeout on the new connection");
    const { at, lostSince } = timeouts[0]!;
    // Lost, at most, since its last reply (within a round trip and a pause), not 800 ms back.
    assert.ok(lostSince === undefined || at - lostSince < 400, `lost ${at - lostSince!} ms back`);
  } finally {
    client.disconnect();
    await proxy.close();
    await server.stop();
  }
});
