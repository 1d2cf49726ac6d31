/**
 * Whose clock times a script call (src/control/call_clock.ts), against a real redis-server 7.0:
 * the probe, the client's estimate of a call's Redis time (alone and queued behind another on the
 * same connection), and the backfill run timed on the client.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { CallClock, probeCallClock } from "../src/control/call_clock.ts";
import { decodeTimed, timedScript } from "../src/control/call_clock.ts";
import { InServerCopy } from "../src/migrate/in_server.ts";
import { Redis } from "../src/redis/ioredis.ts";
import { KeySchema } from "../src/schema.ts";
import { runJson } from "./support/cli.ts";
import { startRedis } from "./support/redis_server.ts";
import { makeJobs, seedOld } from "./support/seed.ts";

/** Busy-loops in Lua for about `ARGV[1]` iterations (a call of a known, real Redis time). */
const BUSY = timedScript("local x = 0 for i = 1, tonumber(ARGV[1]) do x = x + i end return x");

/** Iterations of {@linkcode BUSY} that take `targetUs` of the script's own clock here. */
async function calibrate(client: Redis, targetUs: number): Promise<number> {
  let n = 100_000;
  for (let i = 0; i < 6; i++) {
    const { micros } = decodeTimed<number>(await client.eval(BUSY, 0, n));
    n = Math.max(1000, Math.round(n * targetUs / Math.max(micros, 1)));
  }
  return n;
}

async function evalCount(client: Redis): Promise<number> {
  const line = (await client.info("commandstats")).match(/^cmdstat_eval:calls=(\d+)/m);
  return Number(line?.[1] ?? 0);
}

Deno.test("call clock: Redis 7.0 lets time pass in a script; --call-clock client skips the probe", async () => {
  const server = await startRedis();
  const client = server.client();
  try {
    const probed = await probeCallClock(client);
    assert.equal(probed.source, "script");
    assert.ok(probed.roundTripUs > 0 && probed.roundTripUs < 50_000, `${probed.roundTripUs}`);
    const before = await evalCount(client);
    const forced = await probeCallClock(client, "client");
    assert.equal(forced.source, "client");
    assert.equal(await evalCount(client), before, "no probe script with --call-clock client");
    // A user who may not run TIME (as some managed services refuse it in scripts): client.
    await client.call("ACL", "SETUSER", "notime", "on", "nopass", "+@all", "-time", "~*", "&*");
    const limited = server.client();
    try {
      await limited.call("AUTH", "notime", "x");
      assert.equal((await probeCallClock(limited)).source, "client");
    } finally {
      limited.disconnect();
    }
  } finally {
    client.disconnect();
    await server.stop();
  }
});

Deno.test("call clock: the client's estimate is of the order of the scripts' own time", async () => {
  const server = await startRedis();
  const client = server.client();
  try {
    const n = await calibrate(client, 3000);
    // Auto-pipelining writes the two calls of a round in one write, as the kernel may coalesce
    // any calls sent together: Redis reads both, runs both, then writes both replies at once, so
    // they arrive together and the first reply's round trip holds both calls' time.
    const pipelined = new Redis(server.port, { enableAutoPipelining: true });
    const clock = await probeCallClock(pipelined, "client");
    const own = (reply: unknown) => decodeTimed(reply).micros;
    const rounds = [];
    for (let round = 0; round < 10; round++) {
      rounds.push(
        await Promise.all([0, 1].map(() => clock.time(() => pipelined.eval(BUSY, 0, n), own, 1))),
      );
    }
    pipelined.disconnect();
    const calls = rounds.flat();
    const estimated = calls.reduce((total, call) => total + call.micros, 0);
    const scripts = calls.reduce((total, call) => total + own(call.value), 0);
    // In all, of the order of the scripts' own time: each charge is a moving average over the
    // last replies, and the client's own delays (which a busy machine makes anything) move it
    // either way, so only the order is checked here; the split of a burst is checked exactly on
    // a fake clock below.
    assert.ok(estimated >= 0.5 * scripts, `estimated ${estimated} µs, scripts ${scripts} µs`);
    // The script clock reads the reply.
    const script = new CallClock("script");
    const { micros } = await script.time(() => client.eval(BUSY, 0, 10), () => 42, 1);
    assert.equal(micros, 42);
  } finally {
    client.disconnect();
    await server.stop();
  }
});

Deno.test("call clock: a backfill timed on the client sizes its calls from the round trip", async () => {
  const server = await startRedis();
  const client = server.client();
  try {
    // Wide jobs (2000 fields: a copy holds Redis well over 0.25 ms each) and narrow ones.
    const wide = makeJobs(20, ["ws-wide"]).map((job) => ({
      ...job,
      fields: Object.fromEntries(Array.from({ length: 2000 }, (_, i) => [`f${i}`, `v${i}`])),
    }));
    await seedOld(client, wide);
    const copy = new InServerCopy(client, new KeySchema(), { callClock: "client" });
    await copy.init();
    assert.equal(copy.clockSource, "client");
    const keys = wide.map((job) => Buffer.from(`ai:jobs:${job.id}`));
    for (let i = 0; i < keys.length; i += copy.nextCallSize()) {
      await copy.migrate(keys.slice(i, i + copy.nextCallSize()), { dryRun: false });
    }
    // Each key alone is over the budget: one key a call. (A clock that read 0 µs would grow the
    // calls to the 100-key guard.)
    assert.equal(copy.nextCallSize(), 1);

    // The CLI: the same counts as with the script's clock, and a log line that says why.
    await client.flushall();
    await seedOld(client, makeJobs(3000));
    const run = await runJson([
      "--execute",
      "--rps",
      "0",
      "--call-clock",
      "client",
      "--redis-url",
      server.url,
    ]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.summary.migrated, 3000);
    assert.match(run.stderr, /call_clock.*--call-clock client/);
    const auto = await runJson(["--dry-run", "--rps", "0", "--redis-url", server.url]);
    assert.equal(auto.code, 0, auto.stderr);
    assert.doesNotMatch(auto.stderr, /call_clock/);
  } finally {
    client.disconnect();
    await server.stop();
  }
});

Deno.test("call clock: pipelined calls whose replies arrive together share their burst, each charged its own time", async () => {
  // A fake client clock (µs): a round trip of 100 µs, and per round two calls of 3,000 µs sent
  // together, whose replies arrive together once Redis ran both (100 + 2 × 3,000 µs later).
  let now = 0;
  const clock = new CallClock("client", 100, () => now);
  const charged: number[][] = [];
  for (let round = 0; round < 10; round++) {
    const sent = now;
    let reply!: () => void;
    const replied = new Promise<void>((resolve) => reply = resolve);
    const calls = [0, 1].map(() => clock.time(() => replied, () => 0, 1));
    now = sent + 100 + 2 * 3_000;
    reply();
    charged.push((await Promise.all(calls)).map((call) => call.micros));
    now += 500; // the client's turn-around before the next round: not Redis time
  }
  // Once the window holds a few bursts, each call is charged its own time: not the whole burst
  // for the first reply and ~0 for the second, as a per-reply split would.
  for (const micros of charged.at(-1)!) assert.ok(Math.abs(micros - 3_000) < 1, `${micros} µs`);
  const total = charged.flat().reduce((a, b) => a + b, 0);
  // In all, within a few calls' time of the scripts' (the first replies, alone in the window, are
  // charged more), never the 0 a lost burst would be.
  assert.ok(total >= 20 * 3_000 && total < 23 * 3_000, `${total} µs in all`);
});
