/**
 * Uniform random samples of one kind of key (old jobs, new jobs) across every master, read-only.
 *
 * - **random** (large keyspaces): rejection sampling. Each draw picks a node with probability
 *   proportional to its DBSIZE and asks it for RANDOMKEY, so every key is equally likely per draw
 *   and the kept members are uniform; duplicates are dropped (a sample without replacement).
 *   RANDOMKEY's slight bias follows the seeded hash of a key, not its name or migration state.
 * - **scan** (small keyspaces, rare populations, or N close to the population): SCAN MATCH every
 *   node into a reservoir (Algorithm R). When N is at least the population, it holds every key
 *   exactly once.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import type { Redis } from "../redis/ioredis.ts";
import { scanBatches, TimedScan } from "../control/scanner.ts";
import { isSameWorkspace, type KeySchema } from "../schema.ts";
import type { Checks } from "./pairs.ts";
import type { SamplingMethod } from "./report.ts";
import { KeyCode } from "./script.ts";

/** One kind of key to sample (old jobs, new jobs), optionally narrowed by reading the keys. */
export interface KeyPopulation {
  /** SCAN MATCH pattern covering every member (it may cover more; see `isCandidate`). */
  match: string;
  /** True when the key's name makes it a member (before `confirm`). */
  isCandidate(key: Buffer): boolean;
  /** Confirms distinct candidates by reading them (e.g. their workspace id), in order. */
  confirm?(keys: Buffer[]): Promise<boolean[]>;
}

/**
 * Old keys; with `workspace`, only those whose first field passes its rule as `workspace` and
 * that carry every other field of the new name (the script's `owner` mode reads them).
 */
export function oldPopulation(workspace: string | undefined, checks: Checks): KeyPopulation {
  const { calls, keys: schema } = checks.ctx;
  return {
    match: schema.oldMatch,
    isCandidate: (key) => schema.idOf(key) !== undefined,
    confirm: workspace === undefined ? undefined : async (keys) => {
      const owners = await checks.batches().run(
        keys,
        (sub, timing) => calls.read(sub, "owner", { timing }),
      );
      return owners.map((owner) =>
        Number(owner[0]) === KeyCode.hash &&
        schema.checkWorkspace(owner[1] as Uint8Array) === workspace
      );
    },
  };
}

/** New keys; with a workspace, only that workspace's (the name tells, no read needed). */
export function newPopulation(keys: KeySchema, workspace: string | undefined): KeyPopulation {
  return {
    match: workspace === undefined ? keys.newMatch : keys.newMatchFor(workspace),
    isCandidate: (key) => {
      const parsed = keys.parseNewKey(key);
      return parsed !== undefined &&
        (workspace === undefined || isSameWorkspace(parsed.workspace, workspace));
    },
  };
}

/** Knobs of the sampling method (defaults in {@linkcode DEFAULT_SAMPLING}). */
export interface SamplingTuning {
  /** Keyspaces (sum of DBSIZE) up to this size are always scanned: cheap and exact. */
  scanBelow: number;
  /** RANDOMKEY draws in the first probe round. */
  probeDraws: number;
  /** Population members needed before the population estimate is trusted. */
  minHits: number;
  /** Scan instead when N exceeds this share of the estimated population. */
  maxRandomFraction: number;
  /** Cost of one pipelined RANDOMKEY draw, in keys visited by SCAN. */
  drawCost: number;
  /** Upper bound of RANDOMKEYs per pipelined round (bounds client memory per round). */
  maxRoundDraws: number;
  /** The largest SCAN COUNT (each is sized to the call bound, control/scanner.ts). */
  scanCount: number;
}

export const DEFAULT_SAMPLING: Readonly<SamplingTuning> = {
  scanBelow: 50_000,
  probeDraws: 1024,
  minHits: 32,
  maxRandomFraction: 0.2,
  drawCost: 8,
  maxRoundDraws: 16_384,
  scanCount: 5_000,
};

/** A sample and what is known about the population it came from. */
export interface SampleResult {
  /** The sampled keys, distinct. */
  keys: Buffer[];
  /** Members of the population: exact after a scan, an estimate after random draws. */
  population: number;
  exact: boolean;
  method: SamplingMethod;
}

/**
 * Draws `size` (≥ 1) distinct keys of `population`, uniformly, from every master. Issues only
 * DBSIZE, RANDOMKEY and SCAN, plus whatever `population.confirm` reads.
 */
export async function sampleKeys(
  nodes: readonly Redis[],
  population: KeyPopulation,
  size: number,
  options: { signal?: AbortSignal; tuning?: Partial<SamplingTuning> } = {},
): Promise<SampleResult> {
  const draw: Draw = {
    nodes,
    population,
    size,
    tuning: { ...DEFAULT_SAMPLING, ...options.tuning },
    signal: options.signal,
  };
  draw.signal?.throwIfAborted();
  const sizes = await Promise.all(nodes.map((node) => node.dbsize()));
  const total = sizes.reduce((a, b) => a + b, 0);
  if (total <= draw.tuning.scanBelow || size >= total) return await scanSample(draw);
  return await randomSample(draw, sizes, total) ?? await scanSample(draw);
}

interface Draw {
  nodes: readonly Redis[];
  population: KeyPopulation;
  size: number;
  tuning: SamplingTuning;
  signal?: AbortSignal;
}

