/**
 * `verify --full`'s lanes (`src/verify/full/lanes.ts`) against real redis-server processes: the
 * lanes' names are one full SCAN's set with no key in two lanes (a static table, and one a writer
 * grows mid-verify), a lanes run counts exactly what the sub-batch path counts on tampered data,
 * and a lanes run killed with kill -9 resumes from its lane cursors to exact counts.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { SlidingWindowLimiter } from "../src/control/rate_limit.ts";
import type { Redis } from "../src/redis/ioredis.ts";
import { KeySchema } from "../src/schema.ts";
import { DEFAULT_KEYS, newKeyFor, OLD_MATCH, oldKeyFor } from "./support/keys.ts";
import { type FullCounts, zeroCounts } from "../src/verify/full/checkpoint.ts";
import { LANE_SCRIPT, laneStart, nextLaneStart } from "../src/verify/full/lane_script.ts";
import { FIRST_SHARE, LanePace } from "../src/verify/full/lane_pace.ts";
import { freshLanes, runLanes } from "../src/verify/full/lanes.ts";
import { NodeCalls } from "../src/verify/full/node_calls.ts";
import { SubBatches } from "../src/verify/full/sub_batches.ts";
import { runJson, spawnCli, waitFor } from "./support/cli.ts";
import { ranLanes } from "./support/lanes.ts";
import { startRedis } from "./support/redis_server.ts";

/** Old and new keys of jobs `from`..`to` - 1, equal field for field (a finished backfill). */
const SEED_SCRIPT = `
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) - 1 do
  local ws = "ws-" .. (i % 3)
  redis.call("HSET", "ai:jobs:job-" .. i, "workspace_id", ws, "status", "done", "n", i)
  redis.call("HSET", "ai:job:" .. ws .. ":job-" .. i, "workspace_id", ws, "status", "done", "n", i)
end
return 1`;

async function seedMigrated(client: Redis, from: number, to: number): Promise<void> {
  await client.eval(SEED_SCRIPT, 0, from, to);
}

async function fullScan(client: Redis): Promise<Set<string>> {
  const keys = new Set<string>();
  let cursor = "0";
  do {
    const [next, batch] = await client.scanBuffer(cursor, "MATCH", OLD_MATCH, "COUNT", 1000);
    for (const key of batch) keys.add(key.toString("latin1"));
    cursor = String(next);
  } while (cursor !== "0");
  return keys;
}

/** Runs every lane of `client` to its end; returns each name's lanes and the summed counts. */
async function lanesOnce(client: Redis, options: { rps?: number; onCall?: () => Promise<void> }) {
  const target = { kind: "standalone" as const, client, masters: () => [client] };
  const calls = new NodeCalls(target, { toleranceMs: 1000 });
  await calls.init();
  const rps = options.rps ?? 0;
  const limiter = new SlidingWindowLimiter(rps);
  const batches = new SubBatches({
    recheck: 0,
    recheckDelayMs: 0,
    limiter,
    rps,
    callBudgetUs: 250,
    inFlight: 4,
  });
  const lanesOf = new Map<string, number[]>();
  const counts = zeroCounts();
  let commits = 0;
  await runLanes(client, {
    cursors: freshLanes(),
    ranges: "",
    toleranceMs: 1000,
    callBudgetUs: 250,
    rps,
    limiter,
    chunkKeys: () => 500,
    onNames: (lane, names) => {
      for (const name of names) {
        const key = name.toString("latin1");
        lanesOf.set(key, [...lanesOf.get(key) ?? [], lane]);
      }
    },
  }, {
    chunk: { batches, ctx: { calls, keys: new KeySchema(), toleranceMs: 1000 } },
    calls,
    commit: async (window) => {
      commits++;
      for (const name of Object.keys(counts) as (keyof FullCounts)[]) {
        counts[name] += window.counts[name];
      }
      await options.onCall?.();
    },
  });
  return { lanesOf, counts, commits };
}

