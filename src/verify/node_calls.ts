/**
 * Read-only script calls of both verifies, grouped by the master that serves the keys. The script
 * answers as many keys as fit its caps and the rest is sent again; its own call times are kept
 * to size sub-batches and for the summary.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import {
  type CallClock,
  type CallClockMode,
  probeCallClock,
  roundTripMs,
} from "../control/call_clock.ts";
import { type CallWindow, callWindowSize, runWindow } from "../control/call_window.ts";
import { SafetyRefusal } from "../errors.ts";
import { redisVersion } from "../redis/availability.ts";
import type { RedisTarget } from "../redis/target.ts";
import { errorCode, isOutage } from "../redis/errors.ts";
import type { Cluster, Redis } from "../redis/ioredis.ts";
import { KeySchema } from "../schema.ts";
import { HEADER_ARGS, type ScriptMode, VERIFY_SCRIPT } from "./script.ts";
import { keySlot } from "../redis/slot.ts";
import { delay } from "../async/delay.ts";

/**
 * Redis time of a call outside the script's own clock (finding the script, building ARGV, the
 * reply's RESP), as INFO commandstats shows it against the script's own mean (docs/verify.md).
 */
export const OUTSIDE_SCRIPT_US = { perCall: 10, perKey: 0.75 } as const;

/**
 * The script's own time a call of `keys` keys may take so that it holds Redis at most `budgetUs`
 * in all (never below 1 µs: one key is always answered).
 *
 * @example
 * ```ts
 * import { ownTimeLimitUs } from "./node_calls.ts";
 * ownTimeLimitUs(250, 20); // 225: 250 − 10 per call − 20 × 0.75
 * ```
 */
export function ownTimeLimitUs(budgetUs: number, keys: number): number {
  return Math.max(1, budgetUs - OUTSIDE_SCRIPT_US.perCall - keys * OUTSIDE_SCRIPT_US.perKey);
}

/** A call stops after the key that brings the fields it read to this many (one wide job whole). */
const FIELD_CAP = 4000;

/** A script call failed for good (not an outage): the node kept refusing it. */
export class VerifyCallError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "VerifyCallError";
  }
}

export interface NodeCallsOptions {
  /** Only this workspace's jobs: `pair` mode reads only its new keys. */
  workspace?: string;
  /** The key mapping (default: the default mapping). */
  keys?: KeySchema;
  /** Redis time one call may take, µs (default 250; see {@linkcode ownTimeLimitUs}). */
  callBudgetUs?: number;
  /** `pair` mode answers a key matched when its expiries are at most this far apart (ms). */
  toleranceMs?: number;
  /** `--call-clock`: `auto` (probe each master) or `client` (control/call_clock.ts). */
  callClock?: CallClockMode;
  /** Script calls in flight per master while another client is active (`--max-latency`). */
  callsInFlight?: number;
  /** Whether another client is active on a master now (control/pace.ts). Default: always. */
  shared?: (node: Redis) => boolean;
  signal?: AbortSignal;
}

export interface ReadOptions {
  /** The keys are old keys (workspace field and a non-empty job id required). */
  oldSide?: boolean;
  /** Where to record the slowest call (sizes the next sub-batch). */
  timing?: CallTiming;
}

/** The slowest call of a read: its own Redis time (µs), its keys, and its node's keys. */
export interface CallTiming {
  maxUs: number;
  maxKeys?: number;
  nodeKeys?: number;
}

/** Sends the verify script to the nodes that serve given keys. */
export class NodeCalls {
  readonly stats = { calls: 0, totalUs: 0, maxUs: 0 };
  readonly #target: Pick<RedisTarget, "kind" | "client" | "masters">;
  readonly #salt: string;
  readonly #options: NodeCallsOptions;
  readonly #keys: KeySchema;
  /** Redis time one call may take, µs. */
  readonly callBudgetUs: number;
  readonly #clocks = new Map<Redis, CallClock>();
  #sha = "";
  #byAddress = new Map<string, Redis>();
  #ranges = new Map<Redis, string>();
  readonly #windows = new Map<Redis, CallWindow>();

  constructor(target: Pick<RedisTarget, "kind" | "client" | "masters">, options: NodeCallsOptions) {
    this.#target = target;
    // A fresh salt per verify: a value hash never identifies a common value across runs.
    this.#salt = crypto.randomUUID();
    this.#options = options;
    this.#keys = options.keys ?? new KeySchema();
    this.callBudgetUs = options.callBudgetUs ?? 250;
  }

