/**
 * `runFullVerify` in-process against a real redis-server: a verify stopped after a checkpoint and
 * resumed (twice) reports the work time of its sessions, not more.
 */
import assert from "node:assert/strict";
import { delay } from "../src/async/delay.ts";
import type { Redis } from "../src/redis/ioredis.ts";
import { KeySchema } from "../src/schema.ts";
import { newKeyFor, oldKeyFor } from "./support/keys.ts";
import { VerifyCheckpoint, type VerifyState } from "../src/verify/full/checkpoint.ts";
import { type FullVerifyOptions, runFullVerify } from "../src/verify/full/run.ts";
import { startRedis } from "./support/redis_server.ts";

/** Old and new keys of `count` jobs, equal field for field (a finished backfill). */
async function seedMigrated(client: Redis, count: number): Promise<void> {
  const pipeline = client.pipeline();
  for (let i = 0; i < count; i++) {
    const fields = { workspace_id: "ws-a", status: "done", n: String(i) };
    pipeline.hset(oldKeyFor(`job-${i}`), fields);
    pipeline.hset(newKeyFor("ws-a", `job-${i}`), fields);
  }
  await pipeline.exec();
}

/** A checkpoint that records the stored work time and stops the session after `stopAfter` saves. */
class StoppingCheckpoint extends VerifyCheckpoint {
  readonly storedMs: number[] = [];
  #saves = 0;

  constructor(client: Redis, readonly stop: AbortController, readonly stopAfter: number) {
    super(client, "ai:backfill");
  }

  override async save(state: VerifyState, ...nodes: string[]): Promise<void> {
    await super.save(state, ...nodes);
    this.storedMs.push(state.elapsedMs);
    if (++this.#saves === this.stopAfter) this.stop.abort(new Error("stopped"));
  }
}

Deno.test("verify --full resumed twice: duration_seconds is the sessions' time, never more", async () => {
  const server = await startRedis();
  const client = server.client();
  try {
    await seedMigrated(client, 2000);
    const options: FullVerifyOptions = {
      keys: new KeySchema(),
      ttlToleranceSeconds: 1,
      recheck: 0,
      recheckDelayMs: 0,
      rps: 0,
      minParity: 100,
      orphans: false,
      resetProgress: false,
      chunkKeys: 250,
    };
    const target = {
      kind: "standalone" as const,
      client,
      masters: () => [client],
      nodeName: () => "standalone",
    };
    // Every sub-batch waits 5 ms, so a session takes measurable time.
    const limiter = { acquire: (n: number) => delay(5).then(() => n) };
    /** One session: stopped after `stopAfter` saves (0: runs to the end); its wall time. */
    const session = async (stopAfter: number) => {
      const stop = new AbortController();
      const checkpoint = new StoppingCheckpoint(client, stop, stopAfter);
      const started = performance.now();
      const report = await runFullVerify(options, {
        target,
        checkpoint,
        limiter,
        signal: stop.signal,
      }).catch((error: unknown) => {
        if (!stop.signal.aborted) throw error;
        return undefined;
      });
      return { report, checkpoint, wallMs: performance.now() - started };
    };
    const first = await session(2);
    const second = await session(2);
    const last = await session(0);
    assert.equal(first.report, undefined);
    assert.equal(second.report, undefined);
    assert.ok(last.report !== undefined);
    assert.equal(last.report.counts.matched, 2000);
    assert.equal(last.report.resumed, true);
    // What is stored after each session is the total so far (the next session starts from it).
    const storedFirst = first.checkpoint.storedMs.at(-1)!;
    const storedSecond = second.checkpoint.storedMs.at(-1)!;
    assert.ok(storedFirst <= first.wallMs, `${storedFirst} ≤ ${first.wallMs}`);
    assert.ok(storedSecond > storedFirst, "the second session's time is added");
    assert.ok(storedSecond <= first.wallMs + second.wallMs);
    // The final duration: the stored total plus this session, once (1 ms of rounding).
    const durationMs = last.report.duration_seconds * 1000;
    const sessionsMs = first.wallMs + second.wallMs + last.wallMs;
    assert.ok(
      durationMs <= sessionsMs + 1,
      `duration ${durationMs} ms > sessions ${sessionsMs} ms`,
    );
    assert.ok(
      durationMs >= storedSecond + last.wallMs / 2,
      `duration ${durationMs} ms leaves out this session (${last.wallMs} ms)`,
    );
  } finally {
    client.disconnect();
    await server.stop();
  }
});