/** Keys returned by two lanes, and keys of `expected` no lane returned. */
function partitionErrors(lanesOf: Map<string, number[]>, expected: Set<string>) {
  const inTwoLanes = [...lanesOf].filter(([, lanes]) => new Set(lanes).size > 1).length;
  const missing = [...expected].filter((key) => !lanesOf.has(key)).length;
  return { inTwoLanes, missing };
}

Deno.test("lanes: their names are one full SCAN's set, no key in two lanes, exact counts", async () => {
  const server = await startRedis();
  const client = server.client();
  try {
    await seedMigrated(client, 0, 5000);
    const expected = await fullScan(client);
    assert.equal(expected.size, 5000);
    for (let run = 0; run < 3; run++) {
      const { lanesOf, counts, commits } = await lanesOnce(client, {});
      assert.deepEqual(partitionErrors(lanesOf, expected), { inTwoLanes: 0, missing: 0 });
      assert.equal(lanesOf.size, expected.size, "no key outside the full SCAN's set");
      assert.equal(counts.matched, 5000);
      assert.equal(counts.checked, 5000);
      assert.equal(counts.scan_duplicates, 0);
      assert.ok(commits > 5, `${commits} commits`);
    }
  } finally {
    client.disconnect();
    await server.stop();
  }
});

Deno.test("lanes: a table that grows mid-verify (a writer adds keys): every first key once", async () => {
  const server = await startRedis({ args: ["--enable-debug-command", "yes"] });
  const client = server.client();
  const writer = server.client();
  try {
    // 10 000 keys: a 16 384-bucket table; the writer's 24 000 more grow it twice mid-verify.
    await seedMigrated(client, 0, 5000);
    const expected = await fullScan(client);
    const sizes = async () =>
      /table size: (\d+)/.exec(String(await client.call("DEBUG", "HTSTATS", "0")))?.[1];
    const before = await sizes();
    let next = 5000;
    const { lanesOf, counts } = await lanesOnce(client, {
      rps: 4000,
      onCall: async () => {
        if (next >= 17_000) return;
        await seedMigrated(writer, next, next + 3000);
        next += 3000;
      },
    });
    assert.equal(next, 17_000, "the writer ran during the lanes");
    assert.notEqual(await sizes(), before, "the table grew");
    const { inTwoLanes, missing } = partitionErrors(lanesOf, expected);
    assert.deepEqual({ inTwoLanes, missing }, { inTwoLanes: 0, missing: 0 });
    const repeats = [...lanesOf.values()].filter((lanes) => lanes.length > 1).length;
    assert.equal(counts.scan_duplicates, repeats);
    assert.equal(counts.matched, lanesOf.size, "each key counted once");
  } finally {
    writer.disconnect();
    client.disconnect();
    await server.stop();
  }
});

/** SHA-1 of the lane script: loaded on a server only by a run that used lanes. */
/** Migrated jobs, then one key of each kind of difference and of each kind of invalid old key. */
async function seedTampered(client: Redis, url: string, count: number): Promise<void> {
  await seedMigrated(client, 0, count);
  // A valid id of the longest length (64), migrated.
  const long = "w".repeat(64);
  await client.hset(oldKeyFor("long"), "workspace_id", long, "status", "done");
  await client.hset(newKeyFor(long, "long"), "workspace_id", long, "status", "done");
  // Ids that are not UTF-8 and would all read as the same text if decoded as UTF-8: 8 keys.
  for (let b = 0x80; b < 0x88; b++) {
    const id = Buffer.from([0x6a, 0xff, b]);
    await client.hset(oldKeyFor(id), "workspace_id", "ws-0", "status", "done");
    await client.hset(newKeyFor("ws-0", id), "workspace_id", "ws-0", "status", "done");
  }
  const key = (i: number) => newKeyFor(`ws-${i % 3}`, `job-${i}`);
  await client.del(key(1)); // missing
  await client.hdel(key(2), "n"); // field_missing
  await client.hset(key(4), "status", "changed"); // field_differs
  await client.hset(key(7), "extra", "x"); // field_differs (a field only the new key has)
  await client.expire(key(3), 99_999); // ttl
  await client.expire(oldKeyFor("job-8"), 99_999); // ttl (only the old key expires)
  await client.del(key(5));
  await client.set(key(5), "string"); // type
  const invalid: [string, string | Buffer | undefined][] = [
    ["bad-colon", "bad:ws"],
    ["bad-none", undefined],
    ["bad-long", "w".repeat(65)],
    ["bad-utf8", "é"],
    ["bad-latin1", Buffer.from([0x77, 0xff])],
    ["bad-dash", "-ws"],
    ["bad-newline", "ws\n"],
    ["", "ws-0"], // the old key `ai:jobs:` has no job id
  ];
  for (const [id, ws] of invalid) {
    if (ws === undefined) await client.hset(oldKeyFor(id), "status", "x");
    else await client.hset(oldKeyFor(id), "workspace_id", ws, "status", "x");
    // A "copy" under the invalid id: only the rule, not a missing new key, makes it invalid.
    if (typeof ws === "string" && id !== "") {
      await client.hset(newKeyFor(ws, id), "workspace_id", ws, "status", "x");
    }
  }
  await client.set(oldKeyFor("bad-string"), "x"); // not a hash
  assert.ok(url.length > 0);
}

