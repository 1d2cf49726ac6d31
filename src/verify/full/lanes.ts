/**
 * The jobs phase of `verify --full` on one node, in lanes (`lane_script.ts`): one read-only script
 * call in flight per lane, each SCANning its own stretch of the keyspace and comparing the pairs
 * in Redis. Matched keys come back as names only; the others ("suspects", and the keys a call's
 * time ran out before: `deferred`) go through the sub-batch path's pass (at once, one group at a
 * time: a lane waits while two groups are queued) and its rechecks (once per window, as once per
 * chunk), so findings are exactly today's.
 *
 * Every name comes back so that a key SCAN returns twice (the table shrank mid-scan) is dropped
 * (`scan_duplicates`): a repeat stays in its lane (its bucket's low bits do not change), so each
 * lane keeps its own window of recent names (`RecentKeys`, the current and the previous commit).
 *
 * Commits: after about `chunkKeys()` keys across the lanes, the lanes' cursors as of the calls
 * answered so far are a consistent cut (each reply is counted in exactly one window; a call in
 * flight belongs to the next window and started from the cut's cursor). The window's suspects are
 * checked, then the window is committed (report first, then the cursors with the counts in one
 * HSET, by the caller); the next window's calls run meanwhile. A resume from the cut re-does only
 * calls that were never counted.
 *
 * `--rps` is post-paid: a call's key count is known only after its SCAN, so the limiter is asked
 * for them after the call, before the lane's next one; a call's SCAN is capped at rps/4 COUNT.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import type { RateLimiter } from "../../control/rate_limit.ts";
import type { Redis } from "../../redis/ioredis.ts";
import { errorCode, isOutage } from "../../redis/errors.ts";
import { DEFAULT_WORKSPACE_LUA } from "../../schema.ts";
import { type FullCounts, zeroCounts } from "./checkpoint.ts";
import { RecentKeys } from "./chunks.ts";
import { type ChunkDeps, firstJobPass, settleLaneSuspects } from "./chunk_check.ts";
import type { CheckedJob } from "./check.ts";
import {
  isLaneMismatch,
  LANE_SCRIPT,
  LANES,
  laneStart,
  LaneVerdict,
  nextLaneStart,
} from "./lane_script.ts";
import { LanePace } from "./lane_pace.ts";
import { type NodeCalls, VerifyCallError } from "./node_calls.ts";
import type { Finding } from "./report_file.ts";

/** Options of {@linkcode runLanes}. */
export interface LaneOptions {
  /** Where each lane continues ("" = done); {@linkcode freshLanes} for a new pass. */
  cursors: readonly string[];
  /** The slot ranges the node serves ("" on a standalone). */
  ranges: string;
  toleranceMs: number;
  /** Redis time one call may take, µs (`call_budget.ts`). */
  callBudgetUs: number;
  /** Keys per second, 0 = unlimited. */
  rps: number;
  limiter: Pick<RateLimiter, "acquire">;
  /** Keys per commit (all lanes). */
  chunkKeys: () => number;
  signal?: AbortSignal;
  /** Called with every name a lane's call returned, before repeats are dropped (tests). */
  onNames?: (lane: number, names: readonly Buffer[]) => void;
}

/** A committed window: the lanes' cursors after it, with the counts and findings of its keys. */
export interface LaneCommit {
  cursors: string[];
  counts: FullCounts;
  findings: Finding[];
  /** Old keys the window's calls returned (repeats included). */
  keys: number;
  /** Every lane is done: this is the phase's last commit. */
  done: boolean;
}

/** What {@linkcode runLanes} works with. */
export interface LaneDeps {
  /** Sub-batches and pass context for the suspects. */
  chunk: ChunkDeps;
  calls: NodeCalls;
  /** Stores a window (called in order, one at a time). */
  commit: (window: LaneCommit) => Promise<void>;
}

/** Every lane at its start. */
export function freshLanes(): string[] {
  return Array.from({ length: LANES }, (_, lane) => laneStart(lane));
}

/** Suspects are checked in groups of this many (or at the window's end). */
const SUSPECT_GROUP = 32;

/** Suspect groups queued for their first pass before the lanes wait (the calls stay bounded). */
const MAX_QUEUED_GROUPS = 2;

/** A group of suspects after its first pass. */
interface FirstPass {
  keys: Buffer[];
  results: CheckedJob[];
  mismatch: boolean[];
}

/** A commit window being filled. */
class Window {
  readonly counts = zeroCounts();
  readonly passes: Promise<FirstPass>[] = [];
  readonly findings: Finding[] = [];
  suspects: Buffer[] = [];
  mismatch: boolean[] = [];
  keys = 0;
}

