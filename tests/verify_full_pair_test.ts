/**
 * The `pair` call of `verify --full` against a real redis-server: a pair that matches entirely
 * comes back as the workspace bytes alone (no 7-entry array), and only then; the verdicts built
 * from either form are the same as the sampled verify's rules.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { KeySchema } from "../src/schema.ts";
import { newKeyFor, oldKeyFor } from "./support/keys.ts";
import { checkJobs } from "../src/verify/pairs.ts";
import { NodeCalls } from "../src/verify/node_calls.ts";
import { withRedis } from "./support/redis_server.ts";

Deno.test("verify --full pair call: the workspace alone for a full match, the array otherwise", async () => {
  await withRedis(async (_server, client) => {
    const now = Date.now();
    const fields = { status: "done", n: "1" };
    // job id → [workspace, old expiry (ms, absolute; 0 none), new expiry, new fields]
    const jobs: Record<string, [string, number, number, Record<string, string>]> = {
      plain: ["wsA", 0, 0, fields],
      ttl_close: ["wsA", now + 60_000, now + 62_000, fields],
      ttl_far: ["wsA", now + 60_000, now + 70_000, fields],
      ttl_one_side: ["wsA", now + 60_000, 0, fields],
      values_differ: ["wsA", 0, 0, { status: "failed", n: "1" }],
      non_ascii: ["wsé", 0, 0, fields],
      rejected: ["bad_rule", 0, 0, fields],
    };
    for (const [id, [ws, oldAt, newAt, newFields]] of Object.entries(jobs)) {
      await client.hset(oldKeyFor(id), { workspace_id: ws, ...fields });
      await client.hset(newKeyFor(ws, id), { workspace_id: ws, ...newFields });
      if (oldAt > 0) await client.pexpireat(oldKeyFor(id), oldAt);
      if (newAt > 0) await client.pexpireat(newKeyFor(ws, id), newAt);
    }
    const ids = Object.keys(jobs);
    const keys = ids.map((id) => oldKeyFor(id));
    const target = { kind: "standalone" as const, client, masters: () => [client] };
    const calls = new NodeCalls(target, { toleranceMs: 5_000 });
    await calls.init();
    const entries = await calls.read(keys, "pair", { oldSide: true }) as unknown[];
    const compact = ids.filter((_, i) => !Array.isArray(entries[i]));
    assert.deepEqual(compact, ["plain", "ttl_close", "rejected"]);
    assert.deepEqual(Buffer.from(entries[0] as Uint8Array).toString(), "wsA");

    // Verdicts: the rule still decides validity of a compact entry; the others as before.
    const schema = new KeySchema({ workspacePattern: "^(ws.*)$" });
    const results = await checkJobs(keys, { calls, keys: schema, toleranceMs: 5_000 });
    const kinds = Object.fromEntries(ids.map((id, i) => [id, results[i]!.kind]));
    assert.deepEqual(kinds, {
      plain: "matched",
      ttl_close: "matched",
      ttl_far: "ttl",
      ttl_one_side: "ttl",
      values_differ: "field_differs",
      non_ascii: "matched",
      rejected: "invalid",
    });
    // --workspace: a compact entry of another workspace is filtered, not matched.
    const only = await checkJobs(keys.slice(0, 1), {
      calls,
      keys: schema,
      workspace: "wsB",
      toleranceMs: 5_000,
    });
    assert.equal(only[0]!.kind, "filtered");
  });
});

Deno.test("verify --full calls: a stop while a call waits for its window ends with the stop's reason", async () => {
  await withRedis(async (_server, client) => {
    await client.hset(oldKeyFor("j1"), { workspace_id: "wsA" });
    const target = { kind: "standalone" as const, client, masters: () => [client] };
    const stop = new AbortController();
    const calls = new NodeCalls(target, {
      callsInFlight: 1,
      shared: () => true,
      signal: stop.signal,
    });
    await calls.init();
    await calls.clockOf(client);
    // One call holds the master's only slot; the read waits behind it when the stop comes.
    let release = () => {};
    let held = () => {};
    const holding = new Promise<void>((r) => held = r);
    const holder = calls.inWindow(client, () => new Promise<void>((r) => (release = r, held())));
    await holding;
    const read = calls.read([oldKeyFor("j1")], "pair", { oldSide: true });
    await new Promise((resolve) => setTimeout(resolve, 0)); // the read is queued for the window
    const reason = new Error("stopped by SIGTERM");
    stop.abort(reason);
    await assert.rejects(read, (error) => error === reason);
    release();
    await holder;
  });
});
