/**
 * The live-control subcommands as CLI subprocesses against a real redis-server. The run's side is
 * played by the module the engine uses (control/remote.ts): it publishes the status and obeys.
 */
import assert from "node:assert/strict";
import {
  type ControlCommand,
  controlKey,
  openControl,
  readStatus,
  renderStatus,
  statusKey,
  watchControl,
  writeStatus,
} from "../src/control/remote.ts";
import { runCli, waitFor } from "./support/cli.ts";
import { withRedis } from "./support/redis_server.ts";
import { writeCounter } from "./support/seed.ts";

const PUBLISHER = new URL("./support/status_publisher.ts", import.meta.url).pathname;

Deno.test("status with no run: says so plainly, in text and JSON, and writes nothing", async () => {
  await withRedis(async (server, client) => {
    const before = await writeCounter(client);
    const text = await runCli(["status", "--redis-url", server.url]);
    assert.equal(text.code, 0, text.stderr);
    assert.equal(text.stdout, "no run is active (no status published)\n");
    const json = await runCli(["status", "--json", "--redis-url", server.url]);
    assert.deepEqual(JSON.parse(json.stdout), { state: "none", active: false });
    assert.equal(await writeCounter(client), before);
  });
});

Deno.test("status of a live run, then stale once its publisher is killed -9", async () => {
  await withRedis(async (server, client) => {
    const publisher = new Deno.Command(Deno.execPath(), {
      args: ["run", "-q", "--allow-all", PUBLISHER, server.url, "p:live"],
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      await waitFor("a status", async () => (await client.exists("p:live:status")) === 1);
      const text = await runCli(["status", "--progress-key", "p:live", "--redis-url", server.url]);
      assert.equal(text.code, 0, text.stderr);
      assert.match(
        text.stdout,
        new RegExp(
          `^active: execute, holder test-host pid ${publisher.pid}, updated [\\d.]+ s ago\n`,
        ),
      );
      assert.match(text.stdout, /rate: 800\/s \(throttled: redis_busy\), cap 1000\/s/);
      assert.match(text.stdout, /progress: scanned 250 of ~1000 \(25\.0%\), ETA 1m 30s/);
      assert.match(text.stdout, /cursors: 127\.0\.0\.1:1=42/);
      const json = await runCli([
        "status",
        "--json",
        "--progress-key",
        "p:live",
        "--redis-url",
        server.url,
      ]);
      const status = JSON.parse(json.stdout);
      assert.equal(status.state, "active");
      assert.equal(status.holder.pid, publisher.pid);
      assert.deepEqual(status.rate, {
        rps: 800,
        cap_rps: 1000,
        paused: false,
        throttled: ["redis_busy"],
      });
      assert.equal(status.eta_seconds, 90);
      assert.match(status.updated_at, /^\d{4}-\d\d-\d\dT/);
    } finally {
      publisher.kill("SIGKILL");
      await publisher.status;
    }
    // Another progress key sees nothing of it.
    assert.match((await runCli(["status", "--redis-url", server.url])).stdout, /no run is active/);
    await new Promise((resolve) => setTimeout(resolve, 6500));
    const stale = await runCli(["status", "--progress-key", "p:live", "--redis-url", server.url]);
    assert.match(
      stale.stdout,
      new RegExp(`^stale: last update \\d+ s ago \\(holder test-host pid ${publisher.pid}\\)`),
    );
    const json = await runCli([
      "status",
      "--json",
      "--progress-key",
      "p:live",
      "--redis-url",
      server.url,
    ]);
    assert.equal(JSON.parse(json.stdout).state, "stale");
    assert.equal(JSON.parse(json.stdout).active, false);
    assert.ok(JSON.parse(json.stdout).age_seconds >= 6);
  });
});

Deno.test("pause, set-rps, resume and stop reach a watching run within a second; junk is ignored once", async () => {
  await withRedis(async (server, client) => {
    const controller = new AbortController();
    const cli = (...args: string[]) => runCli([...args, "--redis-url", server.url]);
    const obeyed: ControlCommand[] = [];
    const ignored: string[] = [];
    // The run's status, refreshed before each command whose answer names the run: a busy
    // machine may take longer than the staleness bound between two commands.
    const live = () =>
      writeStatus(client, "ai:backfill", {
        mode: "execute",
        phase: "running",
        holder: { host: "h1", pid: 4242 },
        started_at: new Date().toISOString(),
        rate: { rps: 100, cap_rps: 100, paused: false, throttled: [] },
        counts: {},
        estimated_total: 0,
        eta_seconds: null,
        cursors: {},
      });
    await live();
    // A command left by an earlier run (an older version's plain value too) is not obeyed by a
    // run that starts after it.
    await client.set(controlKey("ai:backfill"), "set-rps 0");
    assert.equal((await cli("set-rps", "0")).code, 0, "replaces the plain value");
    const last = async () => {
      const [entry] = await client.xrevrange(controlKey("ai:backfill"), "+", "-", "COUNT", 1);
      return entry?.[1].join(" ");
    };
    const watching = watchControl(client, "ai:backfill", {
      opening: await openControl(client, "ai:backfill"),
      signal: controller.signal,
      intervalMs: 100,
      onCommand: (command) => obeyed.push(command),
      onIgnored: ({ value, problem }) => ignored.push(`${value}: ${problem}`),
    });
    try {
      await live();
      const pause = await cli("pause");
      assert.equal(pause.code, 0, pause.stderr);
      assert.equal(
        pause.stdout,
        "pause written to ai:backfill:control; the run (h1 pid 4242) pauses within ~1 s\n",
      );
      await waitFor("pause obeyed", () => obeyed.length === 1, 5000);
      assert.deepEqual(obeyed[0], { kind: "pause" });
      await live();
      const rps = await cli("set-rps", "250");
      assert.match(
        rps.stdout,
        /^set-rps 250 written to ai:backfill:control; .* caps its rate at 250\/s/,
      );
      await waitFor("set-rps obeyed", () => obeyed.length === 2, 5000);
      assert.deepEqual(obeyed[1], { kind: "set-rps", rps: 250 });

      // Bad input: exit 2, nothing written (the control key keeps its value).
      const before = await writeCounter(client);
      for (const bad of [["set-rps", "-1"], ["set-rps", "abc"]]) {
        const refused = await cli(...bad);
        assert.equal(refused.code, 2, bad.join(" "));
        assert.match(refused.stderr, /^error: set-rps needs a whole number >= 0/);
        assert.equal(refused.stderr.trim().split("\n").length, 1);
      }
      assert.equal(await writeCounter(client), before);
      assert.equal(await last(), "command set-rps 250");

      // Someone writes junk by hand: one log line, however often it is read, and no crash.
      await client.xadd(controlKey("ai:backfill"), "*", "command", "explode\nnow");
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.deepEqual(ignored, [
        "explode?now: not a known command (pause, resume, set-rps N, stop)",
      ]);

      await cli("resume");
      await waitFor("resume obeyed", () => obeyed.length === 3, 5000);
      await live();
      const stop = await cli("stop");
      assert.match(stop.stdout, /stops gracefully \(checkpoint, summary\) within ~1 s/);
      await waitFor("stop obeyed", () => obeyed.length === 4, 5000);
      assert.deepEqual(obeyed.slice(2), [{ kind: "resume" }, { kind: "stop" }]);
      // No reader removes a command: every runner of the progress key must read it too.
      assert.equal(await last(), "command stop");
      assert.equal(await client.xlen(controlKey("ai:backfill")), 6);
    } finally {
      controller.abort();
      await watching;
    }
    assert.equal(obeyed.length, 4, "nothing obeyed twice");
  });
});

Deno.test("control writes with no run active say that nothing obeys them", async () => {
  await withRedis(async (server, client) => {
    const stop = await runCli(["stop", "--progress-key", "p:idle", "--redis-url", server.url]);
    assert.equal(stop.code, 0);
    assert.equal(
      stop.stdout,
      "stop written to p:idle:control; no run is active: nothing obeys it (a command reaches " +
        "only the runs alive when it is issued)\n",
    );
    const pause = await runCli(["pause", "--progress-key", "p:idle", "--redis-url", server.url]);
    assert.match(pause.stdout, /no run is active: nothing obeys it/);
    // A later run starts reading after them: they need no expiry.
    assert.equal(await client.xlen("p:idle:control"), 2);
  });
});

Deno.test("a finished run's last status reads as finished, not active", async () => {
  await withRedis(async (_server, client) => {
    await writeStatus(client, "p:done", {
      mode: "dry-run",
      phase: "finished",
      holder: { host: "h2", pid: 7 },
      started_at: new Date().toISOString(),
      rate: { rps: 0, cap_rps: 0, paused: false, throttled: [] },
      counts: { scanned: 10 },
      estimated_total: 10,
      eta_seconds: 0,
      cursors: {},
    });
    const read = await readStatus(client, "p:done");
    assert.equal(read?.state, "finished");
    assert.match(
      renderStatus(read),
      /^no run is active; the last run \(holder h2 pid 7\) finished \d+ s ago/,
    );
    assert.ok((await client.pttl(statusKey("p:done"))) > 290_000);
    await client.set(statusKey("p:junk"), "not json");
    assert.equal(await readStatus(client, "p:junk"), undefined);
  });
});

Deno.test("a watcher whose opening read failed opens the stream at its first read; back-to-back commands all arrive", async () => {
  await withRedis(async (_server, client) => {
    const key = controlKey("p:late");
    await client.xadd(key, "*", "command", "stop");
    const obeyed: ControlCommand[] = [];
    const controller = new AbortController();
    const watching = watchControl(client, "p:late", {
      signal: controller.signal,
      intervalMs: 50,
      onCommand: (command) => obeyed.push(command),
    });
    try {
      await new Promise((resolve) => setTimeout(resolve, 200));
      // Commands issued back to back all arrive, in order (a pause is not lost to a set-rps).
      await client.xadd(key, "*", "command", "pause");
      await client.xadd(key, "*", "command", "set-rps 7");
      await waitFor("the new entries", () => obeyed.length === 2, 5000);
      assert.deepEqual(obeyed, [{ kind: "pause" }, { kind: "set-rps", rps: 7 }]);
    } finally {
      controller.abort();
      await watching;
    }
  });
});