/** Random draws; `undefined` when the population turns out too small or rare for them. */
async function randomSample(
  { nodes, population, size, tuning, signal }: Draw,
  sizes: readonly number[],
  total: number,
): Promise<SampleResult | undefined> {
  const pool = new Map<string, Buffer>();
  const verdicts = new Map<string, boolean>();
  // Beyond this many draws a full scan would have been cheaper.
  const maxDraws = Math.max(tuning.probeDraws, Math.floor(total / tuning.drawCost));
  let draws = 0;
  let hits = 0;
  let round = tuning.probeDraws;
  while (true) {
    signal?.throwIfAborted();
    const keys = await drawRandom(nodes, sizes, total, round);
    draws += round;
    const candidates = keys.filter((key) => population.isCandidate(key));
    if (population.confirm) {
      const unknown = new Map<string, Buffer>();
      for (const key of candidates) {
        const id = key.toString("latin1");
        if (!verdicts.has(id)) unknown.set(id, key);
      }
      if (unknown.size > 0) {
        const answers = await population.confirm([...unknown.values()]);
        [...unknown.keys()].forEach((id, i) => verdicts.set(id, answers[i] === true));
      }
    }
    for (const key of candidates) {
      const id = key.toString("latin1");
      if (population.confirm && !verdicts.get(id)) continue;
      hits++;
      pool.set(id, key);
    }

    const trusted = hits >= tuning.minHits;
    const estimate = Math.round(total * hits / draws);
    // Duplicates pile up, and only a scan checks every key once if the population is about N.
    if (trusted && size > tuning.maxRandomFraction * estimate) return undefined;
    if (pool.size >= size) {
      return {
        keys: pickSubset([...pool.values()], size),
        population: estimate,
        exact: false,
        method: "random",
      };
    }
    // Even at an optimistic hit rate (roughly a 95% upper bound: three more hits than seen), the
    // draws still needed would cost more than a scan: the population is too rare for draws.
    const optimisticRate = (hits + 3) / draws;
    if (draws + (size - pool.size) / optimisticRate > maxDraws) return undefined;
    // Size the next round to finish in one more round trip (20% headroom for misses and dupes).
    const next = trusted ? Math.ceil((size - pool.size) * (draws / hits) * 1.2) : round * 2;
    round = Math.max(256, Math.min(next, tuning.maxRoundDraws, maxDraws - draws));
  }
}

/** `count` RANDOMKEY draws, each from a node picked with probability proportional to its size. */
async function drawRandom(
  nodes: readonly Redis[],
  sizes: readonly number[],
  total: number,
  count: number,
): Promise<Buffer[]> {
  const perNode = sizes.map(() => 0);
  for (let i = 0; i < count; i++) {
    let at = Math.random() * total;
    let node = 0;
    while (node < sizes.length - 1 && at >= (sizes[node] ?? 0)) at -= sizes[node++] ?? 0;
    perNode[node] = (perNode[node] ?? 0) + 1;
  }
  const batches = await Promise.all(nodes.map(async (node, i) => {
    const n = perNode[i] ?? 0;
    if (n === 0) return [];
    const pipeline = node.pipeline();
    for (let j = 0; j < n; j++) pipeline.randomkeyBuffer();
    const replies = await pipeline.exec();
    const keys: Buffer[] = [];
    for (const [error, key] of replies ?? []) {
      if (error) throw error;
      // null: the node emptied since DBSIZE; the draw simply missed.
      if (key instanceof Buffer) keys.push(key);
    }
    return keys;
  }));
  return batches.flat();
}

/** Full SCAN of every node into one reservoir of `size` keys (exact population count). */
async function scanSample(
  { nodes, population, size, tuning, signal }: Draw,
): Promise<SampleResult> {
  const match = population.match;
  const reservoir: Buffer[] = [];
  // Ids in the reservoir: SCAN may return a key twice (rehashing); a repeat is dropped here, so
  // when the reservoir holds the whole population, it holds every key exactly once.
  const held = new Set<string>();
  let seen = 0;
  const offer = (key: Buffer) => {
    const id = key.toString("latin1");
    if (held.has(id)) return;
    seen++;
    if (reservoir.length < size) {
      reservoir.push(key);
      held.add(id);
      return;
    }
    const slot = Math.floor(Math.random() * seen);
    if (slot < size) {
      held.delete((reservoir[slot] as Buffer).toString("latin1"));
      reservoir[slot] = key;
      held.add(id);
    }
  };
  await Promise.all(nodes.map(async (node) => {
    signal?.throwIfAborted();
    const scanner = new TimedScan(node, { maxCount: tuning.scanCount });
    for await (const { keys } of scanBatches(scanner, { match })) {
      signal?.throwIfAborted();
      const candidates = keys.filter((key) => population.isCandidate(key));
      if (population.confirm && candidates.length > 0) {
        const answers = await population.confirm(candidates);
        candidates.forEach((key, i) => answers[i] && offer(key));
      } else {
        candidates.forEach(offer);
      }
    }
  }));
  return { keys: reservoir, population: seen, exact: true, method: "scan" };
}

/** `size` elements of `items` chosen uniformly (partial Fisher-Yates; reorders `items`). */
function pickSubset<T>(items: T[], size: number): T[] {
  const n = Math.min(size, items.length);
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(Math.random() * (items.length - i));
    [items[i], items[j]] = [items[j] as T, items[i] as T];
  }
  return items.slice(0, n);
}
