/**
 * Safety checks that refuse or pause a run: the lock, memory headroom, a foreign checkpoint.
 */
import assert from "node:assert/strict";
import { headroom, isEvicting, parseMemoryInfo } from "../src/safety/memory.ts";
import { runCli, runJson, spawnCli, waitFor } from "./support/cli.ts";
import { countKeys, withSeeded, writeCounter } from "./support/seed.ts";

Deno.test("one runner per progress key: a second --execute exits 4 naming the holder", async () => {
  await withSeeded(2000, async (server, client) => {
    const first = spawnCli(["--execute", "--rps", "200", "--redis-url", server.url]);
    await waitFor("the lock", async () => (await client.exists("ai:backfill:lock")) === 1);
    const holder = JSON.parse((await client.get("ai:backfill:lock"))!);
    const second = await runCli(["--execute", "--wait-lock", "0", "--redis-url", server.url]);
    assert.equal(second.code, 4);
    assert.match(
      second.stderr,
      new RegExp(
        `error: another backfill holds the lock ai:backfill:lock: .+ pid ${holder.pid} \\(since .+\\), until \\d{4}-\\d\\d-\\d\\dT`,
      ),
    );
    // Another progress key is another lock; a dry-run takes no lock at all.
    assert.equal((await runCli(["--dry-run", "--rps", "0", "--redis-url", server.url])).code, 0);
    first.child.kill("SIGTERM");
    assert.equal((await first.done).code, 143);
    assert.equal(await client.exists("ai:backfill:lock"), 0);
  });
});

Deno.test("the lock is renewed while the run lives", async () => {
  await withSeeded(1500, async (server, client) => {
    const run = spawnCli(["--execute", "--rps", "100", "--redis-url", server.url]);
    await waitFor("the lock", async () => (await client.exists("ai:backfill:lock")) === 1);
    await new Promise((resolve) => setTimeout(resolve, 11_000));
    assert.ok((await client.pttl("ai:backfill:lock")) > 19_000, "renewed after 10 s");
    run.child.kill("SIGINT");
    assert.equal((await run.done).code, 130);
  });
});

Deno.test("memory headroom: execute refuses with exit 4 and writes nothing; dry-run reports it", async () => {
  await withSeeded(20_000, async (server, client) => {
    const used = parseMemoryInfo(await client.info("memory")).used;
    await client.config("SET", "maxmemory", String(used + 1024 * 1024));
    const before = await writeCounter(client);
    const refused = await runCli(["--execute", "--redis-url", server.url]);
    assert.equal(refused.code, 4, refused.stderr);
    assert.match(
      refused.stderr,
      /error: not enough memory headroom on 127\.0\.0\.1:\d+: used .* MiB \+ about .* MiB to copy/,
    );
    assert.equal(await writeCounter(client), before, "nothing written, not even the lock");
    const dry = await runCli(["--dry-run", "--rps", "0", "--redis-url", server.url]);
    assert.equal(dry.code, 0);
    assert.match(dry.stderr, /execute would be refused/);
    await client.config("SET", "maxmemory", "0");
    const noLimit = await runCli(["--dry-run", "--rps", "0", "--redis-url", server.url]);
    assert.match(noLimit.stderr, /the copy needs about \d+\.\d MiB more .*no maxmemory set/);
    await client.config("SET", "maxmemory", "1gb");
    await client.config("SET", "maxmemory-policy", "allkeys-lru");
    const evicting = await runCli(["--dry-run", "--rps", "0", "--redis-url", server.url]);
    assert.match(evicting.stderr, /maxmemory-policy allkeys-lru/);
  });
});

Deno.test("memory: the run pauses while above the bound, then finishes without errors", async () => {
  await withSeeded(6000, async (server, client) => {
    const run = spawnCli([
      "--execute",
      "--rps",
      "2000",
      "--batch",
      "200",
      "--json",
      "--redis-url",
      server.url,
    ]);
    await waitFor("a checkpoint", async () => (await client.exists("ai:backfill:cursor")) === 1);
    const used = parseMemoryInfo(await client.info("memory")).used;
    await client.config("SET", "maxmemory", String(used + 64 * 1024));
    await waitFor(
      "the pause",
      () =>
        /throttle on: memory above --max-memory-pct; paused \(Redis at .* above 90% of maxmemory/
          .test(run.stderrSoFar()),
    );
    const paused = await countKeys(client, "ai:job:*");
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.ok((await countKeys(client, "ai:job:*")) - paused < 500, "no progress while paused");
    await client.config("SET", "maxmemory", "0");
    const result = await run.done;
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /throttle off: memory back under --max-memory-pct/);
    const summary = JSON.parse(result.stdout);
    assert.equal(summary.errors, 0);
    assert.equal(await countKeys(client, "ai:job:*"), 6000);
  });
});

