/**
 * Runs the cluster scripts: grouped on the master that serves a group's keys (one call per node),
 * or for one job through the routed cluster client (which follows MOVED and ASK). A group call
 * that meets a moved slot, a lost node or a cluster still settling falls back to routed calls per
 * job, retried with backoff within a budget. Every call carries the run's fence (safety/lock.ts);
 * a call refused as `FENCED` ends the run with a refusal. A call of a script that copies also
 * carries its call record (migrate/call_record.ts), kept on the node the call runs on.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import { errorCode, isNotServedHere, isOutage, isScriptMissing } from "../../redis/errors.ts";
import type { Cluster, Redis } from "../../redis/ioredis.ts";
import { backoffMs, RECONNECT } from "../../async/backoff.ts";
import { pause } from "../../async/delay.ts";
import { type ClusterScript, Code } from "./scripts.ts";
import { keySlot, slotKey } from "../../redis/slot.ts";
import { CallRecords, type LostCopies, recordArgs, type RecordedCall } from "../call_record.ts";
import { refusedAsFenced } from "../../safety/lock.ts";
import { TRANSIENT_ERRORS } from "../strategy.ts";

/** Error codes the engine's one retry may fix: the shared transient ones and cluster redirects. */
export const TRANSIENT: ReadonlySet<string> = new Set([
  ...TRANSIENT_ERRORS,
  "CLUSTERDOWN",
  "MOVED",
  "ASK",
]);

/**
 * Error codes that pass once the cluster settles (the transient ones but memory and a busy
 * script): a group falls back, a job is retried.
 */
const TOPOLOGY = new Set([...TRANSIENT].filter((code) => code !== "OOM" && code !== "BUSY"));

/** `callBuffer(command, arg, …, [arg, …])`, which ioredis accepts but does not declare. */
type FlatCall = (command: string, ...args: unknown[]) => Promise<unknown>;

/** One job's part of a call: the key that decides its node, its ARGV entries, its old key. */
export interface Job {
  key: Buffer;
  args: (Buffer | string | number)[];
  /** The old key this job copies, for the call record (default: `key`). */
  oldKey?: Buffer;
}

/** What one job's call gave: its reply or the error of its call. */
export type Settled = { ok: true; reply: unknown[] } | { ok: false; error: unknown };

/** Options of one {@linkcode ScriptRunner.run}. */
export interface RunOptions {
  /**
   * Fall back to routed calls per job (default). Without it a moved job answers `{moved}` and a
   * failed group call fails its jobs (for scripts that need two keys on one node).
   */
  routed?: boolean;
  /** The script copies: each call carries a call record. */
  recorded?: boolean;
  signal?: AbortSignal;
}

/** Options for {@linkcode ScriptRunner}. */
export interface RunnerOptions {
  /** How long a job keeps retrying topology errors (a failover's election). */
  budgetMs: number;
  /** The fence every call carries (absent: unfenced, for a caller that holds no lock). */
  fence?: { argsFor(key: Uint8Array): string[] };
  /** The progress key the call records are named after. */
  progressKey: string;
}

const UNFENCED = ["", "0"];

/** Runs grouped script calls on a cluster. */
export class ScriptRunner {
  readonly #cluster: Cluster;
  readonly #options: RunnerOptions;
  readonly #calls = new CallRecords();
  readonly #recordBase: string;
  /** Per master address, the slot whose record key its grouped calls use. */
  readonly #recordSlots = new Map<string, number>();

  constructor(cluster: Cluster, options: RunnerOptions) {
    this.#cluster = cluster;
    this.#options = options;
    this.#recordBase = `${options.progressKey}:calls`;
  }