/** The reply of one lane call. */
type LaneReply = [Buffer, number, number, Buffer, number[], (Buffer | number)[]];

/**
 * Runs `node`'s lanes from `options.cursors` to their ends, committing windows through
 * `deps.commit`; the last commit has `done`.
 *
 * @throws the first error of a call, a suspect check or a commit (the lanes stop).
 */
export async function runLanes(node: Redis, options: LaneOptions, deps: LaneDeps): Promise<void> {
  const run = new LaneRun(node, options, deps);
  await run.run();
}

class LaneRun {
  readonly #cursors: string[];
  readonly #recent = Array.from({ length: LANES }, () => new RecentKeys());
  #window = new Window();
  #committing: Promise<void> = Promise.resolve();
  #failure: { error: unknown } | undefined;
  /** The suspects' first passes, one group after the other, and how many groups are queued. */
  #passes: Promise<void> = Promise.resolve();
  #queuedGroups = 0;
  #sha = "";

  constructor(
    readonly node: Redis,
    readonly options: LaneOptions,
    readonly deps: LaneDeps,
  ) {
    this.#cursors = [...options.cursors];
  }

  async run(): Promise<void> {
    this.#sha = String(await this.node.script("LOAD", LANE_SCRIPT));
    try {
      await Promise.all(
        this.#cursors.map((_, lane) => this.#lane(lane).catch((e) => this.#fail(e))),
      );
      if (this.#failure === undefined) this.#cut(true);
      await this.#committing;
    } finally {
      await this.#committing.catch(() => {});
    }
    if (this.#failure !== undefined) throw this.#failure.error;
  }

  #fail(error: unknown): void {
    this.#failure ??= { error };
  }

  async #lane(lane: number): Promise<void> {
    const { rps, limiter, signal } = this.options;
    const pace = new LanePace(
      this.options.callBudgetUs,
      rps > 0 ? Math.max(1, Math.floor(rps / 4)) : 0,
    );
    while (this.#failure === undefined && this.#cursors[lane] !== "") {
      signal?.throwIfAborted();
      while (this.#queuedGroups > MAX_QUEUED_GROUPS) await this.#passes;
      const count = pace.firstCount();
      const limitUs = pace.limitUs();
      const reply = await this.#call(lane, count, limitUs, pace.cap, pace.usPerKey());
      const { keys, deferred } = this.#take(lane, reply);
      pace.update(Number(reply[1]), Number(reply[2]), keys, keys - deferred);
      this.deps.calls.record(Number(reply[1]));
      if (this.#window.keys >= this.options.chunkKeys()) this.#cut(false);
      // Post-paid: the keys are known only now (a call's SCAN is capped at rps / 4). Asked also
      // without --rps: the limiter holds the lanes while Redis is read alone or yielded to.
      if (keys > 0) await limiter.acquire(rps > 0 ? Math.min(keys, rps) : keys, signal);
    }
  }

  /**
   * Counts a reply into the window (repeats dropped) and moves the lane on; returns its keys, and
   * how many of them the script deferred for time.
   */
  #take(
    lane: number,
    [next, , , joined, lengths, suspects]: LaneReply,
  ): { keys: number; deferred: number } {
    const window = this.#window;
    const recent = this.#recent[lane]!;
    if (this.options.onNames !== undefined) this.#reportNames(lane, joined, lengths, suspects);
    // Names as latin1 text (one char per byte: distinct names stay distinct), no Buffer each.
    let at = 0;
    for (const length of lengths) {
      const name = joined.toString("latin1", at, at + length);
      at += length;
      if (!recent.admitName(name)) window.counts.scan_duplicates++;
      else {
        window.counts.checked++;
        window.counts.matched++;
      }
    }
    let differs = false;
    let deferred = 0;
    for (let i = 0; i + 1 < suspects.length; i += 2) {
      const name = suspects[i] as Buffer;
      const verdict = Number(suspects[i + 1]);
      if (verdict === LaneVerdict.deferred) deferred++;
      if (!recent.admit(name)) window.counts.scan_duplicates++;
      else differs = this.#suspect(window, name, verdict) || differs;
    }
    // A difference is checked again at once, as the sub-batch path's first pass would have seen
    // it (a dual-writer's window is short); other suspects wait for a group.
    if (differs || window.suspects.length >= SUSPECT_GROUP) this.#checkSuspects(window);
    const keys = lengths.length + suspects.length / 2;
    window.keys += keys;
    this.#cursors[lane] = next.toString("latin1");
    return { keys, deferred };
  }

  #reportNames(lane: number, joined: Buffer, lengths: number[], suspects: (Buffer | number)[]) {
    const names: Buffer[] = [];
    let at = 0;
    for (const length of lengths) names.push(joined.subarray(at, at += length));
    for (let i = 0; i < suspects.length; i += 2) names.push(suspects[i] as Buffer);
    this.options.onNames!(lane, names);
  }

