import assert from "node:assert/strict";
import { delay } from "../src/async/delay.ts";
import {
  loadDelta,
  othersActiveIn,
  parseConnectedClients,
  parseCpuMicros,
  parseOwnMicros,
  readLoadCounters,
} from "../src/control/server_load.ts";
import { NodeHealth } from "../src/control/health_check.ts";
import { Redis } from "../src/redis/ioredis.ts";
import { startRedis, withRedis } from "./support/redis_server.ts";

Deno.test("server load: INFO cpu's main thread, else the process; commandstats of the backfill's scripts", () => {
  const cpu = "# CPU\r\nused_cpu_sys:9.5\r\nused_cpu_user:9.5\r\n" +
    "used_cpu_sys_main_thread:1.250000\r\nused_cpu_user_main_thread:0.000125\r\n";
  assert.equal(parseCpuMicros(cpu), 1_250_125);
  assert.equal(parseCpuMicros("used_cpu_sys:1.5\r\nused_cpu_user:0.5\r\n"), 2_000_000);
  assert.equal(parseCpuMicros("# CPU\r\n"), undefined);
  const stats = [
    "# Commandstats",
    "cmdstat_get:calls=9,usec=900,usec_per_call=100.00,rejected_calls=0,failed_calls=0",
    "cmdstat_evalsha:calls=3,usec=300,usec_per_call=100.00,rejected_calls=0,failed_calls=0",
    "cmdstat_evalsha_ro:calls=1,usec=40,usec_per_call=40.00,rejected_calls=0,failed_calls=0",
    // A script's own commands (the timed SCAN's SCAN too) are inside its time already.
    "cmdstat_scan:calls=2,usec=5,usec_per_call=2.50,rejected_calls=0,failed_calls=0",
    "cmdstat_copy:calls=3,usec=30,usec_per_call=10.00,rejected_calls=0,failed_calls=0",
    "cmdstat_script|load:calls=1,usec=70,usec_per_call=70.00,rejected_calls=0,failed_calls=0",
  ].join("\r\n");
  assert.equal(parseOwnMicros(stats), 340);
});

Deno.test("server load: an interval is the difference of two readings; a restart gives none", () => {
  const before = { timeMicros: 1_000_000, cpuMicros: 500, ownMicros: 100 };
  assert.deepEqual(
    loadDelta(before, { timeMicros: 1_200_000, cpuMicros: 100_500, ownMicros: 40_100 }),
    { elapsedMicros: 200_000, busyMicros: 100_000, ownMicros: 40_000 },
  );
  assert.equal(
    loadDelta(before, {
      timeMicros: 1_200_000,
      cpuMicros: 600,
      ownMicros: 100,
      othersActive: false,
    })?.othersActive,
    false,
    "whether others are active is the later reading's",
  );
  assert.equal(
    loadDelta(before, { timeMicros: 1_200_000, cpuMicros: 10, ownMicros: 0 }),
    undefined,
  );
  assert.equal(loadDelta(before, before), undefined);
});

Deno.test("server load: CLIENT LIST: another client active is one not named backfill nor Sentinel's, idle ≤ 1 s or waiting", () => {
  const line = (fields: string) =>
    `id=7 addr=127.0.0.1:1 laddr=127.0.0.1:2 fd=8 age=9 db=0 sub=0 psub=0 multi=-1 ${fields} ` +
    "obl=0 oll=0 omem=0 events=r user=default redir=-1 resp=2";
  const own = line("name=backfill idle=0 flags=N qbuf=26 cmd=client|list");
  assert.equal(othersActiveIn(own + "\n"), false, "only the backfill's own connections");
  assert.equal(othersActiveIn([own, line("name= idle=0 flags=N qbuf=0 cmd=get")].join("\n")), true);
  assert.equal(othersActiveIn(line("name=app idle=1 flags=N qbuf=0 cmd=get")), true);
  assert.equal(othersActiveIn(line("name=app idle=2 flags=N qbuf=0 cmd=get")), false, "idle");
  assert.equal(othersActiveIn(line("name= idle=5 flags=N qbuf=30 cmd=get")), true, "waiting");
  assert.equal(
    othersActiveIn(line("name=sentinel-1a2b3c4d-cmd idle=0 flags=N qbuf=0 cmd=ping")),
    false,
    "a Sentinel's link",
  );
  assert.equal(othersActiveIn(line("name= idle=0 flags=b qbuf=0 cmd=blpop")), false, "blocked");
  assert.equal(othersActiveIn(""), false);
  assert.equal(parseConnectedClients("# Clients\r\nconnected_clients:12\r\n"), 12);
  assert.equal(parseConnectedClients("# Clients\r\n"), undefined);
});

