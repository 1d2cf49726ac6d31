/**
 * Is a node there, and is it the same server? What the run asks while it waits out an outage:
 * PING with a bound, the role (a failover can leave us on a replica), and `run_id` (new after
 * every restart, which makes a stored SCAN cursor meaningless).
 *
 * @module
 */
import { backoffMs, RECONNECT } from "../async/backoff.ts";
import { pause, withTimeout } from "../async/delay.ts";
import { RedisUnavailableError } from "../errors.ts";
import { classify, NO_ANSWER } from "./errors.ts";
import type { Redis } from "./ioredis.ts";

/** The node's `run_id` (new after every restart). */
export async function serverRunId(node: Redis): Promise<string> {
  const info = await node.info("server");
  return info.match(/run_id:(\w+)/)?.[1] ?? "";
}

/** Parses `INFO server`'s redis_version into [major, minor]. */
export function redisVersion(info: string): [number, number] {
  const match = info.match(/redis_version:(\d+)\.(\d+)/);
  return match ? [Number(match[1]), Number(match[2])] : [0, 0];
}

/** Options of {@linkcode waitForRedis}. */
export interface WaitOptions {
  name: string;
  /** performance.now() after which the outage is over the bound. */
  deadline: number;
  /** Checkpoint cursor, for the error message. */
  cursor: string;
  /** Also wait until the node is a primary (writable). */
  needsPrimary: boolean;
  signal?: AbortSignal;
}

/**
 * Waits, with backoff, until the node answers PING (and is a primary when that is needed). Always
 * pauses at least once, so an error that persists while PING works cannot spin; the deadline
 * counts from the first failure since the last good batch, so such an error still ends in exit 3.
 *
 * @returns false when stopped by the signal.
 * @throws {RedisUnavailableError} once the deadline passes.
 */
export async function waitForRedis(node: Redis, options: WaitOptions): Promise<boolean> {
  for (let attempt = 0;; attempt++) {
    if (!await pause(backoffMs(attempt, RECONNECT), { signal: options.signal })) return false;
    if (await answersPing(node) && (!options.needsPrimary || await isPrimary(node))) return true;
    if (performance.now() >= options.deadline) {
      throw new RedisUnavailableError(
        `lost Redis at ${options.name} for longer than --max-outage; ` +
          `the checkpoint is kept at cursor=${options.cursor}`,
      );
    }
  }
}

async function isPrimary(node: Redis): Promise<boolean> {
  try {
    return parseRole(await node.info("replication")).primary;
  } catch {
    return false;
  }
}

/**
 * The one reader of a node's role, from `INFO replication` (pure); `primaryOf` is a replica's
 * primary, as `host:port`.
 */
export function parseRole(info: string): { primary: boolean; primaryOf?: string } {
  if (/^role:master\s*$/m.test(info)) return { primary: true };
  const host = /^master_host:(\S+)/m.exec(info)?.[1];
  const port = /^master_port:(\d+)/m.exec(info)?.[1];
  return { primary: false, primaryOf: host && port ? `${host}:${port}` : undefined };
}

/** PING with a 1 s limit; false on any error (down, or LOADING its data). */
async function answersPing(node: Redis): Promise<boolean> {
  let pong: unknown;
  const failure = await withTimeout(node.ping().then((reply) => pong = reply), 1000);
  return failure === undefined && pong === "PONG";
}

/**
 * When each server was lost, as its connections see it: from the moment a connection closes (the
 * server died or restarted), or from the start of a silence (ioredis `socketTimeout`: a frozen
 * server, SIGSTOP or a hung VM, keeps the TCP connection open and answers nothing; the connection
 * is closed, so what is pending on it fails now). A connection ready again, or a reply, clears the
 * mark. Every wait for a node counts from this moment, so waits that follow each other (a cluster
 * call's own retries, then the engine's wait) never add up past `--max-outage`.
 */
export class LossClock {
  readonly #silenceMs: number | undefined;
  readonly #since = new Map<string, number>();
  /** When each server last answered a command on any watched connection. */
  readonly #lastReply = new Map<string, number>();
  /** Servers marked lost by a refusal (they answer, but serve nothing), and what they refuse. */
  readonly #refusals = new Map<string, Refusal>();
  readonly #connections = new Map<string, Set<Redis>>();
  readonly #abandoned = new Set<string>();

