/**
 * Sample data for the demo: jobs in the old schema `ai:jobs:<job_id>`, as the application left them
 * while it dual-wrote. Deterministic (a seeded generator), so every demo run shows the same counts.
 *
 * What gets written, for `jobs` old keys in all:
 * - a few invalid old keys, one per kind the backfill skips (no/empty/bad `workspace_id`, not UTF-8,
 *   not a hash, empty job id);
 * - every `dualWriteEvery`-th valid job also exists, complete, in the new schema (dual-written);
 * - one job whose new key is partial (a dual-write that stopped after two fields);
 * - every `ttlEvery`-th valid job expires in 1 to 24 hours (dual-written copies get the same TTL).
 *
 * @module
 */
import { Buffer } from "node:buffer";
import type { Redis } from "../src/redis/ioredis.ts";

/** Options for {@linkcode seedSampleJobs}. */
export interface SeedOptions {
  /** Old keys to write in all, invalid ones included. Default 5000. */
  jobs?: number;
  /** Every n-th valid job is already dual-written in the new schema. Default 25. */
  dualWriteEvery?: number;
  /** Every n-th valid job has a TTL. Default 5. */
  ttlEvery?: number;
  /** Seed of the pseudo-random generator. Default 60. */
  seed?: number;
}

/** What {@linkcode seedSampleJobs} wrote, and so what a backfill of it must report. */
export interface SeedReport {
  /** Old keys written (= `scanned`). */
  oldKeys: number;
  /** Valid jobs with no new key yet (= `migrated`). */
  toMigrate: number;
  /** Valid jobs with a complete new key (= `skipped_exists`). */
  dualWritten: number;
  /** Valid jobs with a partial new key (= `repaired`). */
  partial: number;
  /** Old keys the backfill must skip as invalid (= `skipped_invalid`). */
  invalid: number;
  /** Valid jobs with a TTL. */
  withTtl: number;
  /** New keys present before the backfill. */
  newKeysBefore: number;
  /** Valid jobs per workspace. */
  perWorkspace: Record<string, number>;
  /** A few jobs to migrate that have a TTL: `[oldKey, newKey]` pairs, to check TTLs afterwards. */
  ttlSamples: Array<[string, string]>;
}

/** Workspaces of the sample jobs, with their share of the jobs. */
export const SAMPLE_WORKSPACES: ReadonlyArray<readonly [string, number]> = [
  ["acme", 0.4],
  ["globex", 0.3],
  ["initech", 0.2],
  ["umbrella-labs", 0.1],
];

const STATUSES = ["queued", "running", "done", "done", "done", "failed"] as const;
const MODELS = ["chat-small", "chat-large", "embed-v2"] as const;
const CHUNK = 500;
const TTL_SAMPLES = 20;

/** One old key the backfill must skip as invalid, and how to write it. */
interface InvalidJob {
  key: string;
  write(pipeline: ReturnType<Redis["pipeline"]>, key: string): void;
}

const INVALID_JOBS: readonly InvalidJob[] = [
  { key: "ai:jobs:job-no-workspace", write: (p, k) => p.hset(k, "status", "done") },
  { key: "ai:jobs:job-empty-workspace", write: (p, k) => p.hset(k, "workspace_id", "") },
  { key: "ai:jobs:job-colon-workspace", write: (p, k) => p.hset(k, "workspace_id", "acme:eu") },
  { key: "ai:jobs:job-dash-workspace", write: (p, k) => p.hset(k, "workspace_id", "-acme") },
  { key: "ai:jobs:job-long-workspace", write: (p, k) => p.hset(k, "workspace_id", "w".repeat(65)) },
  {
    key: "ai:jobs:job-binary-workspace",
    write: (p, k) => p.hset(k, "workspace_id", Buffer.from([0xff, 0xfe, 0x41])),
  },
  { key: "ai:jobs:job-not-a-hash", write: (p, k) => p.set(k, "legacy string value") },
  { key: "ai:jobs:", write: (p, k) => p.hset(k, "workspace_id", "acme", "status", "done") },
];