Deno.test("server load: a real Redis: other clients show while active, not while idle or too many", async () => {
  await withRedis(async (server) => {
    const own = new Redis({ port: server.port, lazyConnect: true, connectionName: "backfill" });
    await own.connect();
    const app = server.client();
    try {
      await app.ping();
      const active = await readLoadCounters(own);
      assert.equal(active?.othersActive, true, "the application just sent a command");
      assert.ok((active?.connectedClients ?? 0) >= 2);
      // Idle for over 2 s by Redis's clock (its idle field has a resolution of a second).
      await delay(3100);
      assert.equal((await readLoadCounters(own))?.othersActive, false);
      // Too many connections to list: not read, so unknown (the pace counts that as shared).
      const many = await readLoadCounters(own, 1000);
      assert.equal(many?.othersActive, undefined);
      // A user whose ACL refuses CLIENT LIST still gets the rest of the reading.
      await app.call("ACL", "SETUSER", "nolist", "on", ">pw", "~*", "+@all", "-client|list");
      const limited = new Redis({
        port: server.port,
        username: "nolist",
        password: "pw",
        lazyConnect: true,
        connectionName: "backfill",
      });
      await limited.connect();
      const refused = await readLoadCounters(limited);
      limited.disconnect();
      assert.ok(refused && refused.cpuMicros > 0);
      assert.equal(refused.othersActive, undefined);
    } finally {
      own.disconnect();
      app.disconnect();
    }
  });
});

Deno.test("server load: a real Redis: a busy script shows as busy time and as the backfill's own", async () => {
  await withRedis(async (_server, client) => {
    const first = await readLoadCounters(client);
    assert.ok(first);
    // 50 ms of Lua on Redis's main thread (a busy loop: CPU, not a sleep).
    await client.eval(
      "local t0 = redis.call('TIME') repeat local t = redis.call('TIME') " +
        "until (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) >= 50000 return 1",
      0,
    );
    const second = await readLoadCounters(client);
    const delta = loadDelta(first, second!);
    assert.ok(delta, "an interval");
    assert.ok(delta.ownMicros >= 50_000, `own ${delta.ownMicros} µs`);
    // Redis's main thread was on the CPU for part of those 50 ms at least (on a busy 2-core box
    // the OS runs others in between: CPU time, not wall time).
    assert.ok(delta.busyMicros >= 5_000, `busy ${delta.busyMicros} µs`);
    assert.ok(delta.elapsedMicros >= 50_000, `elapsed ${delta.elapsedMicros} µs`);
  });
});

Deno.test("node health: INFO refused is no reading but a live node; a stopped one is down once", async () => {
  const server = await startRedis();
  const admin = server.client();
  await admin.call("ACL", "SETUSER", "noinfo", "on", ">pw", "~*", "&*", "+@all", "-info");
  const client = new Redis({
    port: server.port,
    username: "noinfo",
    password: "pw",
    // A lost server fails a command at once (as the run's own connection is set up to).
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    lazyConnect: true,
  });
  await client.connect();
  const events: string[] = [];
  const halt = new AbortController();
  try {
    const health = await NodeHealth.start({
      node: "n",
      client,
      signal: halt.signal,
      replicaLag: { kind: "off" },
      observer: {
        onRedisReply: () => events.push("reply"),
        onRedisDown: ({ reason }) => events.push(`down ${reason}`),
      },
    });
    assert.equal(await health.readLoad(), undefined);
    assert.equal(await health.readLoad(), undefined);
    assert.deepEqual(events, ["reply", "reply"], "refused, yet it answered");
    await admin.call("ACL", "SETUSER", "noinfo", "+info");
    await health.readLoad();
    assert.ok(await health.readLoad(), "a reading once INFO is allowed");
    events.length = 0;
    await server.stop();
    await health.readLoad();
    await health.readLoad();
    assert.equal(events.filter((e) => e.startsWith("down")).length, 1, events.join(", "));
  } finally {
    halt.abort();
    client.disconnect();
    admin.disconnect();
    await server.stop().catch(() => {});
  }
});
