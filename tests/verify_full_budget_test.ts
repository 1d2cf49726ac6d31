/**
 * The time limit of a `verify --full` script call, against a real redis-server: a call whose own
 * clock says the next keys would take it past its limit stops early, and the rest of its keys go
 * in the next call; every key is answered once, in order.
 */
import assert from "node:assert/strict";
import { oldKeyFor } from "./support/keys.ts";
import { NodeCalls } from "../src/verify/node_calls.ts";
import { withRedis } from "./support/redis_server.ts";

Deno.test("verify --full script: a call stops at its time limit, the rest is sent again", async () => {
  await withRedis(async (_server, client) => {
    const keys = Array.from({ length: 40 }, (_, i) => oldKeyFor(`job-${i}`));
    const pipeline = client.pipeline();
    keys.forEach((key, i) => pipeline.hset(key, { workspace_id: `ws-${i}`, status: "done" }));
    await pipeline.exec();
    const target = { kind: "standalone" as const, client, masters: () => [client] };
    const read = async (callBudgetUs: number) => {
      const calls = new NodeCalls(target, { callBudgetUs });
      await calls.init();
      const entries = await calls.read(keys, "pair", { oldSide: true });
      return { calls: calls.stats.calls, workspaces: entries.map((entry) => String(entry[1])) };
    };
    const expected = keys.map((_, i) => `ws-${i}`);
    // A budget no call can keep: each call stops at its first clock reading (a quarter of its
    // keys), so the 40 keys take several calls.
    const tight = await read(1);
    assert.deepEqual(tight.workspaces, expected);
    assert.ok(tight.calls >= 5, `${tight.calls} calls`);
    // A roomy budget: one call answers them all.
    const roomy = await read(1_000_000);
    assert.deepEqual(roomy.workspaces, expected);
    assert.equal(roomy.calls, 1);
  });
});
