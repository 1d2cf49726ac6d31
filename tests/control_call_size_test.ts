import assert from "node:assert/strict";
import { CallSizer } from "../src/control/call_size.ts";
import { decodeTimed, timedScript } from "../src/control/call_clock.ts";
import { withRedis } from "./support/redis_server.ts";

Deno.test("cold start: a few keys, then sized by the measured cost to fit --max-call-ms", () => {
  const sizer = new CallSizer({ maxCallMs: 0.25, targetShare: 1 });
  assert.equal(sizer.nextCount(), 4);
  sizer.record({ keys: 4, micros: 40 }); // 10 µs per key
  assert.equal(sizer.perKeyMicros, 10);
  assert.equal(sizer.nextCount(), 25);
});

Deno.test("fast hardware: the count cap is only a guard", () => {
  const sizer = new CallSizer({ maxCallMs: 0.25, targetShare: 1 });
  sizer.record({ keys: 4, micros: 2 });
  assert.equal(sizer.nextCount(), 100);
  assert.equal(new CallSizer({ maxCallMs: 0.25, maxKeys: 30 }).nextCount(), 4);
});

Deno.test("calls are sized to 70% of the budget: a mean cost leaves room for the dearer calls", () => {
  const sizer = new CallSizer({ maxCallMs: 0.25 });
  sizer.record({ keys: 4, micros: 40 }); // 10 µs per key: 175 µs fit
  assert.equal(sizer.nextCount(), 17);
  assert.throws(() => new CallSizer({ targetShare: 0 }), RangeError);
  assert.throws(() => new CallSizer({ targetShare: 1.5 }), RangeError);
});

Deno.test("a budget one key cannot meet still carries one key", () => {
  const sizer = new CallSizer({ maxCallMs: 0.25, targetShare: 1 });
  sizer.record({ keys: 1, micros: 5000 });
  assert.equal(sizer.nextCount(), 1);
});

Deno.test("one huge job is an outlier: it moves the estimate by a bounded step, which decays", () => {
  const sizer = new CallSizer({ maxCallMs: 0.25, targetShare: 1 });
  for (let i = 0; i < 20; i++) sizer.record({ keys: 25, micros: 250 });
  assert.equal(sizer.nextCount(), 25);
  sizer.record({ keys: 25, micros: 25 * 10 + 40_000 }); // one 50k-field job in the call
  const after = sizer.nextCount();
  assert.ok(after >= 12 && after < 25, `one outlier shrinks calls moderately: ${after}`);
  for (let i = 0; i < 15; i++) sizer.record({ keys: after, micros: after * 10 });
  assert.ok(sizer.nextCount() >= 23, `recovers: ${sizer.nextCount()}`);
});

Deno.test("a workload that really got slower is followed within a few calls", () => {
  const sizer = new CallSizer({ maxCallMs: 0.25, targetShare: 1 });
  sizer.record({ keys: 25, micros: 250 });
  for (let i = 0; i < 10; i++) {
    sizer.record({ keys: sizer.nextCount(), micros: sizer.nextCount() * 50 });
  }
  assert.ok(sizer.nextCount() <= 6, `${sizer.nextCount()}`);
});

Deno.test("empty or nonsense timings teach nothing; bad options are RangeErrors", () => {
  const sizer = new CallSizer();
  sizer.record({ keys: 0, micros: 10 });
  sizer.record({ keys: 3, micros: NaN });
  sizer.record({ keys: 3, micros: -1 });
  assert.equal(sizer.perKeyMicros, undefined);
  assert.throws(() => new CallSizer({ maxCallMs: 0 }), RangeError);
  assert.throws(() => new CallSizer({ maxKeys: 0 }), RangeError);
});

Deno.test("decodeTimed splits the reply and refuses anything else", () => {
  assert.deepEqual(decodeTimed([12, [1, 2]]), { micros: 12, result: [1, 2] });
  assert.deepEqual(decodeTimed([12]), { micros: 12, result: null });
  assert.throws(() => decodeTimed("OK"), TypeError);
  assert.throws(() => decodeTimed(["12", 1]), TypeError);
});

Deno.test("real Redis: TIME advances inside a script, and the script's time matches commandstats", async () => {
  await withRedis(async (_server, client) => {
    const busy = timedScript(`local x = 0
for i = 1, tonumber(ARGV[1]) do x = x + i end
return x`);
    await client.config("RESETSTAT");
    const small = decodeTimed<number>(await client.eval(busy, 0, 1000));
    const large = decodeTimed<number>(await client.eval(busy, 0, 3_000_000));
    assert.equal(small.result, 500500);
    assert.ok(large.micros > 2000, `a long loop reports its time: ${large.micros} µs`);
    assert.ok(large.micros > small.micros * 10);
    const stats = await client.info("commandstats");
    const usec = Number(stats.match(/cmdstat_eval:calls=2,usec=(\d+)/)?.[1]);
    // Redis's own accounting includes the script's compile and dispatch: at least the reported time.
    assert.ok(usec >= small.micros + large.micros, `${usec} >= ${small.micros + large.micros}`);
    assert.ok(usec < (small.micros + large.micros) * 1.5 + 2000, `${usec} close to it`);
  });
});

Deno.test("real Redis: writes after TIME and no-writes scripts both work", async () => {
  await withRedis(async (_server, client) => {
    const write = timedScript(`for i = 1, 200 do redis.call('SET', KEYS[1] .. i, 'v') end
return redis.call('GET', KEYS[1] .. '7')`);
    const written = decodeTimed<string>(await client.eval(write, 1, "k:"));
    assert.equal(written.result, "v");
    assert.ok(written.micros > 0);
    const readOnly = timedScript(`#!lua flags=no-writes
return redis.call('EXISTS', KEYS[1])`);
    const sha = (await client.script("LOAD", readOnly)) as string;
    const read = decodeTimed<number>(await client.call("EVALSHA_RO", sha, 1, "k:7"));
    assert.equal(read.result, 1);
    const nil = decodeTimed(await client.eval(timedScript("return nil"), 0));
    assert.equal(nil.result, null);
  });
});
