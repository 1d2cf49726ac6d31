import assert from "node:assert/strict";
import { parseCommand } from "../src/cli/args.ts";
import { UsageError } from "../src/errors.ts";

function run(argv: string[], env = {}) {
  const command = parseCommand(argv, env);
  assert.equal(command.kind, "run");
  return (command as Extract<typeof command, { kind: "run" }>).options;
}

function usage(argv: string[], pattern: RegExp) {
  assert.throws(() => parseCommand(argv), (error: unknown) => {
    assert.ok(error instanceof UsageError, `expected UsageError, got ${error}`);
    assert.equal(error.exitCode, 2);
    assert.match(error.message, pattern);
    assert.ok(!error.message.includes("\n"), "one line");
    return true;
  });
}

Deno.test("defaults are the documented ones", () => {
  const options = run(["--dry-run"]);
  assert.equal(options.mode, "dry-run");
  assert.equal(options.rps, 100);
  assert.equal(options.batch, 500);
  assert.equal(options.progressKey, "ai:backfill");
  assert.equal(options.maxKeys, undefined);
  assert.equal(options.cursor, undefined);
  assert.deepEqual(options.redisUrls, ["redis://127.0.0.1:6379"]);
  assert.equal(options.progressInterval, 10);
  assert.equal(options.maxMemoryPct, 90);
  assert.equal(options.maxOutage, 60);
  assert.equal(options.metricsWorkspaceLabel, true);
  assert.equal(options.keys.isDefaultRule, true);
  assert.equal(options.maxCallMs, 0.25);
  assert.equal(options.callClock, "auto");
  assert.equal(options.maxLatencyMs, 0.5);
  assert.equal(options.criticalLoadPct, 90);
  assert.deepEqual(options.maxReplicaLag, { kind: "bytes", bytes: 16 * 1024 * 1024 });
  assert.equal(options.waitLockSeconds, 45);
});

Deno.test("throttle and lock flags: values, and 0 where 0 means off", () => {
  const options = run([
    "--execute",
    "--max-call-ms",
    "1.5",
    "--max-latency",
    "0",
    "--max-replica-lag",
    "10s",
    "--wait-lock",
    "0",
    "--call-clock",
    "client",
    "--critical-load",
    "75",
  ]);
  assert.equal(options.criticalLoadPct, 75);
  assert.equal(options.maxCallMs, 1.5);
  assert.equal(options.callClock, "client");
  assert.equal(options.maxLatencyMs, 0);
  assert.deepEqual(options.maxReplicaLag, { kind: "seconds", seconds: 10 });
  assert.equal(options.waitLockSeconds, 0);
  assert.deepEqual(run(["--execute", "--max-replica-lag", "0"]).maxReplicaLag, { kind: "off" });
});

Deno.test("control subcommands: actions, connection flags, progress key", () => {
  const control = (argv: string[]) => {
    const command = parseCommand(argv, { REDIS_URL: "redis://h:1" });
    assert.equal(command.kind, "control");
    return (command as Extract<typeof command, { kind: "control" }>).options;
  };
  assert.deepEqual(control(["pause"]).action, { kind: "pause" });
  assert.deepEqual(control(["resume"]).action, { kind: "resume" });
  assert.deepEqual(control(["stop"]).action, { kind: "stop" });
  assert.deepEqual(control(["set-rps", "250"]).action, { kind: "set-rps", rps: 250 });
  assert.deepEqual(control(["set-rps", "0"]).action, { kind: "set-rps", rps: 0 });
  const status = control([
    "status",
    "--json",
    "--progress-key",
    "p:x",
    "--redis-url",
    "redis://a:2",
  ]);
  assert.deepEqual(status.action, { kind: "status" });
  assert.equal(status.json, true);
  assert.equal(status.progressKey, "p:x");
  assert.deepEqual(status.redisUrls, ["redis://a:2"]);
  assert.deepEqual(control(["pause"]).redisUrls, ["redis://h:1"]);
  assert.equal(control(["pause"]).progressKey, "ai:backfill");
  assert.deepEqual(parseCommand(["status", "--help"]), { kind: "help", topic: "control" });
});

Deno.test("REDIS_URL is used when --redis-url is absent; the flag wins", () => {
  assert.deepEqual(run(["--execute"], { REDIS_URL: "redis://h:1" }).redisUrls, ["redis://h:1"]);
  assert.deepEqual(
    run(["--execute", "--redis-url", "redis://x:2"], { REDIS_URL: "redis://h:1" }).redisUrls,
    ["redis://x:2"],
  );
  assert.deepEqual(
    run(["--execute", "--redis-url", "redis://a:1,redis://b:2", "--redis-url", "redis://c:3"])
      .redisUrls,
    ["redis://a:1", "redis://b:2", "redis://c:3"],
  );
});

