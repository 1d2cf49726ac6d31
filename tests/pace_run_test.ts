/**
 * The default pace end to end, on real processes: a real `backfill --execute` against a real
 * redis-server, the application's load from the real `redis-benchmark`. Everything is judged by
 * what Redis and the run report (INFO counters, the run's log, status and summary), never by how
 * fast this machine happens to be.
 */
import assert from "node:assert/strict";
import { delay } from "../src/async/delay.ts";
import { loadDelta, readLoadCounters } from "../src/control/server_load.ts";
import { ExitCode } from "../src/errors.ts";
import type { Redis } from "../src/redis/ioredis.ts";
import { runCli, spawnCli, waitFor } from "./support/cli.ts";
import { countKeys, makeJobs, seedOld, seedOldInServer } from "./support/seed.ts";
import { freePort, withRedis } from "./support/redis_server.ts";
import { parseSamples } from "./support/telemetry.ts";

/** The application: `redis-benchmark` running `command` on `clients` connections until stopped. */
function startAppLoad(port: number, clients: number, command: string[]): { stop(): Promise<void> } {
  const child = new Deno.Command("redis-benchmark", {
    args: ["-h", "127.0.0.1", "-p", String(port), "-c", String(clients), "-n", "1000000000", "-q"]
      .concat(command),
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  return {
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch {
        // Already stopped.
      }
      await child.status;
    },
  };
}

/** Redis's busy share and the share of the backfill's commands over `ms`, read from Redis. */
async function serverShares(client: Redis, ms: number): Promise<{ busy: number; own: number }> {
  const before = await readLoadCounters(client);
  await delay(ms);
  const after = await readLoadCounters(client);
  const d = loadDelta(before!, after!)!;
  return { busy: d.busyMicros / d.elapsedMicros, own: d.ownMicros / d.elapsedMicros };
}

Deno.test("pace: the defaults start at once (no baseline step) and hold nothing back on a healthy store", async () => {
  await withRedis(async (server, client) => {
    await seedOld(client, makeJobs(3000));
    const common = ["--execute", "--rps", "0", "--json", "--redis-url", server.url];
    const run = await spawnCli(common, {}, 120_000, { defaults: true }).done;
    assert.equal(run.code, 0, run.stderr);
    assert.equal(JSON.parse(run.stdout).migrated, 3000);
    // Nothing is measured before the lock and the first copy: no probe, no baseline line.
    assert.doesNotMatch(run.stderr, /baseline|probe/i);
    assert.doesNotMatch(run.stderr, /throttle on/, "a healthy store: nothing to yield to");

    await client.flushall();
    await seedOld(client, makeJobs(3000));
    const raw = await spawnCli([...common, "--max-latency", "0"], {}, 120_000, { defaults: true })
      .done;
    assert.equal(raw.code, 0, raw.stderr);
    assert.equal(JSON.parse(raw.stdout).migrated, 3000);
    assert.equal(await countKeys(client, "ai:job:*"), 3000);
  });
});

Deno.test("pace: calls in flight follow --max-latency while another client is active, and cover the round trip while none is", async () => {
  await withRedis(async (server, client) => {
    await seedOldInServer(client, 300_000);
    const P = "p:shared";
    const common = ["--progress-key", P, "--redis-url", server.url];
    // A rate cap keeps the run going long enough to watch both changes (the window is the same).
    const metricsPort = freePort();
    const run = spawnCli(
      ["--execute", "--rps", "5000", "--metrics-port", String(metricsPort), ...common],
      {},
      120_000,
      { defaults: true },
    );
    const sharedGauge = async () => {
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      return parseSamples(text).find((s) => s.name === "relay_backfill_redis_shared")?.value;
    };
    let app: { stop(): Promise<void> } | undefined;
    const lines = (pattern: RegExp) => run.stderrSoFar().match(pattern)?.length ?? 0;
    const alone =
      /INFO throttle: no other client active on Redis: calls in flight cover the round trip/g;
    const shared =
      /INFO throttle: another client is active on Redis: calls in flight follow --max-latency/g;
    try {
      // Nobody else talks to Redis (this test's own connection went idle after the seed).
      await waitFor("the deeper window", () => lines(alone) === 1, 30_000);
      assert.equal(await sharedGauge(), 0);
      // The application arrives: its commands are seen at the next reading.
      app = startAppLoad(server.port, 1, ["PING"]);
      await waitFor("the budget's window", () => lines(shared) === 1, 30_000);
      assert.equal(await sharedGauge(), 1);
      // It leaves: after two seconds of nothing the window deepens again.
      await app.stop();
      await waitFor("the deeper window again", () => lines(alone) === 2, 30_000);
      assert.equal((await runCli(["stop", ...common])).code, 0);
      const result = await run.done;
      assert.equal(result.code, ExitCode.stopped, result.stderr);
      assert.equal(lines(shared), 1, result.stderr);
    } finally {
      await app?.stop();
      try {
        run.child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      await run.done.catch(() => {});
    }
  });
});

Deno.test("pace: a Redis saturated by the application: the run yields to a tenth, says why, and recovers", async () => {
  await withRedis(async (server, client) => {
    await seedOldInServer(client, 300_000);
    // The application: set unions, ~1.5 ms of Redis each, tiny replies (Redis works, the client
    // does not). How busy it keeps Redis depends on this machine: the test reads it, and sets the
    // critical load at half of what the application alone reaches.
    await client.eval(
      "for i = 1, 2000 do redis.call('SADD', 'app:s1', 'a' .. i) " +
        "redis.call('SADD', 'app:s2', 'b' .. i) end",
      0,
    );
    const app = startAppLoad(server.port, 4, ["SUNIONSTORE", "app:dst", "app:s1", "app:s2"]);
    const P = "p:pace";
    const common = ["--progress-key", P, "--redis-url", server.url];
    let run: ReturnType<typeof spawnCli> | undefined;
    try {
      await delay(500);
      const alone = await serverShares(client, 1000);
      assert.ok(alone.busy > 0.1, `the application keeps Redis busy: ${alone.busy}`);
      const critical = Math.max(5, Math.min(90, Math.round(alone.busy * 50)));
      run = spawnCli(
        ["--execute", "--rps", "0", "--critical-load", String(critical), "--json", ...common],
        {},
        120_000,
        { defaults: true },
      );
      const yielded =
        /WARN throttle: throttle on: Redis is (\d+)% busy without the backfill \(critical load (\d+)%\): the backfill yields to 10% of Redis's time; rate (\d+)\/s/;
      await waitFor("the yield", () => yielded.test(run!.stderrSoFar()), 30_000);
      const [, busyPct, criticalPct] = run.stderrSoFar().match(yielded)!;
      assert.ok(Number(busyPct) >= critical, run.stderrSoFar());
      assert.equal(Number(criticalPct), critical);

      // What Redis says the backfill takes while it yields: its scripts (its SCANs run in one).
      const during = await serverShares(client, 2000);
      assert.ok(during.own <= 0.12, `the backfill's share of Redis while yielding: ${during.own}`);
      // The status says why (it is published once a second).
      let throttled: unknown;
      await waitFor("the status's reason", async () => {
        const status = JSON.parse((await runCli(["status", "--json", ...common])).stdout);
        throttled = status.rate.throttled;
        return JSON.stringify(throttled) === '["redis_busy"]';
      }, 10_000).catch(() => assert.deepEqual(throttled, ["redis_busy"], run!.stderrSoFar()));

      // The application stops: the run takes its speed back (one line), then is stopped.
      await app.stop();
      await waitFor(
        "the recovery",
        () => /INFO throttle: throttle off: the application keeps Redis/.test(run!.stderrSoFar()),
        30_000,
      );
      assert.equal((await runCli(["stop", ...common])).code, 0);
      const result = await run.done;
      assert.equal(result.code, ExitCode.stopped, result.stderr);
      assert.equal(result.stderr.match(/throttle on: Redis/g)?.length, 1, result.stderr);
    } finally {
      await app.stop();
      try {
        run?.child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      await run?.done.catch(() => {});
    }
  });
});

Deno.test("pace: set-rps on a running default run is the rate, also after a pause and resume", async () => {
  await withRedis(async (server, client) => {
    await seedOldInServer(client, 100_000);
    const P = "p:setrps";
    const common = ["--progress-key", P, "--redis-url", server.url];
    const metricsPort = freePort();
    const run = spawnCli(
      [
        "--execute",
        "--rps",
        "0",
        "--metrics-port",
        String(metricsPort),
        "--metrics-host",
        "127.0.0.1",
        "--metrics-linger",
        "0",
        "--json",
        ...common,
      ],
      {},
      120_000,
      { defaults: true },
    );
    const migrated = async () => {
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      return parseSamples(text)
        .filter((s) => s.name === "relay_backfill_migrated_total")
        .reduce((total, s) => total + s.value, 0);
    };
    /** Keys per second over ~3 s, by the run's own counter and its own elapsed time. */
    const rate = async () => {
      const [a, t0] = [await migrated(), performance.now()];
      await delay(3000);
      const [b, t1] = [await migrated(), performance.now()];
      return ((b - a) * 1000) / (t1 - t0);
    };
    try {
      await waitFor("progress", async () => (await migrated().catch(() => 0)) > 0);
      assert.equal((await runCli(["set-rps", "800", ...common])).code, 0);
      await waitFor("the cap", () => /operator cap set; rate 800\/s/.test(run.stderrSoFar()));
      await delay(1000);
      const capped = await rate();
      // Generous bounds: a loaded CI box may run slower, never faster than the cap allows.
      assert.ok(capped <= 800 * 1.15 && capped >= 800 * 0.5, `after set-rps 800: ${capped}/s`);

      assert.equal((await runCli(["pause", ...common])).code, 0);
      await waitFor(
        "the pause",
        () => /throttle on: paused by the operator/.test(run.stderrSoFar()),
      );
      await delay(1500);
      assert.equal((await runCli(["resume", ...common])).code, 0);
      await waitFor(
        "the resume",
        () => /resumed by the operator; rate 800\/s/.test(run.stderrSoFar()),
      );
      const resumed = await rate();
      assert.ok(resumed <= 800 * 1.15 && resumed >= 800 * 0.5, `after resume: ${resumed}/s`);
      const status = JSON.parse((await runCli(["status", "--json", ...common])).stdout);
      assert.equal(status.rate.cap_rps, 800);
      assert.equal(status.rate.rps, 800);
    } finally {
      await runCli(["stop", ...common]);
      const result = await run.done;
      assert.equal(result.code, ExitCode.stopped, result.stderr);
    }
  });
});

Deno.test("pace: verify --full yields to an application that saturates Redis, by default", async () => {
  await withRedis(async (server, client) => {
    await seedOldInServer(client, 100_000);
    const P = "p:vpace";
    const common = ["--progress-key", P, "--redis-url", server.url];
    const copied = await runCli(["--execute", "--rps", "0", "--max-latency", "0", ...common]);
    assert.equal(copied.code, 0, copied.stderr);
    await client.eval(
      "for i = 1, 2000 do redis.call('SADD', 'app:s1', 'a' .. i) " +
        "redis.call('SADD', 'app:s2', 'b' .. i) end",
      0,
    );
    const app = startAppLoad(server.port, 4, ["SUNIONSTORE", "app:dst", "app:s1", "app:s2"]);
    let verify: ReturnType<typeof spawnCli> | undefined;
    try {
      await delay(500);
      const alone = await serverShares(client, 1000);
      assert.ok(alone.busy > 0.1, `the application keeps Redis busy: ${alone.busy}`);
      const critical = Math.max(5, Math.min(90, Math.round(alone.busy * 50)));
      verify = spawnCli(["verify", "--full", "--critical-load", String(critical), ...common]);
      await waitFor(
        "the yield",
        () => /throttle on: Redis is \d+% busy without the backfill/.test(verify!.stderrSoFar()),
        30_000,
      );
      const during = await serverShares(client, 2000);
      assert.ok(during.own <= 0.12, `verify's share of Redis while yielding: ${during.own}`);
      verify.child.kill("SIGTERM");
      const result = await verify.done;
      assert.equal(result.code, ExitCode.sigterm, result.stderr);
    } finally {
      await app.stop();
      try {
        verify?.child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      await verify?.done.catch(() => {});
    }
  });
});

Deno.test({
  name: "pace: a backfill whose core a busy process shares does not hold itself back for it",
  ignore: navigator.hardwareConcurrency < 2,
  async fn() {
    await withRedis(async (server, client) => {
      await seedOld(client, makeJobs(20_000));
      const redisPid = String(await client.info("server")).match(/process_id:(\d+)/)![1]!;
      const pin = (core: string, pid: string) =>
        new Deno.Command("taskset", { args: ["-a", "-p", "-c", core, pid], stdout: "null" })
          .output();
      await pin("1", redisPid);
      // A busy loop on core 0, where the backfill runs too: the client waits for its CPU.
      const hog = new Deno.Command("taskset", {
        args: ["-c", "0", "sh", "-c", "while :; do :; done"],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      try {
        const run = spawnCli(
          ["--execute", "--rps", "0", "--json", "--redis-url", server.url],
          {},
          120_000,
          { defaults: true },
        );
        await pin("0", String(run.child.pid));
        const result = await run.done;
        assert.equal(result.code, 0, result.stderr);
        assert.equal(JSON.parse(result.stdout).migrated, 20_000);
        // Its own wait for the CPU is no reason: Redis is not busy, nothing is held back.
        assert.doesNotMatch(result.stderr, /throttle on/, result.stderr);
      } finally {
        hog.kill("SIGKILL");
        await hog.status;
      }
    });
  },
});
