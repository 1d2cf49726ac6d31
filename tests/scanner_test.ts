import assert from "node:assert/strict";
import { scanBatches, TimedScan } from "../src/control/scanner.ts";
import { OLD_MATCH } from "./support/keys.ts";
import { withRedis } from "./support/redis_server.ts";

/** Mean Redis time of SCAN since the last CONFIG RESETSTAT, in µs. */
async function scanMicros(client: { info(section: string): Promise<string> }): Promise<number> {
  const stats = await client.info("commandstats");
  return Number(stats.match(/cmdstat_scan:calls=\d+,usec=\d+,usec_per_call=([\d.]+)/)?.[1] ?? 0);
}

Deno.test("timed SCAN: COUNT sized to the call budget, every old key seen, new keys skipped", async () => {
  await withRedis(async (_server, client) => {
    // 20k old and 20k new keys: MATCH visits both, as on a store mid-migration.
    await client.eval(
      `for i = 1, 20000 do
         redis.call('HSET', 'ai:jobs:j' .. i, 'workspace_id', 'ws')
         redis.call('HSET', 'ai:job:ws:j' .. i, 'workspace_id', 'ws')
       end`,
      0,
    );
    await client.config("RESETSTAT");
    // The baseline: COUNT 1000 on every SCAN, through the same script.
    const fixedCount = new TimedScan(client, { maxCount: 1000 });
    let cursor = "0";
    do {
      cursor = (await fixedCount.scan(cursor, OLD_MATCH, 1000))[0].toString();
    } while (cursor !== "0");
    const fixed = await scanMicros(client);

    await client.config("RESETSTAT");
    const timed = new TimedScan(client, { maxCallMs: 0.1, maxCount: 1000 });
    const seen = new Set<string>();
    for await (const batch of scanBatches(timed, { match: OLD_MATCH })) {
      for (const key of batch.keys) {
        assert.ok(key.toString().startsWith("ai:jobs:"));
        seen.add(key.toString());
      }
    }
    const sized = await scanMicros(client);
    assert.equal(seen.size, 20_000);
    assert.ok(timed.nextCount() < 1000, `COUNT adapted: ${timed.nextCount()}`);
    // A fixed COUNT 1000 holds Redis several times longer than the 100 µs budget; the sized one
    // stays near it (the script's own clock misses only its dispatch).
    assert.ok(sized < fixed / 2, `sized SCAN ${sized} µs against COUNT 1000 ${fixed} µs`);
    assert.ok(sized <= 200, `sized SCAN ${sized} µs per call for a 100 µs budget`);
  });
});