  /** `silenceMs`: the `socketTimeout` of the watched connections, if any. */
  constructor(silenceMs?: number) {
    this.#silenceMs = silenceMs;
  }

  /** Watches `client`, a connection to the server `name()` names now (before its first connect). */
  watch(client: Redis, name: () => string): void {
    let address = name();
    const track = () => {
      this.#connections.get(address)?.delete(client);
      address = name();
      this.#connections.set(address, (this.#connections.get(address) ?? new Set()).add(client));
    };
    track();
    const send = client.sendCommand.bind(client);
    client.sendCommand = ((command: Parameters<Redis["sendCommand"]>[0], ...rest: unknown[]) => {
      if (this.#abandoned.has(name())) {
        command.reject(new AbandonedServerError(name()));
        return command.promise;
      }
      command.promise.then(
        () => this.#answered(name(), command.name),
        (error) => this.#refused(name(), error),
      );
      return (send as SendCommand)(command, ...rest);
    }) as Redis["sendCommand"];
    client.on("error", (error: Error) => {
      if (this.#silenceMs !== undefined && classify(error).code === NO_ANSWER) {
        // Silent since the server's last reply on any connection, at most `silenceMs`: ioredis
        // also raises this on a healthy connection, from a timer its dropped predecessor armed.
        const silentFrom = performance.now() - this.#silenceMs;
        this.#mark(name(), Math.max(silentFrom, this.#lastReply.get(name()) ?? silentFrom));
      }
    });
    client.on("close", () => this.#mark(name(), performance.now()));
    client.on("ready", () => {
      track();
      // A reconnect does not make a demoted server a primary again.
      if (!this.#refusals.has(name())) this.#since.delete(name());
    });
    client.on("end", () => this.#connections.get(address)?.delete(client));
  }

  /** performance.now() when the server `name` was lost; undefined while it answers. */
  lostSince(name: string): number | undefined {
    return this.#since.get(name);
  }

  /**
   * Gives up on the server `name`: its watched connections are closed and every later command to
   * it (a cluster client's own retries too) fails at once with {@linkcode AbandonedServerError},
   * so a run ended by a lost server settles the rest of its work without waiting for it.
   */
  abandon(name: string): void {
    this.#abandoned.add(name);
    for (const client of this.#connections.get(name) ?? []) client.disconnect();
  }

  /**
   * The server answered: it is there (also when the connection that marked it closed for good). A
   * server marked for a refusal is back only when it runs a script call (a write one, after
   * READONLY).
   */
  #answered(name: string, command: string): void {
    this.#lastReply.set(name, performance.now());
    if (this.#since.size === 0) return;
    const refusal = this.#refusals.get(name);
    if (refusal !== undefined) {
      if (!SCRIPT_CALLS.has(command)) return;
      if (refusal === "writes" && command.endsWith("_ro")) return;
      this.#refusals.delete(name);
    }
    this.#since.delete(name);
  }

  /**
   * A server that refuses as no primary (READONLY: demoted; MASTERDOWN: a replica cut off from its
   * primary; CLUSTERDOWN: slots nobody serves) is lost from its first such reply: --max-outage
   * bounds the wait for a primary that never comes.
   */
  #refused(name: string, error: unknown): void {
    const kind = classify(error).kind;
    const refusal: Refusal | undefined = kind === "readonly"
      ? "writes"
      : kind === "clusterdown" || kind === "masterdown"
      ? "all"
      : undefined;
    if (refusal === undefined || this.#since.has(name)) return;
    this.#since.set(name, performance.now());
    this.#refusals.set(name, refusal);
  }

  #mark(name: string, since: number): void {
    const known = this.#since.get(name);
    if (known === undefined || since < known) this.#since.set(name, since);
  }
}

/** A command to a server the run gave up on ({@linkcode LossClock.abandon}). */
export class AbandonedServerError extends Error {
  constructor(name: string) {
    super(`Connection is closed: the run gave up on Redis at ${name} (lost past --max-outage)`);
    this.name = "AbandonedServerError";
  }
}

/** What a server marked lost by a refusal refuses: writes (READONLY), or every key. */
type Refusal = "writes" | "all";

/** Commands whose success shows a refusing server serves again (ioredis's names). */
const SCRIPT_CALLS: ReadonlySet<string> = new Set(
  ["evalsha", "eval", "fcall", "evalsha_ro", "eval_ro", "fcall_ro"],
);

type SendCommand = (command: unknown, ...rest: unknown[]) => Promise<unknown>;
