/**
 * Who a live-control command reaches, with real runner processes: every `--shard` runner of a
 * progress key obeys one `backfill stop`, and a command left in the key by an earlier run (a
 * `set-rps 0`, a `set-rps 800` and a `resume`) does not change a later run's `--rps`.
 */
import assert from "node:assert/strict";
import { ExitCode } from "../src/errors.ts";
import type { Redis } from "../src/redis/ioredis.ts";
import { runCli, type RunningCli, spawnCli, waitFor } from "./support/cli.ts";
import { seedOldCluster, startCluster } from "./support/cluster.ts";
import { countKeys, makeJobs, seedOld } from "./support/seed.ts";
import { withRedis } from "./support/redis_server.ts";

async function stopAll(runs: RunningCli[]): Promise<void> {
  for (const run of runs) {
    try {
      run.child.kill("SIGKILL");
    } catch {
      // already exited
    }
    await run.done.catch(() => undefined);
  }
}

Deno.test("one backfill stop stops every --shard runner of the progress key", async () => {
  const cluster = await startCluster({ masters: 3 });
  const client = cluster.client();
  const runners: RunningCli[] = [];
  try {
    await seedOldCluster(client, makeJobs(3000));
    // At 100 jobs/s each runner has ~10-20 s of work: a runner the stop misses runs on, exit 0.
    const args = (i: number) => [
      "--execute",
      "--shard",
      `${i}/2`,
      "--rps",
      "100",
      "--batch",
      "50",
      "--json",
      "--redis-url",
      cluster.url,
    ];
    for (let i = 0; i < 2; i++) runners.push(spawnCli(args(i)));
    await waitFor("both runners' statuses", async () => {
      const read = await runCli(["status", "--json", "--redis-url", cluster.url]);
      const json = JSON.parse(read.stdout);
      return json.runners?.filter((r: { state: string }) => r.state === "active").length === 2;
    }, 60_000);
    const stop = await runCli(["stop", "--redis-url", cluster.url]);
    assert.equal(stop.code, 0, stop.stderr);
    assert.match(stop.stdout, /each of the 2 live runners \(shard 0\/2 .+, shard 1\/2 .+\) stops/);
    const results = await Promise.all(runners.map((run) => run.done));
    for (const [i, result] of results.entries()) {
      assert.equal(result.code, ExitCode.stopped, `runner ${i}:\n${result.stderr}`);
      assert.match(result.stderr, /stopping: backfill stop/);
      assert.equal(JSON.parse(result.stdout).completed, false);
    }
  } finally {
    await stopAll(runners);
    client.disconnect();
    await cluster.stop();
  }
});

/** Old keys copied during `ms` of a run, and the run's status then. */
async function paceOver(
  client: Redis,
  ms: number,
): Promise<number> {
  const before = await countKeys(client, "ai:job:*");
  await new Promise((resolve) => setTimeout(resolve, ms));
  return (await countKeys(client, "ai:job:*")) - before;
}

