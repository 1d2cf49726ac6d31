/**
 * Faults in the start-up phase of a real `--execute` run (connect, preflight, estimates, throttle,
 * locks, the first copy): a signal gets the signal's exit code, an outage is waited for up to
 * --max-outage and then exit 3 in one line, another client's long script (BUSY) is waited out.
 * Never an internal error, never a stack trace.
 */
import assert from "node:assert/strict";
import { type RunningCli, spawnCli, waitFor } from "./support/cli.ts";
import { redisCli } from "./support/cluster.ts";
import { freePort, withRedis } from "./support/redis_server.ts";
import { countKeys, makeJobs, newKey, seedOld } from "./support/seed.ts";
import { otherRunnersLock } from "./support/other_client.ts";

/** The run's first log line: it is connected and starting (nothing copied yet). */
function connected(run: RunningCli): boolean {
  return /connected to redis:\/\//.test(run.stderrSoFar());
}

for (const [signal, code] of [["SIGTERM", 143], ["SIGINT", 130]] as const) {
  Deno.test(`${signal} in the first moments of a run exits ${code}: no internal error, nothing half-written`, async () => {
    await withRedis(async (server, client) => {
      await seedOld(client, makeJobs(2000));
      const run = spawnCli(
        ["--execute", "--batch", "100", "--json", "--redis-url", server.url],
        {},
        60_000,
        { defaults: true },
      );
      // As soon as it is connected: start-up is short now, so this may also land after the
      // first batch (a summary then says it did not complete).
      await waitFor("the connected log line", () => connected(run), 30_000);
      run.child.kill(signal);
      const result = await run.done;
      assert.equal(result.code, code, result.stderr);
      assert.doesNotMatch(result.stderr, /internal error|AbortError|\n\s+at /);
      assert.match(result.stderr, new RegExp(`received ${signal}`));
      assert.ok(
        new RegExp(`stopped by ${signal} before the first batch`).test(result.stderr) ||
          JSON.parse(result.stdout).completed === false,
        result.stderr,
      );
      assert.equal(await client.exists("ai:backfill:lock"), 0, "no lock left behind");
      // Whatever it copied before it stopped is whole: the next run finishes the rest.
      const rest = spawnCli(["--execute", "--rps", "0", "--json", "--redis-url", server.url]);
      const again = await rest.done;
      assert.equal(again.code, 0, again.stderr);
      assert.equal(await countKeys(client, "ai:job:*"), 2000);
    });
  });

  Deno.test(`${signal} while start-up waits for the lock exits ${code}: stopped before the first batch`, async () => {
    await withRedis(async (server, client) => {
      await seedOld(client, makeJobs(500));
      // Another runner's lock, for 20 s more: the run is held in its start-up phase.
      const other = otherRunnersLock();
      await client.set("ai:backfill:lock", other, "PX", 20_000);
      const run = spawnCli(
        ["--execute", "--wait-lock", "30", "--json", "--redis-url", server.url],
        {},
        60_000,
        { defaults: true },
      );
      await waitFor("the lock wait's log line", () => /lock_wait/.test(run.stderrSoFar()), 30_000);
      run.child.kill(signal);
      const result = await run.done;
      assert.equal(result.code, code, result.stderr);
      assert.doesNotMatch(result.stderr, /internal error|AbortError|\n\s+at /);
      assert.match(result.stderr, new RegExp(`stopped by ${signal} before the first batch`));
      assert.equal(result.stdout, "", "no summary: nothing ran");
      assert.equal(
        await client.get("ai:backfill:lock"),
        other,
        "the other runner's lock is intact",
      );
      assert.equal(await countKeys(client, "ai:job:*"), 0, "nothing written");
    });
  });
}

Deno.test("Redis lost in the start-up phase: waited for up to --max-outage, then exit 3 in one line", async () => {
  await withRedis(async (server, client) => {
    await seedOld(client, makeJobs(2000));
    client.disconnect();
    const run = spawnCli(
      ["--execute", "--max-outage", "3", "--json", "--redis-url", server.url],
      {},
      60_000,
      { defaults: true },
    );
    await waitFor("the run's first log line", () => connected(run), 30_000);
    await server.kill();
    const killed = performance.now();
    const result = await run.done;
    const seconds = (performance.now() - killed) / 1000;
    assert.equal(result.code, 3, result.stderr);
    assert.ok(seconds < 3 + 10, `exit 3 came ${seconds} s after the outage`);
    assert.doesNotMatch(result.stderr, /internal error|\n\s+at /);
    assert.match(result.stderr, /^error: .*Redis at 127\.0\.0\.1:\d+.*--max-outage/m);
    await server.start();
  });
});

