/**
 * classify(): the one reading of Redis and ioredis error text. Unit cases for each kind, and the
 * real EXECABORT a checkpoint save gets from a Redis that is out of memory.
 */
import { KeySchema } from "../src/schema.ts";
import assert from "node:assert/strict";
import { CheckpointStore } from "../src/run/checkpointer.ts";
import { classify, KeyReplyError, ServerChangedError } from "../src/redis/errors.ts";
import { KeyRetry } from "../src/run/copier.ts";
import { silentLogger } from "../src/run_events.ts";
import { withRedis } from "./support/redis_server.ts";

const OOM = "OOM command not allowed when used memory > 'maxmemory'.";

Deno.test("classify: reply codes become kinds; only availability errors are outages", () => {
  const cases: [string, string, boolean][] = [
    [OOM, "oom", false],
    ["BUSY Redis is busy running a script.", "busy", true],
    ["NOSCRIPT No matching script. Please use EVAL.", "noscript", false],
    ["MOVED 3999 127.0.0.1:6381", "moved", false],
    ["ASK 3999 127.0.0.1:6381", "ask", false],
    ["WRONGTYPE Operation against a key holding the wrong kind of value", "wrongtype", false],
    ["READONLY You can't write against a read only replica.", "readonly", true],
    ["LOADING Redis is loading the dataset in memory", "loading", true],
    ["MASTERDOWN Link with MASTER is down", "masterdown", true],
    ["CLUSTERDOWN The cluster is down", "clusterdown", true],
    ["TRYAGAIN Multiple keys request during rehashing of slot", "tryagain", true],
    ["Connection is closed.", "outage", true],
    ["connect ECONNREFUSED 127.0.0.1:1", "outage", true],
    ["WRONGPASS invalid username-password pair or user is disabled.", "credentials", false],
    ["ERR invalid password", "credentials", false],
    ["self-signed certificate in certificate chain", "tls", false],
    ["ERR unknown command 'FOO'", "other", false],
    ["Socket timeout. Expecting data, but didn't receive any in 5000ms.", "outage", true],
    ["Connection refused (os error 111)", "outage", true],
  ];
  for (const [message, kind, outage] of cases) {
    const got = classify(new Error(message));
    assert.deepEqual([got.kind, got.outage], [kind, outage], message);
  }
  assert.equal(classify(new Error("connect ECONNREFUSED 127.0.0.1:1")).code, "ECONNREFUSED");
  assert.equal(classify(new Error("Connection is closed.")).code, "connection closed");
  assert.equal(classify("not an error").kind, "other");
  const changed = classify(new ServerChangedError("127.0.0.1:6379"));
  assert.deepEqual([changed.kind, changed.code, changed.outage], ["outage", "node changed", true]);
  // A code a script reported for one key: the node's outage when the reply code is one.
  const perKey = (code: string) => classify(new KeyReplyError(code)).outage;
  assert.deepEqual(["READONLY", "BUSY", "LOADING", "OOM", "CHANGED", ""].map(perKey), [
    true,
    true,
    true,
    false,
    false,
    false,
  ]);
});

Deno.test("classify: an EXECABORT is its cause, from previousErrors or from the reply text", () => {
  for (
    const [cause, kind, outage] of [[OOM, "oom", false], ["BUSY x", "busy", true], [
      "READONLY x",
      "readonly",
      true,
    ], ["LOADING x", "loading", true]] as const
  ) {
    const inText = classify(new Error(`EXECABORT Transaction discarded because of: ${cause}`));
    assert.deepEqual([inText.kind, inText.outage, inText.inTransaction], [kind, outage, true]);
    const listed = Object.assign(
      new Error("EXECABORT Transaction discarded because of previous errors."),
      { previousErrors: [new Error(cause)] },
    );
    assert.equal(classify(listed).kind, kind);
  }
  const bare = classify(new Error("EXECABORT Transaction discarded because of previous errors."));
  assert.deepEqual([bare.kind, bare.code], ["execabort", "EXECABORT"]);
});

Deno.test("classify: a cluster's last redirection error names the kind", () => {
  const error = new Error("Too many Cluster redirections. Last error: ReplyError: MOVED 1 h:1");
  assert.deepEqual([classify(error).kind, classify(error).code], ["moved", "MOVED"]);
});

Deno.test("a checkpoint save refused for memory is an OOM wait, not an internal error", async () => {
  await withRedis(async (server, client) => {
    const store = new CheckpointStore(client, "ai:backfill");
    const checkpoint = { cursor: "12", runId: "r", params: "p" };
    await client.config("SET", "maxmemory", "1");
    const refused = await store.save("", checkpoint).then(() => undefined, (e: unknown) => e);
    assert.ok(refused instanceof Error, "the save must fail while Redis is full");
    assert.equal(classify(refused).kind, "oom", (refused as Error).message);
    // The engine's wait: it backs off until Redis accepts the write again.
    const retry = new KeyRetry({
      strategy: { migrate: () => Promise.resolve([]) },
      migrate: { dryRun: false },
      gate: { settle: () => Promise.resolve() },
      logger: silentLogger,
      maxOutageMs: 10_000,
      keys: new KeySchema(),
    });
    const saved = retry.untilWritable(server.url, () => store.save("", checkpoint));
    await new Promise((resolve) => setTimeout(resolve, 300));
    await client.config("SET", "maxmemory", "0");
    await saved;
    assert.equal(await client.get("ai:backfill:cursor"), "12");
  });
});

Deno.test("an EXECABORT that names OOM only in its text is waited out, not thrown", async () => {
  // What ioredis reports when Redis refuses the EXEC itself (memory crossed the bound between
  // queueing and EXEC): no previousErrors, the cause only in the reply text.
  let calls = 0;
  const retry = new KeyRetry({
    strategy: { migrate: () => Promise.resolve([]) },
    migrate: { dryRun: false },
    gate: { settle: () => Promise.resolve() },
    logger: silentLogger,
    maxOutageMs: 10_000,
    keys: new KeySchema(),
  });
  const saved = await retry.untilWritable("127.0.0.1:6379", () => {
    calls++;
    if (calls === 1) {
      return Promise.reject(new Error(`EXECABORT Transaction discarded because of: ${OOM}`));
    }
    return Promise.resolve("saved");
  });
  assert.deepEqual([saved, calls], ["saved", 2]);
});