  /**
   * Runs `script` for every job, grouped by the master serving each job's key, with `header`
   * first in each call's ARGV (after the fence). Settles one entry per job, in order.
   *
   * @throws {SafetyRefusal} when Redis refused a call as `FENCED`: this runner lost its lock.
   */
  async run(
    script: ClusterScript,
    header: (Buffer | string | number)[],
    jobs: readonly Job[],
    options: RunOptions = {},
  ): Promise<Settled[]> {
    const out: Settled[] = new Array(jobs.length);
    const fallback: number[] = [];
    const routed = options.routed ?? true;
    await Promise.all([...this.#groups(jobs)].map(async ([node, indexes]) => {
      if (node === undefined) return void fallback.push(...indexes);
      const group = indexes.map((i) => jobs[i]!);
      const recordKey = options.recorded ? this.#groupRecordKey(node, group[0]!.key) : undefined;
      try {
        const replies = await this.#send(node, script, header, group, recordKey);
        indexes.forEach((i, j) => {
          const reply = replies[j]!;
          if (reply[0] === Code.moved && routed) fallback.push(i);
          else out[i] = { ok: true, reply };
        });
      } catch (error) {
        if (isTopology(error) && routed) fallback.push(...indexes);
        else for (const i of indexes) out[i] = { ok: false, error };
      }
    }));
    const jobsRouted = fallback.map((i) => jobs[i]!);
    const retried = await this.#routed(script, header, jobsRouted, options);
    fallback.forEach((i, j) => out[i] = retried[j]!);
    for (const settled of out) {
      const refusal = settled.ok ? undefined : refusedAsFenced(settled.error);
      if (refusal !== undefined) throw refusal;
    }
    return out;
  }

  /** One call of `jobs` on a master, or of one job routed (its key declared); maybe recorded. */
  #send(
    client: Redis | Cluster,
    script: ClusterScript,
    header: (Buffer | string | number)[],
    jobs: readonly Job[],
    recordKey: string | undefined,
  ): Promise<unknown[][]> {
    const first = jobs[0]!.key;
    const declared = client === this.#cluster ? [first] : [];
    const send = (record?: RecordedCall) => {
      const args: unknown[] = [
        ...declared,
        ...(this.#options.fence?.argsFor(first) ?? UNFENCED),
        ...recordArgs(record),
        ...header,
      ];
      for (const job of jobs) for (const arg of job.args) args.push(arg);
      return this.#call(client, script, declared.length, args) as Promise<unknown[][]>;
    };
    if (recordKey === undefined) return send();
    return this.#calls.send(recordKey, jobs.map((job) => job.oldKey ?? job.key), send);
  }

  /**
   * The record key of grouped calls to `node`: one key per master (a slot it serves, kept while
   * it serves it), so the records of a long run stay a few fields per master.
   */
  #groupRecordKey(node: Redis, first: Uint8Array): string {
    const address = `${node.options.host}:${node.options.port}`;
    let slot = this.#recordSlots.get(address);
    if (slot === undefined || this.#cluster.slots[slot]?.[0] !== address) {
      slot = keySlot(first);
      this.#recordSlots.set(address, slot);
    }
    return slotKey(this.#recordBase, slot);
  }

  /** What the calls whose replies were lost copied, read from their records (routed). */
  async lostCopies(): Promise<LostCopies[]> {
    if (this.#calls.unanswered === 0) return [];
    return await this.#calls.lookUp((key, fields) => this.#cluster.hmget(key, ...fields));
  }

  /** True when the client's slot map puts both keys on one master. */
  sameNode(a: Uint8Array, b: Uint8Array): boolean {
    const first = this.#cluster.slots[keySlot(a)]?.[0];
    return first !== undefined && first === this.#cluster.slots[keySlot(b)]?.[0];
  }

  /** Job indexes by the master serving their key (undefined: slot unknown to the client). */
  #groups(jobs: readonly Job[]): Map<Redis | undefined, number[]> {
    const byAddress = new Map<string, Redis>();
    for (const node of this.#cluster.nodes("master")) {
      byAddress.set(`${node.options.host}:${node.options.port}`, node);
    }
    const groups = new Map<Redis | undefined, number[]>();
    jobs.forEach((job, i) => {
      const address = this.#cluster.slots[keySlot(job.key)]?.[0];
      const node = address === undefined ? undefined : byAddress.get(address);
      const group = groups.get(node) ?? [];
      if (group.length === 0) groups.set(node, group);
      group.push(i);
    });
    return groups;
  }

  /** One job per routed call (its key declared), topology errors retried within the budget. */
  async #routed(
    script: ClusterScript,
    header: (Buffer | string | number)[],
    jobs: Job[],
    options: RunOptions,
  ): Promise<Settled[]> {
    const signal = options.signal;
    const out: Settled[] = new Array(jobs.length);
    const deadline = Date.now() + this.#options.budgetMs;
    let pending = jobs.map((_, i) => i);
    for (let attempt = 0; pending.length > 0; attempt++) {
      const settled = await Promise.allSettled(pending.map(async (i) => {
        const job = jobs[i]!;
        const recordKey = options.recorded
          ? slotKey(this.#recordBase, keySlot(job.key))
          : undefined;
        const mine = (await this.#send(this.#cluster, script, header, [job], recordKey))[0]!;
        if (mine[0] === Code.moved) throw new Error("MOVED the slot moved during the call");
        return mine;
      }));
      const again: number[] = [];
      settled.forEach((s, j) => {
        const i = pending[j]!;
        if (s.status === "fulfilled") out[i] = { ok: true, reply: s.value };
        else if (Date.now() < deadline && !signal?.aborted && isTopology(s.reason)) again.push(i);
        else out[i] = { ok: false, error: s.reason };
      });
      pending = again;
      if (pending.length > 0) await pause(backoffMs(attempt, RECONNECT), { signal });
    }
    return out;
  }

  /** EVALSHA (EVALSHA_RO for read-only scripts), loading the script where the node lacks it. */
  async #call(
    client: Redis | Cluster,
    script: ClusterScript,
    numKeys: number,
    args: unknown[],
  ): Promise<unknown> {
    const ro = script.readOnly ? "_RO" : "";
    // ioredis flattens one level of arrays: the job arguments go as one array, never spread.
    const call = client.callBuffer.bind(client) as unknown as FlatCall;
    try {
      return await call(`EVALSHA${ro}`, script.sha, numKeys, args);
    } catch (error) {
      if (!isScriptMissing(error)) throw error;
      return await call(`EVAL${ro}`, script.lua, numKeys, args);
    }
  }
}

/** True for errors a routed retry may get past: moved slots, a settling cluster, a lost node. */
export function isTopology(error: unknown): boolean {
  return isOutage(error) || isNotServedHere(error) || TOPOLOGY.has(errorCode(error));
}