  /** `node`'s window of calls in flight, shared by its script calls and its SCANs. */
  windowFor(node: Redis): { acquire(): Promise<() => void> } {
    return { acquire: () => this.#acquire(node) };
  }

  /** Runs `call` on `node` once the master has room for one more call in flight. */
  async inWindow<T>(node: Redis, call: () => Promise<T>): Promise<T> {
    const release = await this.#acquire(node);
    try {
      return await call();
    } finally {
      release();
    }
  }

  async #acquire(node: Redis): Promise<() => void> {
    const inFlight = this.#options.callsInFlight;
    if (inFlight === undefined) return () => {};
    let window = this.#windows.get(node);
    if (window === undefined) {
      // A round trip's worth of calls while nobody else is there, as a run's (run/engine.ts).
      const roundTrip = callWindowSize(await roundTripMs(node), this.callBudgetUs / 1000);
      window = this.#windows.get(node) ?? runWindow({
        roundTrip,
        budget: inFlight,
        shared: () => this.#options.shared?.(node) ?? true,
      });
      this.#windows.set(node, window);
    }
    return await window.acquire({ signal: this.#options.signal });
  }

  /**
   * Checks every master runs Redis ≥ 7.0 (EVALSHA_RO, PEXPIRETIME) and loads the script on each.
   *
   * @throws {SafetyRefusal} on an older Redis.
   */
  async init(): Promise<void> {
    for (const node of this.#target.masters()) {
      const [major, minor] = redisVersion(await node.info("server"));
      if (major < 7) {
        throw new SafetyRefusal(
          `verify needs Redis 7.0 or newer (read-only scripts); a node runs ${major}.${minor}`,
        );
      }
      this.#sha = String(await node.script("LOAD", VERIFY_SCRIPT));
      await this.clockOf(node);
    }
    this.#mapAddresses();
  }

  /** Whose clock times `node`'s calls: probed on first use (control/call_clock.ts). */
  async clockOf(node: Redis): Promise<CallClock> {
    let clock = this.#clocks.get(node);
    if (clock === undefined) {
      clock = await probeCallClock(node, this.#options.callClock ?? "auto");
      this.#clocks.set(node, clock);
    }
    return clock;
  }

  /** Groups key positions by the master that serves each key (one group on a standalone). */
  #group(keys: readonly Buffer[]): { node: Redis; indices: number[] }[] {
    if (this.#target.kind !== "cluster") {
      const node = this.#target.masters()[0] as Redis;
      return keys.length === 0 ? [] : [{ node, indices: keys.map((_, i) => i) }];
    }
    const cluster = this.#target.client as Cluster;
    const groups = new Map<Redis, number[]>();
    keys.forEach((key, i) => {
      const owner = cluster.slots[keySlot(key)]?.[0];
      const node = owner === undefined ? undefined : this.#byAddress.get(owner);
      if (node === undefined) {
        throw new VerifyCallError(
          `no known master serves slot ${keySlot(key)} (the cluster changed; run verify again)`,
        );
      }
      const list = groups.get(node) ?? [];
      list.push(i);
      groups.set(node, list);
    });
    return [...groups].map(([node, indices]) => ({ node, indices }));
  }

  /**
   * Runs `mode` over `keys`, masters in parallel, and returns one entry per key in order (in `pair`
   * mode a matched key's entry is its workspace bytes). A stale slot map is refreshed and the keys
   * regrouped, a few times.
   */
  async read(
    keys: readonly Buffer[],
    mode: ScriptMode,
    options: ReadOptions = {},
  ): Promise<unknown[][]> {
    for (let attempt = 0;; attempt++) {
      try {
        const out: unknown[][] = new Array(keys.length);
        await Promise.all(
          this.#group(keys).map(async ({ node, indices }) => {
            const entries = await this.#call(node, mode, indices.map((i) => keys[i]!), options);
            indices.forEach((index, j) => out[index] = entries[j]!);
          }),
        );
        return out;
      } catch (error) {
        if (!(error instanceof StaleRouteError) || attempt >= 5) throw error;
        await delay(250 * (attempt + 1), { signal: this.#options.signal });
      }
    }
  }

  /** Runs `mode` over `keys` on `node` and returns one entry per key, in order. */
  async #call(
    node: Redis,
    mode: ScriptMode,
    keys: readonly Buffer[],
    options: ReadOptions = {},
  ): Promise<unknown[][]> {
    const entries: unknown[][] = [];
    // The slot ranges `node` serves; "" on a standalone, where every key is local.
    const ranges = this.#target.kind === "cluster" ? (this.#ranges.get(node) ?? "none") : "";
    const clock = await this.clockOf(node);
    while (entries.length < keys.length) {
      this.#options.signal?.throwIfAborted();
      const rest = keys.slice(entries.length);
      const args = [
        mode,
        options.oldSide ? "1" : "",
        String(FIELD_CAP),
        this.#salt,
        this.#keys.luaSpec,
        this.#options.workspace ?? "",
        ranges,
        String(Math.round(ownTimeLimitUs(this.callBudgetUs, rest.length))),
        String(this.#options.toleranceMs ?? 0),
        ...rest,
      ];
      const { value: reply, micros: elapsed } = await clock.time(
        () => this.#evalRo(node, args),
        (reply) => Number(reply[1]),
        rest.length,
      );
      const processed = Number(reply[0]);
      this.stats.calls++;
      this.stats.totalUs += elapsed;
      this.stats.maxUs = Math.max(this.stats.maxUs, elapsed);
      if (options.timing && elapsed > options.timing.maxUs) {
        options.timing.maxUs = elapsed;
        options.timing.maxKeys = processed;
        options.timing.nodeKeys = keys.length;
      }
      if (!(processed >= 1) || reply.length !== 2 + processed) {
        throw new VerifyCallError(`verify script answered ${processed} of ${rest.length} keys`);
      }
      for (let i = 0; i < processed; i++) entries.push(reply[2 + i] as unknown[]);
    }
    return entries;
  }

  async #evalRo(node: Redis, args: (string | Buffer)[]): Promise<unknown[]> {
    let last: unknown;
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        return await this.inWindow(
          node,
          () => node.callBuffer("EVALSHA_RO", this.#sha, "0", ...args),
        ) as unknown[];
      } catch (error) {
        // A stop while the call waited for its window: the stop's reason, not a failed call.
        this.#options.signal?.throwIfAborted();
        if (isOutage(error)) throw error;
        last = error;
        const code = errorCode(error);
        if (code === "NOSCRIPT") {
          // A restarted or failed-over node: load again, and probe its clock again.
          await node.script("LOAD", VERIFY_SCRIPT);
          this.#clocks.delete(node);
          continue;
        }
        if (this.#target.kind !== "cluster" || args.length <= HEADER_ARGS) break;
        // A key this node no longer serves (reshard, failover): refresh the map and let the
        // caller regroup; never read a key on the wrong node as absent.
        await refreshSlots(this.#target.client as Cluster);
        this.#mapAddresses();
        throw new StaleRouteError(code, { cause: error });
      }
    }
    throw new VerifyCallError(`verify script failed on a node (${errorCode(last)})`, {
      cause: last,
    });
  }

  #mapAddresses(): void {
    this.#byAddress = new Map(
      this.#target.masters().map((node) => [`${node.options.host}:${node.options.port}`, node]),
    );
    if (this.#target.kind === "cluster") {
      this.#ranges = slotRanges((this.#target.client as Cluster).slots, this.#byAddress);
    }
  }
}

/** Each master's slots as "a-b,c-d" ranges, from the cluster client's slot → addresses map. */
function slotRanges(slots: string[][], byAddress: ReadonlyMap<string, Redis>): Map<Redis, string> {
  const ranges = new Map<Redis, string[]>();
  for (let start = 0; start < slots.length;) {
    const owner = slots[start]?.[0];
    let end = start;
    while (end + 1 < slots.length && slots[end + 1]?.[0] === owner) end++;
    const node = owner === undefined ? undefined : byAddress.get(owner);
    if (node !== undefined) ranges.set(node, [...ranges.get(node) ?? [], `${start}-${end}`]);
    start = end + 1;
  }
  return new Map([...ranges].map(([node, list]) => [node, list.join(",")]));
}

function refreshSlots(cluster: Cluster): Promise<void> {
  return new Promise((resolve) => cluster.refreshSlotsCache(() => resolve()));
}

/** The node refused a key it does not serve; regroup the keys and call again. */
export class StaleRouteError extends Error {
  constructor(code: string, options?: ErrorOptions) {
    super(`a node refused keys it does not serve (${code}); the slot map was refreshed`, options);
    this.name = "StaleRouteError";
  }
}
