/**
 * Runs the latency probe (in its worker, as a run does) against `--port` for `--seconds` and prints
 * one JSON snapshot per 100 ms on stdout. Tests start it pinned to a core with `taskset` to see what
 * the probe reads when that core is busy.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import { LatencyProbe } from "../../src/control/probe.ts";

const encoder = new TextEncoder();
const print = (row: unknown) => Deno.stdout.writeSync(encoder.encode(`${JSON.stringify(row)}\n`));
const { values } = parseArgs({
  options: { port: { type: "string" }, seconds: { type: "string" } },
});
const client = new Redis({ port: Number(values.port), lazyConnect: true });
await client.connect();
const probe = await LatencyProbe.start(client, { node: "probe", baselineSamples: 100 });
print({ ready: true, baselineMs: probe.baselineMs });
const until = performance.now() + Number(values.seconds ?? "3") * 1000;
while (performance.now() < until) {
  await new Promise((resolve) => setTimeout(resolve, 100));
  print(probe.snapshot());
}
await probe.close();
client.disconnect();