const COUNT_FIELDS = [
  "checked",
  "matched",
  "missing",
  "field_missing",
  "field_differs",
  "ttl",
  "type",
  "invalid",
  "gone",
  "filtered",
  "transient",
  "scan_duplicates",
  "parity",
];

Deno.test("lanes and the sub-batch path count the same tampered data identically", async () => {
  const server = await startRedis();
  const client = server.client();
  const reports = await Promise.all([0, 1, 2, 3].map(() => Deno.makeTempFile()));
  try {
    await seedTampered(client, server.url, 3000);
    // The default rule written another way: the same ids, but not the default (no lanes).
    const samePattern = "^[A-Za-z0-9](?:[A-Za-z0-9_-]){0,63}$";
    const runs = [];
    // Lanes; the sub-batch path; lanes with 20 µs calls (each key deferred to the sub-batch path);
    // calls timed on the client (as where time stands still in a script: sub-batches, no lanes).
    const variants = [
      [],
      ["--workspace-pattern", samePattern],
      ["--max-call-ms", "0.02"],
      ["--call-clock", "client"],
    ];
    for (const [i, extra] of variants.entries()) {
      await client.call("SCRIPT", "FLUSH");
      const args = ["verify", "--full", "--report", reports[i]!, "--redis-url", server.url];
      const result = await runJson([...args, "--recheck-delay", "20", ...extra]);
      assert.equal(result.code, 1, result.stderr);
      runs.push({ result, lanes: await ranLanes(client) });
    }
    assert.deepEqual(runs.map((run) => run.lanes), [true, false, true, false], "each run's path");
    assert.match(runs[3]!.result.stderr, /call_clock.*--call-clock client.*sub-batches/);
    assert.doesNotMatch(runs[0]!.result.stderr, /call_clock/);
    const [lanes, subBatches, starved, clientTimed] = runs.map(({ result }) =>
      Object.fromEntries(COUNT_FIELDS.map((name) => [name, result.summary[name]]))
    );
    assert.deepEqual(lanes, subBatches);
    assert.deepEqual(starved, subBatches);
    assert.deepEqual(clientTimed, subBatches);
    // The starved run checked its keys on the sub-batch path: many more calls than the lanes run.
    const calls = runs.map(({ result }) =>
      Number((result.summary.redis_calls as { calls: number }).calls)
    );
    assert.ok(calls[2]! > 3000 && calls[2]! > 5 * calls[0]!, `calls: ${calls}`);
    assert.deepEqual(
      { checked: lanes!.checked, matched: lanes!.matched, invalid: lanes!.invalid },
      { checked: 3009 + 9, matched: 3009 - 7, invalid: 9 },
    );
    const lines = async (path: string) => (await Deno.readTextFile(path)).trim().split("\n").sort();
    assert.deepEqual(await lines(reports[0]!), await lines(reports[1]!));
    assert.deepEqual(await lines(reports[2]!), await lines(reports[1]!));
    assert.deepEqual(await lines(reports[3]!), await lines(reports[1]!));
  } finally {
    client.disconnect();
    await server.stop();
    for (const path of reports) await Deno.remove(path);
  }
});