  /**
   * Counts a key the script did not find matched, or queues it for the pass: gone and invalid
   * mean there what they mean to the pass (no rechecks either); returns true for a difference.
   */
  #suspect(window: Window, name: Buffer, verdict: number): boolean {
    if (verdict === LaneVerdict.oldGone) window.counts.gone++;
    else if (verdict <= LaneVerdict.invalidWorkspace) {
      window.counts.checked++;
      window.counts.invalid++;
      // The raw workspace field of an invalid job is a value: it is never written.
      window.findings.push({ kind: "invalid", jobId: this.deps.chunk.ctx.keys.idOf(name)! });
    } else {
      const mismatch = isLaneMismatch(verdict);
      window.suspects.push(name);
      window.mismatch.push(mismatch);
      return mismatch;
    }
    return false;
  }

  /** Starts checking the window's suspects so far (their first pass runs now, not at the cut). */
  #checkSuspects(window: Window): void {
    if (window.suspects.length === 0) return;
    const { suspects: keys, mismatch } = window;
    this.#queuedGroups++;
    // One group's first pass at a time (each runs sub-batches in flight, as a chunk's).
    const pass = this.#passes.then(() => firstJobPass(keys, this.deps.chunk))
      .then((results) => ({ keys, results, mismatch }))
      .finally(() => this.#queuedGroups--);
    this.#passes = pass.then(() => {}, () => {});
    // Awaited by the window's commit; never an unhandled rejection before that.
    pass.catch(() => {});
    window.passes.push(pass);
    window.suspects = [];
    window.mismatch = [];
  }

  /** Ends the window at the lanes' cursors now, and queues its commit after the earlier ones. */
  #cut(done: boolean): void {
    const window = this.#window;
    const cursors = [...this.#cursors];
    this.#window = new Window();
    for (const recent of this.#recent) recent.rotate();
    this.#checkSuspects(window);
    this.#committing = this.#committing.then(() => this.#commit(window, cursors, done));
    this.#committing.catch((error) => this.#fail(error));
  }

  async #commit(window: Window, cursors: string[], done: boolean): Promise<void> {
    const passes = await Promise.all(window.passes);
    const checked = await settleLaneSuspects(
      passes.flatMap((pass) => pass.keys),
      passes.flatMap((pass) => pass.results),
      passes.flatMap((pass) => pass.mismatch),
      this.deps.chunk,
    );
    const counts = window.counts;
    for (const name of Object.keys(counts) as (keyof FullCounts)[]) {
      counts[name] += checked.counts[name];
    }
    const findings = [...window.findings, ...checked.findings];
    await this.deps.commit({ cursors, counts, findings, keys: window.keys, done });
  }

  async #call(
    lane: number,
    count: number,
    limitUs: number,
    cap: number,
    usPerKey: number,
  ): Promise<LaneReply> {
    const { keys } = this.deps.chunk.ctx;
    const args = [
      this.#cursors[lane]!,
      laneStart(lane),
      nextLaneStart(lane),
      String(count),
      String(cap),
      String(Math.round(limitUs)),
      keys.oldMatch,
      keys.workspaceField,
      keys.luaSpec,
      String(this.options.toleranceMs),
      DEFAULT_WORKSPACE_LUA.pattern,
      String(DEFAULT_WORKSPACE_LUA.maxLength),
      this.options.ranges,
      usPerKey.toFixed(2),
    ];
    for (let attempt = 0;; attempt++) {
      try {
        return await this.deps.calls.inWindow(
          this.node,
          () => this.node.callBuffer("EVALSHA_RO", this.#sha, "0", ...args),
        ) as LaneReply;
      } catch (error) {
        if (isOutage(error)) throw error;
        // A restarted or failed-over node has an empty script cache.
        if (errorCode(error) !== "NOSCRIPT" || attempt >= 3) {
          throw new VerifyCallError(`verify lane script failed on a node (${errorCode(error)})`, {
            cause: error,
          });
        }
        this.#sha = String(await this.node.script("LOAD", LANE_SCRIPT));
      }
    }
  }
}