Deno.test("every run flag is parsed", () => {
  const options = run([
    "--execute",
    "--rps=0",
    "--batch",
    "1000",
    "--cursor",
    "1234",
    "--max-keys",
    "10",
    "--workspace",
    "ws-1",
    "--progress-key",
    "p:x",
    "--reset-progress",
    "--metrics-port",
    "9464",
    "--metrics-workspace-label=false",
    "--pushgateway",
    "http://pgw:9091",
    "--progress-interval",
    "0.5",
    "--max-memory-pct",
    "80",
    "--max-outage",
    "5",
    "--log-format",
    "json",
    "--quiet",
    "--json",
  ]);
  assert.equal(options.mode, "execute");
  assert.equal(options.rps, 0);
  assert.equal(options.batch, 1000);
  assert.equal(options.cursor, "1234");
  assert.equal(options.maxKeys, 10);
  assert.equal(options.workspace, "ws-1");
  assert.equal(options.progressKey, "p:x");
  assert.equal(options.resetProgress, true);
  assert.equal(options.metricsPort, 9464);
  assert.equal(options.metricsHost, undefined, "all interfaces unless --metrics-host");
  assert.equal(options.metricsLinger, 15);
  assert.equal(options.pushInterval, 30);
  assert.equal(options.metricsWorkspaceLabel, false);
  assert.equal(options.pushgateway, "http://pgw:9091");
  assert.equal(options.progressInterval, 0.5);
  assert.equal(options.maxMemoryPct, 80);
  assert.equal(options.maxOutage, 5);
  assert.equal(options.logFormat, "json");
  assert.equal(options.quiet, true);
  assert.equal(options.json, true);
});