Deno.test("a checkpoint made with other parameters is refused (exit 4) unless --reset-progress", async () => {
  await withSeeded(1000, async (server, client) => {
    const first = await runJson([
      "--execute",
      "--rps",
      "0",
      "--batch",
      "100",
      "--max-keys",
      "100",
      "--workspace",
      "ws-a",
      "--redis-url",
      server.url,
    ]);
    assert.equal(first.code, 0);
    const other = await runCli(["--execute", "--rps", "0", "--redis-url", server.url]);
    assert.equal(other.code, 4);
    assert.match(
      other.stderr,
      /error: the checkpoint under ai:backfill was made with other parameters .*--reset-progress/,
    );
    assert.equal(await client.exists("ai:backfill:lock"), 0);
    const pattern = await runCli([
      "--execute",
      "--workspace",
      "ws-a",
      "--workspace-pattern",
      "^ws-.$",
      "--redis-url",
      server.url,
    ]);
    assert.equal(pattern.code, 4);
    const same = await runJson([
      "--execute",
      "--rps",
      "0",
      "--workspace",
      "ws-a",
      "--redis-url",
      server.url,
    ]);
    assert.equal(same.code, 0);
    assert.match(same.stderr, /Resuming from stored cursor/);
    await runJson([
      "--execute",
      "--rps",
      "0",
      "--batch",
      "100",
      "--max-keys",
      "100",
      "--workspace",
      "ws-a",
      "--redis-url",
      server.url,
    ]);
    const reset = await runJson([
      "--execute",
      "--rps",
      "0",
      "--reset-progress",
      "--redis-url",
      server.url,
    ]);
    assert.equal(reset.code, 0);
    assert.equal(reset.summary.scanned, 1000);
  });
});

Deno.test("headroom arithmetic and policies", () => {
  const memory = parseMemoryInfo(
    "used_memory:900\r\nmaxmemory:1000\r\nmaxmemory_policy:noeviction\r\n",
  );
  assert.deepEqual(memory, { used: 900, max: 1000, policy: "noeviction" });
  assert.deepEqual(headroom(memory, 50, 90), { limit: 900, projected: 950, fits: false });
  assert.equal(headroom({ ...memory, used: 100 }, 50, 90).fits, true);
  assert.equal(headroom({ ...memory, max: 0 }, 1e12, 90).fits, true);
  assert.equal(isEvicting("noeviction"), false);
  assert.equal(isEvicting("volatile-lru"), true);
});

Deno.test("OOM from Redis is waited out, not counted as errors", async () => {
  await withSeeded(6000, async (server, client) => {
    const run = spawnCli([
      "--execute",
      "--rps",
      "0",
      "--batch",
      "500",
      "--max-memory-pct",
      "100",
      "--json",
      "--redis-url",
      server.url,
    ]);
    await waitFor(
      "a checkpoint",
      async () => (await client.exists("ai:backfill:cursor")) === 1,
      20_000,
    );
    const used = parseMemoryInfo(await client.info("memory")).used;
    await client.config("SET", "maxmemory", String(used + 32 * 1024));
    await waitFor("an OOM", () => /refused writes \(OOM\)/.test(run.stderrSoFar()));
    await new Promise((resolve) => setTimeout(resolve, 500));
    await client.config("SET", "maxmemory", "0");
    const result = await run.done;
    assert.equal(result.code, 0, result.stderr);
    assert.equal(JSON.parse(result.stdout).errors, 0);
    assert.equal(await countKeys(client, "ai:job:*"), 6000);
  });
});

Deno.test("OOM that lasts past --max-outage stops the run with exit 4 and its checkpoint", async () => {
  await withSeeded(6000, async (server, client) => {
    const run = spawnCli([
      "--execute",
      "--rps",
      "3000",
      "--batch",
      "500",
      "--max-memory-pct",
      "100",
      "--max-outage",
      "2",
      "--json",
      "--redis-url",
      server.url,
    ]);
    await waitFor("a checkpoint", async () => (await client.exists("ai:backfill:cursor")) === 1);
    const used = parseMemoryInfo(await client.info("memory")).used;
    await client.config("SET", "maxmemory", String(used + 32 * 1024));
    const result = await run.done;
    assert.equal(result.code, 4, result.stderr);
    assert.match(
      result.stderr,
      /error: Redis at 127\.0\.0\.1:\d+ kept refusing writes \(OOM\) for longer than --max-outage/,
    );
    const summary = JSON.parse(result.stdout);
    assert.equal(summary.completed, false);
    await client.config("SET", "maxmemory", "0");
    assert.equal(await client.get("ai:backfill:cursor"), summary.cursor);
  });
});