Deno.test("Redis frozen (SIGSTOP) in the start-up phase: exit 3 within --max-outage, no stack trace", async () => {
  await withRedis(async (server, client) => {
    await seedOld(client, makeJobs(2000));
    client.disconnect();
    const run = spawnCli(
      ["--execute", "--max-outage", "3", "--json", "--redis-url", server.url],
      {},
      60_000,
      { defaults: true },
    );
    try {
      await waitFor("the run's first log line", () => connected(run), 30_000);
      server.signal("SIGSTOP");
      const frozen = performance.now();
      const result = await run.done;
      const seconds = (performance.now() - frozen) / 1000;
      assert.equal(result.code, 3, result.stderr);
      assert.ok(seconds < 3 + 10, `exit 3 came ${seconds} s after the freeze`);
      assert.doesNotMatch(result.stderr, /internal error|\n\s+at /);
      assert.match(result.stderr, /^error: .*Redis at 127\.0\.0\.1:\d+.*--max-outage/m);
    } finally {
      server.signal("SIGCONT");
      await run.done.catch(() => {});
    }
  });
});

/** Lua that keeps Redis busy until SCRIPT KILL (it writes nothing, so it may be killed). */
const RUNAWAY = "while true do redis.call('TIME') end";

Deno.test("BUSY from another client's script in the start-up phase is waited out: exit 0, all migrated", async () => {
  await withRedis(async (server, client) => {
    const jobs = makeJobs(1000);
    await seedOld(client, jobs);
    // The latency probe's start-up (its baseline) is on, its bound loose: the rest goes fast.
    const run = spawnCli(
      [
        "--execute",
        "--max-outage",
        "30",
        "--max-latency",
        "50",
        "--json",
        "--redis-url",
        server.url,
      ],
      {},
      90_000,
      { defaults: true },
    );
    const blocker = server.client();
    try {
      await waitFor("the run's first log line", () => connected(run), 30_000);
      // Past busy-reply-threshold (100 ms), Redis answers BUSY to the run's start-up commands,
      // until an operator kills the runaway script.
      const runaway = blocker.eval(RUNAWAY, 0).catch((error: Error) => error.message);
      await new Promise((resolve) => setTimeout(resolve, 2500));
      assert.match(await redisCli(server.port, "SCRIPT", "KILL"), /OK/);
      assert.match(String(await runaway), /killed/i);
    } finally {
      blocker.disconnect();
    }
    const result = await run.done;
    assert.equal(result.code, 0, result.stderr);
    assert.doesNotMatch(result.stderr, /internal error|key_error|\n\s+at /);
    assert.match(result.stderr, /\(BUSY\)/);
    const summary = JSON.parse(result.stdout);
    assert.equal(summary.errors, 0);
    assert.equal(summary.completed, true);
    for (const job of jobs) assert.equal(await client.exists(newKey(job)), 1, job.id);
  }, { args: ["--busy-reply-threshold", "100"] });
});

Deno.test("a primary demoted in the start-up phase (READONLY) is waited out: exit 0, all migrated", async () => {
  await withRedis(async (server, client) => {
    const jobs = makeJobs(1000);
    await seedOld(client, jobs);
    // Another runner's lock, for 4 s more: the run starts, then waits to take the lock (still in
    // its start-up phase), and that is when a failover demotes the primary.
    await client.set("ai:backfill:lock", otherRunnersLock(), "PX", 4000);
    const run = spawnCli(
      [
        "--execute",
        "--max-outage",
        "30",
        "--wait-lock",
        "30",
        "--json",
        "--redis-url",
        server.url,
      ],
      {},
      90_000,
      { defaults: true },
    );
    await waitFor("the lock wait's log line", () => /lock_wait/.test(run.stderrSoFar()), 30_000);
    // A replica of a primary that is not there: read-only, and it keeps its data.
    await client.call("REPLICAOF", "127.0.0.1", String(freePort()));
    await new Promise((resolve) => setTimeout(resolve, 6000));
    await client.call("REPLICAOF", "NO", "ONE");
    const result = await run.done;
    assert.equal(result.code, 0, result.stderr);
    assert.doesNotMatch(result.stderr, /internal error|key_error|\n\s+at /);
    // Met while starting (taking the lock), not by the main loop.
    assert.match(
      result.stderr,
      /WARN redis_lost: lost Redis at 127\.0\.0\.1:\d+ \(.*\) while taking/,
    );
    const summary = JSON.parse(result.stdout);
    assert.equal(summary.errors, 0);
    assert.equal(summary.completed, true);
    for (const job of jobs) assert.equal(await client.exists(newKey(job)), 1, job.id);
  });
});