Deno.test("lanes: kill -9 mid-run, then resume from the lane cursors: exact counts", async () => {
  const server = await startRedis();
  const client = server.client();
  const report = await Deno.makeTempFile({ suffix: ".ndjson" });
  try {
    await seedTampered(client, server.url, 8000);
    const args = ["verify", "--full", "--report", report, "--redis-url", server.url];
    const expected = await runJson([...args, "--recheck-delay", "20"]);
    assert.equal(expected.code, 1, expected.stderr);
    const expectedLines = (await Deno.readTextFile(report)).trim().split("\n").sort();
    const first = spawnCli([...args, "--rps", "2000", "--recheck-delay", "20"]);
    // Killed after at least one stored window, before the end.
    const stored = async () => {
      const value = await client.hget("ai:backfill:verify:state", "node:standalone");
      return value === null ? undefined : JSON.parse(value);
    };
    await waitFor("a stored window", async () => (await stored())?.lanes !== undefined);
    first.child.kill("SIGKILL");
    await first.done;
    const progress = await stored();
    assert.equal(progress.cursor, "lanes");
    assert.equal(progress.lanes.length, 4);
    assert.ok(progress.lanes.some((cursor: string) => cursor !== ""), "killed mid-run");
    assert.ok(progress.counts.checked > 0 && progress.counts.checked < 8000);
    const params = await client.hget("ai:backfill:verify:state", "params");
    assert.match(String(params), /"jobs_path":"lanes"/);
    await client.del("ai:backfill:verify:lock"); // the dead verify's lock (else a 30 s wait)
    const resumed = await runJson([...args, "--recheck-delay", "20"]);
    assert.equal(resumed.code, 1, resumed.stderr);
    assert.equal(resumed.summary.resumed, true);
    for (const name of COUNT_FIELDS) {
      assert.equal(resumed.summary[name], expected.summary[name], name);
    }
    const lines = (await Deno.readTextFile(report)).trim().split("\n").sort();
    assert.deepEqual(lines, expectedLines, "each finding once");
  } finally {
    client.disconnect();
    await server.stop();
    await Deno.remove(report);
  }
});

Deno.test("lanes: starts in SCAN order (rev_2), and calls sized to the budget and the rps cap", () => {
  assert.deepEqual([0, 1, 2, 3].map(laneStart), ["0", "2", "1", "3"]);
  assert.deepEqual([0, 1, 2, 3].map(nextLaneStart), ["2", "1", "3", "0"]);
  assert.deepEqual(freshLanes(), ["0", "2", "1", "3"]);
  const pace = new LanePace(250, 0);
  assert.equal(pace.firstCount(), 16, "no pace yet");
  // 225 µs (90% of 250) − 10 per call − 0.75 per key of the last reply.
  assert.equal(pace.limitUs(), 225 - 10 - 0.75 * 16);
  assert.equal(pace.usPerKey(), 0, "unknown: the script assumes 25 µs");
  pace.update(100, 20, 10, 10); // 5 µs a COUNT unit, 10 keys all checked: 10 µs a key
  assert.equal(pace.limitUs(), 225 - 10 - 7.5);
  assert.equal(pace.firstCount(), Math.floor(FIRST_SHARE * pace.limitUs() / 5));
  assert.equal(pace.usPerKey(), 10);
  pace.update(200, 20, 10, 5); // slower: followed half-way (7.5 µs a unit; 40 µs a checked key)
  assert.equal(pace.firstCount(), Math.floor(FIRST_SHARE * pace.limitUs() / 7.5));
  assert.equal(pace.usPerKey(), 25);
  pace.update(100, 20, 10, 0); // nothing checked: the cost a key stays
  assert.equal(pace.usPerKey(), 25);
  const capped = new LanePace(250, 3);
  capped.update(10, 100, 10, 10);
  assert.equal(capped.firstCount(), 3, "at most rps / 4 COUNT a call");
});

