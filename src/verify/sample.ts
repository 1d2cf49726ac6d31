/**
 * Uniform random samples of one kind of key (old jobs, new jobs) across every master, read-only.
 *
 * Two methods, picked per call:
 *
 * - **random** (large keyspaces): rejection sampling over the whole keyspace. Each draw picks a
 *   node with probability proportional to its DBSIZE, asks it for RANDOMKEY, and keeps the key when
 *   it belongs to the population. Every key of the cluster is then equally likely per draw
 *   (`DBSIZE_n / total * 1 / DBSIZE_n`), so the kept keys are uniform over the population and the
 *   nodes are weighted by their key counts without any estimate. Duplicates are dropped, which turns
 *   draws with replacement into a sample without replacement. Cost: about `N / p` pipelined
 *   RANDOMKEY calls, where `p` is the population's share of the keyspace, independent of its size.
 * - **scan** (small keyspaces, rare populations, or N close to the population): SCAN MATCH every
 *   node and keep a reservoir (Algorithm R) of N keys. Exact: when N is at least the population,
 *   the reservoir holds every key exactly once (SCAN's rare duplicates are dropped against it).
 *
 * RANDOMKEY is not perfectly uniform: Redis picks a random bucket neighbourhood of its hash table
 * and then a key within it (`dictGetFairRandomKey`), so keys in long chains or during a rehash are
 * slightly more or less likely. The table position of a key comes from SipHash with a per-process
 * random seed, so this bias is unrelated to a key's name, workspace or migration state: the
 * estimate of parity stays unbiased, only its variance is marginally higher than ideal.
 *
 * The random method switches to scan when the population looks too small or rare for it: when
 * the draws still needed, projected from an optimistic hit rate, would cost more than scanning the
 * keyspace (`drawCost`), or when N is above `maxRandomFraction` of the estimated population (there
 * duplicate draws pile up). Random draws only ever end with N distinct members in hand, so a
 * population smaller than N always ends in a scan, and one of exactly N is then held in full.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import type { Redis } from "../redis/ioredis.ts";
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
  /**
   * Confirms candidates by reading them (e.g. their workspace id): one verdict per key, in order.
   * Only called for distinct keys; the sampler caches verdicts.
   */
  confirm?(keys: Buffer[]): Promise<boolean[]>;
}

/**
 * Old keys; with `workspace`, only those whose `workspace_id` passes the rule as `workspace`
 * (read by the script's `owner` mode: a key that is not a hash or has no workspace_id belongs to
 * no workspace).
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
  /**
   * Cost of one RANDOMKEY draw relative to one key visited by SCAN (measured: about 4 us per
   * pipelined RANDOMKEY against 0.5 us per scanned key). Random draws stop paying off when their
   * projected number times this exceeds the keyspace size.
   */
  drawCost: number;
  /** Upper bound of RANDOMKEYs per pipelined round (bounds client memory per round). */
  maxRoundDraws: number;
  /** SCAN COUNT hint. */
  scanCount: number;
}

/** Default sampling knobs. */
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
  /** True when `population` is exact. */
  exact: boolean;
  /** How the sample was drawn. */
  method: SamplingMethod;
}

/** Options of {@linkcode sampleKeys}. */
export interface SampleOptions {
  signal?: AbortSignal;
  /** Overrides of {@linkcode DEFAULT_SAMPLING}. */
  tuning?: Partial<SamplingTuning>;
}

/**
 * Draws `size` distinct keys of `population`, uniformly, from `nodes` (every master; a standalone
 * server is one node). Issues only DBSIZE, RANDOMKEY and SCAN to the nodes, plus whatever
 * `population.confirm` reads.
 *
 * @throws {RangeError} when `size` is not a positive integer.
 */
export async function sampleKeys(
  nodes: readonly Redis[],
  population: KeyPopulation,
  size: number,
  options: SampleOptions = {},
): Promise<SampleResult> {
  if (!Number.isInteger(size) || size < 1) {
    throw new RangeError(`sample size must be a positive integer, got ${size}`);
  }
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

/** One sample being drawn. */
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
    // N is a large share of the population: duplicates pile up, and if the population is not
    // larger than N every key must be checked exactly once, which only a scan guarantees.
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
    let cursor = "0";
    do {
      signal?.throwIfAborted();
      const [next, keys] = await node.scanBuffer(
        cursor,
        "MATCH",
        population.match,
        "COUNT",
        tuning.scanCount,
      );
      cursor = next.toString();
      const candidates = keys.filter((key) => population.isCandidate(key));
      if (population.confirm && candidates.length > 0) {
        const answers = await population.confirm(candidates);
        candidates.forEach((key, i) => answers[i] && offer(key));
      } else {
        candidates.forEach(offer);
      }
    } while (cursor !== "0");
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
