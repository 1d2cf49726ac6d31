/**
 * `--max-keys` loops on a skewed 3-master cluster: a master whose scan completed stays finished
 * across runs, so the loop scans the keyspace about once instead of rescanning the small masters
 * in every run. Plus the resume decision for a finished node (pure).
 */
import assert from "node:assert/strict";
import { decideStart, type ResumeInput } from "../src/checkpoint/resume.ts";
import type { NodeCheckpoint } from "../src/checkpoint/resume.ts";
import { keySlot } from "../src/redis/slot.ts";
import { oldKeyFor } from "./support/keys.ts";
import { runJson } from "./support/cli.ts";
import { countClusterKeys, seedOldCluster, startCluster } from "./support/cluster.ts";
import { assertMigrated, makeJobs, type TestJob } from "./support/seed.ts";

/** `counts[i]` jobs on the master that serves slot range i (in CLUSTER SLOTS order). */
function skewedJobs(ranges: [number, number][], counts: number[]): TestJob[] {
  const want = [...counts];
  const jobs: TestJob[] = [];
  for (const job of makeJobs(50_000)) {
    const slot = keySlot(oldKeyFor(job.id));
    const range = ranges.findIndex(([from, to]) => slot >= from && slot <= to);
    if (want[range]! > 0) {
      want[range]!--;
      jobs.push(job);
    }
    if (want.every((n) => n === 0)) return jobs;
  }
  throw new Error("not enough job ids");
}

Deno.test("--max-keys 100 loops over a skewed cluster scan the keyspace about once", async () => {
  const cluster = await startCluster({ masters: 3 });
  const client = cluster.client();
  const nodes = cluster.nodeClients();
  try {
    // One range per master (a fresh cluster gives each master one contiguous range).
    const slots = await nodes[0]!.call("CLUSTER", "SLOTS") as [number, number, ...unknown[]][];
    const ranges = slots.map(([from, to]) => [from, to] as [number, number]);
    assert.equal(ranges.length, 3);
    const jobs = skewedJobs(ranges, [1200, 150, 150]);
    await seedOldCluster(client, jobs);
    let scanned = 0;
    let migrated = 0;
    let runs = 0;
    for (let completed = false; !completed; runs++) {
      assert.ok(runs < 40, `not complete after ${runs} runs (scanned ${scanned})`);
      const result = await runJson([
        "--execute",
        "--rps",
        "0",
        "--max-keys",
        "100",
        "--redis-url",
        cluster.url,
      ]);
      assert.equal(result.code, 0, result.stderr);
      scanned += Number(result.summary.scanned);
      migrated += Number(result.summary.migrated);
      completed = result.summary.completed === true;
    }
    // Rescanning the two small masters in every run was measured at ~3x the keyspace.
    assert.ok(scanned <= 1.2 * jobs.length, `scanned ${scanned} for ${jobs.length} keys`);
    assert.equal(migrated, jobs.length, "every job migrated once");
    assert.ok(runs <= 18, `runs: ${runs}`);
    await assertMigrated(client, jobs);
    assert.equal(await countClusterKeys(nodes, "*backfill*:cursor*"), 0, "the pass cleared them");
    assert.equal(await countClusterKeys(nodes, "*backfill*:meta*"), 0);
  } finally {
    client.disconnect();
    for (const node of nodes) node.disconnect();
    await cluster.stop();
  }
});

const base: ResumeInput = {
  mode: "execute",
  resetProgress: false,
  params: "p",
  runId: "r1",
  node: "10.0.0.1:6379",
  perNode: true,
  prefix: "ai:backfill",
};
const finished: NodeCheckpoint = { cursor: "0", runId: "r1", params: "p", finished: true };

Deno.test("resume: a node finished earlier in the pass is skipped; a restart, reset or --cursor scans it", () => {
  const skip = decideStart({ ...base, stored: finished });
  assert.equal(skip.kind, "finished");
  assert.match(
    skip.kind === "finished" ? skip.log.message : "",
    /the scan on 10\.0\.0\.1:6379 completed in an earlier run of this pass/,
  );
  const restarted = decideStart({ ...base, stored: { ...finished, runId: "r0" } });
  assert.deepEqual([restarted.kind, restarted.kind === "start" && restarted.cursor], [
    "start",
    "0",
  ]);
  const reset = decideStart({ ...base, resetProgress: true, stored: finished });
  assert.equal(reset.kind === "start" && reset.clear, true);
  const cursor = decideStart({ ...base, cursor: "42", stored: finished });
  assert.equal(cursor.kind === "start" && cursor.cursor, "42");
  assert.equal(decideStart({ ...base, stored: { ...finished, params: "q" } }).kind, "refuse");
  // An older version's checkpoint (no `finished`) resumes as before.
  const old = decideStart({ ...base, stored: { cursor: "17", runId: "r1", params: "p" } });
  assert.equal(old.kind === "start" && old.cursor, "17");
  assert.equal(decideStart({ ...base, mode: "dry-run", stored: finished }).kind, "start");
});