Deno.test("lanes: a call whose time runs out returns the rest unchecked (deferred), each key once", async () => {
  const server = await startRedis();
  const client = server.client();
  try {
    await seedMigrated(client, 0, 2000);
    const sha = String(await client.script("LOAD", LANE_SCRIPT));
    /** One call of lane 0 from `cursor`: its next cursor and each returned name's verdict. */
    const call = async (cursor: string, limitUs: number, keyUs: number) => {
      const [next, , , joined, lengths, suspects] = await client.callBuffer(
        "EVALSHA_RO",
        sha,
        "0",
        ...[cursor, "0", "2", "100", "0", String(limitUs), OLD_MATCH, "workspace_id"],
        DEFAULT_KEYS.luaSpec,
        ...["1000", "^[%w][%w_%-]*$", "64", "", String(keyUs)],
      ) as [Buffer, number, number, Buffer, number[], (Buffer | number)[]];
      const verdicts = new Map<string, number>();
      let at = 0;
      for (const length of lengths) verdicts.set(joined.toString("latin1", at, at += length), 0);
      for (let i = 0; i < suspects.length; i += 2) {
        verdicts.set((suspects[i] as Buffer).toString("latin1"), Number(suspects[i + 1]));
      }
      return { next: next.toString(), verdicts };
    };
    // 1 µs of its own: not even the first key fits; the cursor still moves past every key.
    const starved = await call("0", 1, 5);
    assert.ok(starved.verdicts.size >= 20, `${starved.verdicts.size} keys`);
    assert.deepEqual(new Set(starved.verdicts.values()), new Set([10]));
    assert.notEqual(starved.next, "0");
    // Ample time: the whole of lane 0 in one call, every key checked and matched.
    const ample = await call("0", 1_000_000, 5);
    assert.equal(ample.next, "");
    assert.deepEqual(new Set(ample.verdicts.values()), new Set([0]));
    assert.ok(ample.verdicts.size > 300, `${ample.verdicts.size} keys in lane 0`);
    // Lane 0 walked in calls of 150 µs: the same keys, each once, checked or deferred.
    const seen = new Map<string, number>();
    let deferred = 0;
    for (let cursor = "0"; cursor !== "";) {
      const { next, verdicts } = await call(cursor, 150, 0);
      for (const [name, verdict] of verdicts) {
        seen.set(name, (seen.get(name) ?? 0) + 1);
        if (verdict === 10) deferred++;
        else assert.equal(verdict, 0);
      }
      cursor = next;
    }
    assert.ok([...seen.values()].every((n) => n === 1), "no key twice");
    assert.deepEqual(new Set(seen.keys()), new Set(ample.verdicts.keys()));
    assert.ok(deferred < seen.size, `${deferred} of ${seen.size} deferred`);
  } finally {
    client.disconnect();
    await server.stop();
  }
});

Deno.test("lanes: nothing migrated (every key a suspect) counts as the sub-batch path does", async () => {
  const server = await startRedis();
  const client = server.client();
  try {
    await seedMigrated(client, 0, 3000);
    for (let i = 0; i < 3000; i++) await client.del(newKeyFor(`ws-${i % 3}`, `job-${i}`));
    const summaries = [];
    for (const extra of [[], ["--workspace-pattern", "^[A-Za-z0-9](?:[A-Za-z0-9_-]){0,63}$"]]) {
      await client.call("SCRIPT", "FLUSH");
      const args = ["verify", "--full", "--redis-url", server.url, "--recheck-delay", "5"];
      const result = await runJson([...args, ...extra]);
      assert.equal(result.code, 1, result.stderr);
      summaries.push(Object.fromEntries(COUNT_FIELDS.map((name) => [name, result.summary[name]])));
      assert.equal(await ranLanes(client), extra.length === 0);
    }
    assert.deepEqual(summaries[0], summaries[1]);
    assert.equal(summaries[0]!.missing, 3000);
    assert.equal(summaries[0]!.checked, 3000);
  } finally {
    client.disconnect();
    await server.stop();
  }
});
