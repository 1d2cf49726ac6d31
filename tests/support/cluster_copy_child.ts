/**
 * A process that copies one job with the real cluster copy and stops for good right after its
 * WRITE, the way a kill -9 between WRITE and RECHECK leaves it (tests/cluster_crash_test.ts). The
 * stop is made here, on the test's side of the connection: every node client's `callBuffer` is
 * wrapped so that the WRITE script's call waits for the test's go (a line "write" on stdin) and,
 * once Redis has answered it, nothing else is ever sent. The code under test runs unchanged.
 *
 * `deno run -A tests/support/cluster_copy_child.ts <redis-url> <job-id>`; prints `read` when the
 * WRITE is about to go out and `written` when Redis answered it.
 *
 * @module
 */
import { strategyFor } from "../../src/migrate/select.ts";
import { SCRIPTS } from "../../src/migrate/cluster/scripts.ts";
import { connectRedis } from "../../src/redis/connect.ts";
import { Redis } from "../../src/redis/ioredis.ts";
import { KeySchema } from "../../src/schema.ts";
import { oldKeyFor } from "./keys.ts";

const [url, jobId] = Deno.args;
if (url === undefined || jobId === undefined) throw new Error("usage: <redis-url> <job-id>");

const encoder = new TextEncoder();
const say = (line: string) => Deno.stdout.writeSync(encoder.encode(`${line}\n`));
const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream()).getReader();
async function until(word: string): Promise<void> {
  let buffered = "";
  while (!buffered.split("\n").includes(word)) {
    const { value, done } = await lines.read();
    if (done) throw new Error(`stdin closed before "${word}"`);
    buffered += value;
  }
}

type CallBuffer = (this: Redis, command: string, ...args: unknown[]) => Promise<unknown>;
const proto = Redis.prototype as unknown as { callBuffer: CallBuffer };
const call = proto.callBuffer;
let released = false;
proto.callBuffer = async function (command, ...args) {
  const write = (command === "EVALSHA" && args[0] === SCRIPTS.write.sha) ||
    (command === "EVAL" && args[0] === SCRIPTS.write.lua);
  if (!write) return await call.call(this, command, ...args);
  // Held once: a NOSCRIPT reply makes the runner send the same WRITE again as EVAL.
  if (!released) {
    say("read");
    await until("write");
    released = true;
  }
  await call.call(this, command, ...args);
  say("written");
  return await new Promise<never>(() => {}); // never re-checked: the test kills us here
};

const target = await connectRedis([url]);
const strategy = strategyFor(target, new KeySchema());
await strategy.init();
await strategy.migrate([oldKeyFor(jobId)], { dryRun: false });
say("finished"); // only if the copy never reached a cross-master WRITE
