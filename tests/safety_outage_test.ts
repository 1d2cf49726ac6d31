/**
 * Redis going away mid-run: a restart is waited out and the scan restarts from 0 (new run_id);
 * an outage past --max-outage ends in exit 3 with the checkpoint intact.
 */
import assert from "node:assert/strict";
import { isOutage } from "../src/redis/errors.ts";
import { runJson, spawnCli, waitFor } from "./support/cli.ts";
import { startRedis } from "./support/redis_server.ts";
import { countKeys, keyState, makeJobs, newKey, seedOld } from "./support/seed.ts";
import { oldKeyFor } from "./support/keys.ts";

Deno.test("a Redis restart mid-run is waited out; the new run_id restarts the scan; nothing missing", async () => {
  const server = await startRedis({ aof: true });
  let client = server.client();
  try {
    const jobs = makeJobs(5000);
    await seedOld(client, jobs);
    const run = spawnCli([
      "--execute",
      "--rps",
      "1500",
      "--batch",
      "200",
      "--max-outage",
      "30",
      "--json",
      "--redis-url",
      server.url,
    ]);
    await waitFor("a checkpoint", async () => (await client.exists("ai:backfill:cursor")) === 1);
    client.disconnect();
    await server.kill();
    await new Promise((resolve) => setTimeout(resolve, 1500));
    await server.start();
    client = server.client();
    const result = await run.done;
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /lost Redis at 127\.0\.0\.1:\d+/);
    assert.match(
      result.stderr,
      /restarted or failed over \(new run_id\).*rescanning from cursor 0/,
    );
    const summary = JSON.parse(result.stdout);
    assert.equal(summary.completed, true);
    assert.equal(summary.errors, 0);
    for (const job of jobs) {
      const fresh = await keyState(client, newKey(job));
      const old = await keyState(client, oldKeyFor(job.id));
      assert.deepEqual(fresh.fields, old.fields, job.id);
    }
    assert.equal(await client.exists("ai:backfill:cursor"), 0);
  } finally {
    client.disconnect();
    await server.stop();
  }
});

Deno.test("an outage longer than --max-outage exits 3 and keeps the checkpoint", async () => {
  const server = await startRedis({ aof: true });
  let client = server.client();
  try {
    await seedOld(client, makeJobs(4000));
    const run = spawnCli([
      "--execute",
      "--rps",
      "1000",
      "--batch",
      "200",
      "--max-outage",
      "2",
      "--json",
      "--redis-url",
      server.url,
    ]);
    // The run stores its start cursor before its first copy: wait for a copy too.
    await waitFor(
      "a checkpoint and a copy",
      async () =>
        (await client.exists("ai:backfill:cursor")) === 1 &&
        (await countKeys(client, "ai:job:*")) > 0,
    );
    client.disconnect();
    await server.kill();
    const killed = performance.now();
    const result = await run.done;
    const seconds = (performance.now() - killed) / 1000;
    assert.equal(result.code, 3, result.stderr);
    assert.ok(seconds >= 2 && seconds < 8, `gave up after ${seconds} s`);
    const cursor = result.stderr.match(/the checkpoint is kept at cursor=(\d+)/)?.[1];
    assert.ok(cursor, result.stderr);
    assert.match(
      result.stderr,
      /error: lost Redis at 127\.0\.0\.1:\d+ for longer than --max-outage/,
    );
    const summary = JSON.parse(result.stdout);
    assert.equal(summary.completed, false);
    await server.start();
    client = server.client();
    assert.equal(await client.get("ai:backfill:cursor"), cursor);
    assert.ok((await countKeys(client, "ai:job:*")) > 0);
  } finally {
    client.disconnect();
    await server.stop();
  }
});

Deno.test("a Redis frozen (SIGSTOP) mid-run for longer than --max-outage: exit 3 within the bound, checkpoint kept", async () => {
  const server = await startRedis({ aof: true });
  const client = server.client();
  try {
    await seedOld(client, makeJobs(4000));
    const run = spawnCli([
      "--execute",
      "--rps",
      "1000",
      "--batch",
      "200",
      "--max-outage",
      "3",
      "--json",
      "--redis-url",
      server.url,
    ]);
    await waitFor(
      "a checkpoint and a copy",
      async () =>
        (await client.exists("ai:backfill:cursor")) === 1 &&
        (await countKeys(client, "ai:job:*")) > 0,
    );
    server.signal("SIGSTOP");
    const frozen = performance.now();
    // It answers nothing, but its connections stay open: the run must not wait for it to thaw.
    const thaw = setTimeout(() => server.signal("SIGCONT"), 40_000);
    const result = await run.done.finally(() => clearTimeout(thaw));
    const seconds = (performance.now() - frozen) / 1000;
    server.signal("SIGCONT");
    assert.equal(result.code, 3, result.stderr);
    assert.ok(seconds < 3 + 10, `exit 3 came ${seconds} s after the freeze`);
    assert.match(
      result.stderr,
      /error: lost Redis at 127\.0\.0\.1:\d+ for longer than --max-outage/,
    );
    assert.doesNotMatch(result.stderr, /internal error|\n\s+at /);
    assert.match(result.stderr, /the checkpoint is kept at cursor=\d+/);
    assert.equal(JSON.parse(result.stdout).completed, false);
    // Thawed, the stored checkpoint resumes: the next run finishes the job. (The dead run's lock
    // expires by itself; fast-forward that.)
    await client.pexpire("ai:backfill:lock", 1);
    await new Promise((resolve) => setTimeout(resolve, 10));
    const rest = await runJson(["--execute", "--rps", "0", "--redis-url", server.url]);
    assert.equal(rest.code, 0, rest.stderr);
    assert.match(rest.stderr, /Resuming from stored cursor=/);
    assert.equal(await countKeys(client, "ai:job:*"), 4000);
  } finally {
    server.signal("SIGCONT");
    client.disconnect();
    await server.stop();
  }
});

Deno.test("connection-level and availability errors are outages; command errors are not", () => {
  for (
    const message of [
      "Connection is closed.",
      "connect ECONNREFUSED 127.0.0.1:1",
      "LOADING Redis is loading the dataset in memory",
      "READONLY You can't write against a read only replica.",
      "CLUSTERDOWN The cluster is down",
      "Reached the max retries per request limit (which is 1).",
    ]
  ) {
    assert.ok(isOutage(new Error(message)), message);
  }
  for (
    const message of [
      "OOM command not allowed when used memory > 'maxmemory'.",
      "WRONGTYPE Operation against a key holding the wrong kind of value",
      "ERR unknown command",
    ]
  ) {
    assert.ok(!isOutage(new Error(message)), message);
  }
});