Deno.test("bad input is a one-line usage error", async (t) => {
  const cases: [string[], RegExp][] = [
    [[], /exactly one of --dry-run or --execute/],
    [["--dry-run", "--execute"], /exactly one/],
    [["--dry-run", "--rsp", "5"], /unknown flag '--rsp'/],
    [["--dry-run", "--rps=-1"], /--rps must be an integer >= 0/],
    [["--dry-run", "--rps", "-1"], /flag '--rps' got a value starting with '-'/],
    [["--dry-run", "--rps", "1.5"], /--rps must be an integer/],
    [["--dry-run", "--rps", "ten"], /--rps must be an integer/],
    [["--dry-run", "--batch", "0"], /--batch must be an integer from 1/],
    [["--dry-run", "--max-keys", "0"], /--max-keys must be an integer >= 1/],
    [["--dry-run", "--cursor", "abc"], /--cursor must be a SCAN cursor/],
    [["--dry-run", "--workspace", "no spaces"], /--workspace .* is not a valid workspace id/],
    [["--dry-run", "--workspace-pattern", "("], /not a valid regular expression/],
    [["--dry-run", "--redis-url", "http://x"], /must start with redis:\/\//],
    [["--dry-run", "--metrics-port", "70000"], /--metrics-port must be an integer from 1 to 65535/],
    [["--dry-run", "--metrics-workspace-label=maybe"], /true or false/],
    [["--dry-run", "--pushgateway", "ftp://x"], /http/],
    [["--dry-run", "--metrics-host", "a b"], /--metrics-host must be a host name or an IP/],
    [["--dry-run", "--metrics-host", "x/y"], /--metrics-host must be a host name or an IP/],
    [["--dry-run", "--metrics-linger", "-1"], /got a value starting with '-'/],
    [["--dry-run", "--metrics-linger", "soon"], /--metrics-linger must be a number from 0/],
    [["--dry-run", "--push-interval", "1e3"], /--push-interval must be a number from 0/],
    [["--dry-run", "--max-memory-pct", "0"], /--max-memory-pct must be a number from 1 to 100/],
    [["--dry-run", "--log-format", "xml"], /text or json/],
    [["--dry-run", "extra"], /unexpected argument 'extra'/],
    [["--dry-run", "--batch"], /needs a value/],
    [["verify", "--sample", "0"], /--sample must be an integer >= 1/],
    [["verify", "--min-parity", "101"], /--min-parity must be a number from 0 to 100/],
    [["verify", "--execute"], /unknown flag '--execute'/],
    [["--execute", "--max-call-ms", "0"], /--max-call-ms must be a number > 0/],
    [["--execute", "--max-call-ms", "x"], /--max-call-ms must be a number/],
    [["--execute", "--call-clock", "server"], /--call-clock must be auto or client, got 'server'/],
    [["--execute", "--max-latency=-1"], /--max-latency must be a number >= 0, got '-1'/],
    [["--execute", "--max-latency", "-1"], /flag '--max-latency' got a value starting with '-'/],
    [["--execute", "--critical-load", "0"], /--critical-load must be a number from 1 to 100/],
    [["--execute", "--critical-load", "101"], /--critical-load must be a number from 1 to 100/],
    [["verify", "--max-latency", "1"], /--max-latency needs --full/],
    [["verify", "--critical-load", "50"], /--critical-load needs --full/],
    [["--execute", "--max-replica-lag", "lots"], /--max-replica-lag must be bytes .* or seconds/],
    [["--execute", "--max-replica-lag", "5x"], /--max-replica-lag must be bytes/],
    [["--execute", "--wait-lock", "soon"], /--wait-lock must be a number >= 0/],
    [["--execute", "--shard", "2/2"], /--shard must be I\/N with whole numbers 0 <= I < N/],
    [["--execute", "--shard", "0/0"], /--shard must be I\/N/],
    [["verify", "--wait-lock", "5"], /--wait-lock needs --full/],
    [["verify", "--full", "--wait-lock", "x"], /--wait-lock must be a number >= 0/],
    [["verify", "--max-call-ms", "0.5"], /--max-call-ms needs --full/],
    [["verify", "--full", "--max-call-ms", "0"], /--max-call-ms must be a number > 0/],
    [["verify", "--call-clock", "client"], /--call-clock needs --full/],
    [["verify", "--full", "--call-clock", ""], /--call-clock must be auto or client/],
    [["set-rps", "-1"], /set-rps needs a whole number >= 0 \(0 = no cap\), got '-1'/],
    [["set-rps", "abc"], /set-rps needs a whole number >= 0.*got 'abc'/],
    [["set-rps", "1.5"], /set-rps needs a whole number/],
    [["set-rps"], /set-rps needs a rate/],
    [["pause", "now"], /unexpected argument 'now'/],
    [["pause", "--json"], /--json is for status only/],
    [["stop", "--rps", "5"], /unknown flag '--rps' for stop/],
    [["status", "--redis-url", "http://x"], /must start with redis:\/\//],
  ];
  for (const [argv, pattern] of cases) {
    await t.step(argv.join(" ") || "(nothing)", () => usage(argv, pattern));
  }
});

Deno.test("telemetry flags: host, linger and push interval", () => {
  const command = parseCommand([
    "--execute",
    "--metrics-host",
    "[::1]",
    "--metrics-linger",
    "0",
    "--push-interval",
    "2.5",
  ]);
  assert.equal(command.kind, "run");
  if (command.kind !== "run") return;
  assert.equal(command.options.metricsHost, "::1");
  assert.equal(command.options.metricsLinger, 0);
  assert.equal(command.options.pushInterval, 2.5);
});

Deno.test("a bad Redis URL never echoes its password", () => {
  for (const url of ["http://user:s3cret@host", "redis://:s3cret@"]) {
    assert.throws(() => parseCommand(["--dry-run", "--redis-url", url]), (error: unknown) => {
      assert.ok(error instanceof UsageError);
      assert.ok(!error.message.includes("s3cret"));
      return true;
    });
  }
});

Deno.test("help, version and verify", () => {
  assert.deepEqual(parseCommand(["--help"]), { kind: "help", topic: "run" });
  assert.deepEqual(parseCommand(["verify", "-h"]), { kind: "help", topic: "verify" });
  assert.deepEqual(parseCommand(["--version"]), { kind: "version" });
  const command = parseCommand(["verify", "--sample", "50", "--min-parity", "97.5"]);
  assert.equal(command.kind, "verify");
  if (command.kind !== "verify") return;
  assert.equal(command.options.sample, 50);
  assert.equal(command.options.minParity, 97.5);
  assert.equal(command.options.rps, 0);
  assert.equal(command.options.recheck, 3);
  assert.equal(command.options.ttlTolerance, 5);
  assert.equal(command.options.maxCallMs, 0.25);
  assert.equal(command.options.maxLatencyMs, 0.5);
  assert.equal(command.options.criticalLoadPct, 90);
  const full = parseCommand([
    "verify",
    "--full",
    "--max-call-ms",
    "0.5",
    "--call-clock",
    "client",
    "--max-latency",
    "0",
    "--critical-load",
    "60",
  ]);
  assert.equal(full.kind === "verify" && full.options.maxCallMs, 0.5);
  assert.equal(full.kind === "verify" && full.options.maxLatencyMs, 0);
  assert.equal(full.kind === "verify" && full.options.criticalLoadPct, 60);
  assert.equal(full.kind === "verify" && full.options.callClock, "client");
});