Deno.test("a set-rps 0, or a set-rps 800 and a resume, left by an earlier run does not change a later run's --rps", async () => {
  await withRedis(async (server, client) => {
    await seedOld(client, makeJobs(12_000));
    const common = ["--redis-url", server.url];
    const status = async () => JSON.parse((await runCli(["status", "--json", ...common])).stdout);
    const start = (rps: number) =>
      spawnCli(["--execute", "--rps", String(rps), "--batch", "100", "--json", ...common]);
    /** Waits for the status of `run` itself (its pid), running; fails if the run ends first. */
    const running = (run: RunningCli) => {
      let ended: string | undefined;
      run.done.then((r) => ended = r.stdout, () => ended = "");
      return waitFor("the run's own status", async () => {
        if (ended !== undefined) {
          assert.fail(`the run ended already (its pace was not kept): ${ended}`);
        }
        const json = await status();
        return json.holder?.pid === run.child.pid && json.phase === "running";
      });
    };
    const runs: RunningCli[] = [];
    try {
      // An earlier run gets `set-rps 0` (paused first, so it copies little meanwhile), then ends.
      const first = start(200);
      runs.push(first);
      await running(first);
      assert.equal((await runCli(["pause", ...common])).code, 0);
      await waitFor("the earlier run's pause", async () => (await status()).rate.paused === true);
      assert.equal((await runCli(["set-rps", "0", ...common])).code, 0);
      await waitFor("the earlier run's cap 0", async () => (await status()).rate.cap_rps === 0);
      first.child.kill("SIGTERM");
      assert.equal((await first.done).code, ExitCode.sigterm);

      // A later run at --rps 100 keeps its cap: ~100 jobs/s, not the whole store at once.
      const second = start(100);
      runs.push(second);
      await running(second);
      const copied = await paceOver(client, 3000);
      assert.ok(copied <= 800, `copied ${copied} in 3 s at --rps 100`);
      const json = await status();
      assert.equal(json.rate.cap_rps, 100);
      assert.deepEqual(json.control, { operator_paused: false, cap_by: "--rps" });
      assert.match(
        second.stderrSoFar(),
        /not applied: 2 command\(s\) in ai:backfill:control issued before this run started, the last 'set-rps 0'/,
      );
      // This run's own set-rps applies to it (and says so in the status).
      assert.equal((await runCli(["set-rps", "800", ...common])).code, 0);
      await waitFor("cap 800", async () => (await status()).rate.cap_rps === 800);
      assert.match((await runCli(["status", ...common])).stdout, /cap 800\/s \(set-rps\)/);
      assert.equal((await runCli(["resume", ...common])).code, 0);
      await waitFor("the resume read", () => /control: resume/.test(second.stderrSoFar()));
      second.child.kill("SIGTERM");
      assert.equal((await second.done).code, ExitCode.sigterm);

      // `set-rps 800` then `resume` were the earlier run's: the next --rps 100 run keeps 100.
      const third = start(100);
      runs.push(third);
      await running(third);
      const again = await paceOver(client, 3000);
      assert.ok(again <= 800, `copied ${again} in 3 s at --rps 100`);
      assert.equal((await status()).rate.cap_rps, 100);
      assert.match((await runCli(["status", ...common])).stdout, /cap 100\/s \(--rps\)/);
      assert.equal((await runCli(["stop", ...common])).code, 0);
      assert.equal((await third.done).code, ExitCode.stopped);
    } finally {
      await stopAll(runs);
    }
  });
});

Deno.test("a run that takes over from a run killed -9 while paused starts paused, until resume", async () => {
  await withRedis(async (server, client) => {
    await seedOld(client, makeJobs(3000));
    const common = ["--redis-url", server.url];
    const status = async () => JSON.parse((await runCli(["status", "--json", ...common])).stdout);
    const args = ["--execute", "--rps", "200", "--batch", "100", "--json", ...common];
    const runs: RunningCli[] = [];
    try {
      const first = spawnCli(args);
      runs.push(first);
      await waitFor("the first run's status", async () => (await status()).phase === "running");
      assert.equal((await runCli(["pause", ...common])).code, 0);
      await waitFor("paused", async () => (await status()).control?.operator_paused === true);
      first.child.kill("SIGKILL");
      await first.done.catch(() => undefined);
      // Its lock would expire within 30 s; the restart need not wait for that here.
      await client.del("ai:backfill:lock");

      const second = spawnCli(args);
      runs.push(second);
      await waitFor("the restart's status", async () => {
        const json = await status();
        return json.holder?.pid === second.child.pid && json.phase === "running";
      });
      assert.match(second.stderrSoFar(), /starting paused: the run this one takes over from/);
      const json = await status();
      assert.equal(json.rate.paused, true);
      const frozen = await countKeys(client, "ai:job:*");
      await new Promise((resolve) => setTimeout(resolve, 1500));
      assert.ok((await countKeys(client, "ai:job:*")) - frozen <= 100, "no progress while paused");
      assert.equal((await runCli(["resume", ...common])).code, 0);
      assert.equal((await runCli(["set-rps", "0", ...common])).code, 0);
      const result = await second.done;
      assert.equal(result.code, 0, result.stderr);
      assert.equal(JSON.parse(result.stdout).completed, true);
    } finally {
      await stopAll(runs);
    }
  });
});
