/**
 * Live control of a real `--execute` process through the CLI subcommands: pause, status (text and
 * JSON), an unknown control value, resume, set-rps, stop (its own exit code and a checkpoint), and
 * a rerun that resumes from that checkpoint.
 */
import assert from "node:assert/strict";
import { ExitCode } from "../src/errors.ts";
import { runCli, spawnCli, waitFor } from "./support/cli.ts";
import { assertMigrated, countKeys, makeJobs, seedOld } from "./support/seed.ts";
import { withRedis } from "./support/redis_server.ts";

const P = "p:live";

Deno.test("pause, status, junk, resume, set-rps and stop drive a running --execute; a rerun resumes", async () => {
  await withRedis(async (server, client) => {
    const jobs = makeJobs(4000);
    await seedOld(client, jobs);
    const common = ["--progress-key", P, "--redis-url", server.url];
    const control = (...args: string[]) => runCli([...args, ...common]);
    const status = async () => JSON.parse((await control("status", "--json")).stdout);
    // No latency probe here: this test is about control, and a cap keeps the run long enough.
    const args = ["--execute", "--rps", "300", "--max-latency", "0", "--batch", "100", ...common];
    const run = spawnCli([...args, "--json", "--progress-interval", "1"]);
    try {
      await waitFor("a published status with progress", async () => {
        const raw = await client.get(`${P}:status`);
        return raw !== null && (JSON.parse(raw).counts.scanned ?? 0) > 0;
      });

      assert.equal((await control("pause")).code, 0);
      await waitFor("the pause in the status", async () => (await status()).rate.paused === true);
      assert.match(run.stderrSoFar(), /throttle on: paused by the operator; paused/);
      const frozen = await countKeys(client, "ai:job:*");
      await new Promise((resolve) => setTimeout(resolve, 1500));
      assert.ok((await countKeys(client, "ai:job:*")) - frozen <= 100, "no progress while paused");
      const text = await control("status");
      assert.match(text.stdout, /^active: execute, holder .+ pid \d+, updated [\d.]+ s ago\n/);
      assert.match(text.stdout, /rate: paused \(throttled: paused\), cap 300\/s/);
      assert.match(text.stdout, /cursors: 127\.0\.0\.1:\d+=\d+/);
      const json = await status();
      assert.equal(json.state, "active");
      assert.equal(json.mode, "execute");
      assert.ok(json.estimated_total >= 3000, JSON.stringify(json));

      // A value that is no command is logged and ignored; the run stays paused.
      await client.xadd(`${P}:control`, "*", "command", "pause please");
      await waitFor(
        "the ignored value",
        () => /ignored control value 'pause please'/.test(run.stderrSoFar()),
      );
      assert.equal((await status()).rate.paused, true);

      assert.equal((await control("resume")).code, 0);
      await waitFor("the resume", async () => (await status()).rate.paused === false);
      assert.equal((await control("set-rps", "50")).code, 0);
      await waitFor("the new cap", async () => (await status()).rate.cap_rps === 50);
      assert.match(run.stderrSoFar(), /operator cap set; rate 50\/s/);
      assert.ok((await status()).rate.rps <= 50);

      assert.equal((await control("stop")).code, 0);
      const result = await run.done;
      assert.equal(result.code, ExitCode.stopped, result.stderr);
      const summary = JSON.parse(result.stdout);
      assert.equal(summary.completed, false);
      assert.ok(summary.scanned < 4000);
      assert.equal(await client.exists(`${P}:cursor`), 1, "checkpoint kept");
      // Not removed (every runner reads it); the rerun below is not stopped by it.
      const [last] = await client.xrevrange(`${P}:control`, "+", "-", "COUNT", 1);
      assert.deepEqual(last?.[1], ["command", "stop"]);
      assert.match(
        await control("status").then((r) => r.stdout),
        /^no run is active; the last run/,
      );
    } finally {
      try {
        run.child.kill("SIGKILL");
      } catch {
        // already exited
      }
      await run.done.catch(() => {});
    }

    const rerun = await runCli(["--execute", "--rps", "0", "--max-latency", "0", ...common]);
    assert.equal(rerun.code, 0, rerun.stderr);
    assert.match(rerun.stderr, /Resuming from stored cursor=/);
    assert.match(
      rerun.stderr,
      /not applied: \d+ command\(s\) in p:live:control issued before this run started, the last 'stop'/,
    );
    assert.equal(await countKeys(client, "ai:job:*"), 4000);
    await assertMigrated(client, jobs);
  });
});
