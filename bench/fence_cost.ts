/**
 * What the fence and the call record cost a standalone copy call, in Redis time: the same copy
 * script, calls of `--keys` keys over fresh old keys, alternating a call without (no lock, no
 * record) and a call with both (the run lock's GET, the record's HSET), each timed by the script
 * itself. Prints the median Redis µs per key of each, over `--rounds` calls each.
 *
 * `deno run -A bench/fence_cost.ts --port 6379 [--keys 25] [--rounds 2000]` (FLUSHALL first: it
 * writes `ai:jobs:*` and `ai:job:*` keys into db 0 of that server).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { Redis } from "../src/redis/ioredis.ts";
import { COPY_SCRIPT } from "../src/migrate/in_server.ts";
import { decodeTimed, timedScript } from "../src/control/call_clock.ts";
import { DEFAULT_WORKSPACE_LUA, KeySchema, WORKSPACE_FIELD } from "../src/schema.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    port: { type: "string" },
    keys: { type: "string", default: "25" },
    rounds: { type: "string", default: "2000" },
  },
});
const schema = new KeySchema();
const OLD_PREFIX = schema.oldPrefix.toString();
const keys = Number(values.keys);
const rounds = Number(values.rounds);
const client = new Redis({ port: Number(values.port), lazyConnect: true });
await client.connect();
await client.flushall();
await client.eval(
  `for i = 0, tonumber(ARGV[1]) - 1 do
    redis.call("HSET", "${OLD_PREFIX}b-" .. i, "${WORKSPACE_FIELD}", "ws-" .. (i % 3), "status", "queued", "payload", "p" .. i)
  end`,
  0,
  String(2 * keys * rounds),
);
await client.set(
  "ai:backfill:lock",
  JSON.stringify({ host: "h", pid: 1, token: crypto.randomUUID() }),
);
const lock = (await client.get("ai:backfill:lock"))!;
const sha = await client.script("LOAD", timedScript(COPY_SCRIPT)) as string;
const micros: Record<"without" | "with", number[]> = { without: [], with: [] };
let next = 0;
for (let round = 0; round < rounds; round++) {
  for (const variant of ["without", "with"] as const) {
    const batch = Array.from({ length: keys }, () => `${OLD_PREFIX}b-${next++}`);
    const fenced = variant === "with";
    const reply = await client.evalsha(
      sha,
      keys,
      ...batch,
      schema.luaSpec,
      "",
      DEFAULT_WORKSPACE_LUA.pattern,
      String(DEFAULT_WORKSPACE_LUA.maxLength),
      "default",
      fenced ? "ai:backfill:lock" : "",
      fenced ? lock : "",
      fenced ? "ai:backfill:calls" : "",
      fenced ? String(round % 64) : "",
      fenced ? `bench:${round}` : "",
    );
    micros[variant].push(decodeTimed(reply).micros / keys);
  }
}
client.disconnect();
const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const without = median(micros.without);
const withFence = median(micros.with);
const line = `keys/call ${keys}: without ${without.toFixed(2)} µs/key, with fence + record ` +
  `${withFence.toFixed(2)} µs/key (+${(withFence - without).toFixed(2)} µs/key, ` +
  `+${((withFence - without) * keys).toFixed(1)} µs/call)\n`;
Deno.stdout.writeSync(new TextEncoder().encode(line));