/** mulberry32: a small deterministic generator of numbers in [0, 1). */
function generator(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function pick<T>(items: readonly T[], random: () => number): T {
  return items[Math.floor(random() * items.length)] as T;
}

function workspaceFor(random: () => number): string {
  let roll = random();
  for (const [workspace, share] of SAMPLE_WORKSPACES) {
    if (roll < share) return workspace;
    roll -= share;
  }
  return SAMPLE_WORKSPACES[0]![0];
}

/**
 * Writes the sample jobs (see the module doc) into an empty database and reports what it wrote.
 *
 * @throws {RangeError} when `jobs` is too small to hold the invalid and partial samples.
 */
export async function seedSampleJobs(redis: Redis, options: SeedOptions = {}): Promise<SeedReport> {
  const { jobs = 5000, dualWriteEvery = 25, ttlEvery = 5, seed = 60 } = options;
  const validJobs = jobs - INVALID_JOBS.length;
  if (!Number.isInteger(jobs) || validJobs < 2) {
    throw new RangeError(`jobs must be an integer >= ${INVALID_JOBS.length + 2}, got ${jobs}`);
  }
  const random = generator(seed);
  const started = Date.parse("2025-01-06T08:00:00Z");
  const report: SeedReport = {
    oldKeys: jobs,
    toMigrate: 0,
    dualWritten: 0,
    partial: 0,
    invalid: INVALID_JOBS.length,
    withTtl: 0,
    newKeysBefore: 0,
    perWorkspace: Object.fromEntries(SAMPLE_WORKSPACES.map(([workspace]) => [workspace, 0])),
    ttlSamples: [],
  };

  let pipeline = redis.pipeline();
  const flush = async () => {
    const results = await pipeline.exec();
    const failed = results?.find(([error]) => error !== null);
    if (failed) throw failed[0];
    pipeline = redis.pipeline();
  };

  for (const job of INVALID_JOBS) job.write(pipeline, job.key);

  for (let i = 1; i <= validJobs; i++) {
    const jobId = `job-${String(i).padStart(6, "0")}`;
    const workspace = workspaceFor(random);
    const prompt = 50 + Math.floor(random() * 4000);
    const fields: Record<string, string> = {
      workspace_id: workspace,
      status: pick(STATUSES, random),
      model: pick(MODELS, random),
      created_at: new Date(started + i * 7_000).toISOString(),
      prompt_tokens: String(prompt),
      completion_tokens: String(Math.floor(prompt * random())),
    };
    const oldKey = `ai:jobs:${jobId}`;
    const newKey = `ai:job:${workspace}:${jobId}`;
    const ttlSeconds = i % ttlEvery === 0 ? 3600 + Math.floor(random() * 23 * 3600) : undefined;

    pipeline.hset(oldKey, fields);
    if (ttlSeconds !== undefined) {
      pipeline.expire(oldKey, ttlSeconds);
      report.withTtl++;
    }
    report.perWorkspace[workspace] = (report.perWorkspace[workspace] ?? 0) + 1;

    if (i === validJobs) {
      // A dual-write that stopped early: the new key has only two of the fields.
      pipeline.hset(newKey, { workspace_id: workspace, status: fields.status ?? "queued" });
      report.partial++;
      report.newKeysBefore++;
    } else if (i % dualWriteEvery === 0) {
      pipeline.hset(newKey, fields);
      if (ttlSeconds !== undefined) pipeline.expire(newKey, ttlSeconds);
      report.dualWritten++;
      report.newKeysBefore++;
    } else {
      report.toMigrate++;
      if (ttlSeconds !== undefined && report.ttlSamples.length < TTL_SAMPLES) {
        report.ttlSamples.push([oldKey, newKey]);
      }
    }
    if (i % CHUNK === 0) await flush();
  }
  await flush();
  return report;
}
