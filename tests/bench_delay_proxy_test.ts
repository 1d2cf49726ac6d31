import assert from "node:assert/strict";
import { startDelayProxy } from "../bench/delay_proxy.ts";
import { withRedis } from "./support/redis_server.ts";

const PING = new TextEncoder().encode("PING\r\n");

/** Sends `count` PINGs at once (pipelined) and waits for every +PONG; returns the elapsed ms. */
async function pings(port: number, count: number): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  try {
    const expected = count * "+PONG\r\n".length;
    const request = new Uint8Array(PING.length * count);
    for (let i = 0; i < count; i++) request.set(PING, i * PING.length);
    const buf = new Uint8Array(64 * 1024);
    const started = performance.now();
    await conn.write(request);
    for (let got = 0; got < expected;) {
      const n = await conn.read(buf);
      if (n === null) throw new Error("connection closed");
      got += n;
    }
    return performance.now() - started;
  } finally {
    conn.close();
  }
}

/** Median of `runs` sequential single-PING round trips, ms. */
async function rtt(port: number, runs = 41): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) times.push(await pings(port, 1));
  return times.sort((a, b) => a - b)[Math.floor(runs / 2)]!;
}

Deno.test("the delay proxy adds 2 x delay per round trip and keeps pipelining", async () => {
  await withRedis(async (server) => {
    const delayMs = 1;
    const proxy = startDelayProxy({ targetPort: server.port, delayMs });
    try {
      const base = await rtt(server.port);
      const through = await rtt(proxy.port);
      // The delay is enforced (never less); timer and scheduling slack adds a little on top.
      assert.ok(through >= base + 2 * delayMs * 0.95, `base ${base} ms, through ${through} ms`);
      assert.ok(through <= base + 2 * delayMs + 1.5, `base ${base} ms, through ${through} ms`);
      // 5,000 pipelined PINGs cost about one round trip more, not 5,000 of them.
      const pipelined = await pings(proxy.port, 5000);
      assert.ok(pipelined < 50 * 2 * delayMs, `5000 pipelined PINGs took ${pipelined} ms`);
    } finally {
      await proxy.close();
    }
  });
});

Deno.test("the delay proxy keeps byte order under many small chunks", async () => {
  await withRedis(async (server, client) => {
    const proxy = startDelayProxy({ targetPort: server.port, delayMs: 0.25 });
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
      const encoder = new TextEncoder();
      for (let i = 0; i < 200; i++) await conn.write(encoder.encode(`RPUSH order ${i}\r\n`));
      const buf = new Uint8Array(8192);
      let text = "";
      while ((text.match(/\r\n/g) ?? []).length < 200) {
        const n = await conn.read(buf);
        if (n === null) break;
        text += new TextDecoder().decode(buf.subarray(0, n));
      }
      conn.close();
      assert.deepEqual(
        await client.lrange("order", 0, -1),
        Array.from({ length: 200 }, (_, i) => String(i)),
      );
      assert.equal(text.trim().split("\r\n").at(-1), ":200");
    } finally {
      await proxy.close();
    }
  });
});
