/**
 * The one import of ioredis. ioredis loads the `debug` package, whose Node entry enumerates every
 * environment variable at load time; under Deno that needs unrestricted `--allow-env`. `debug` picks
 * its browser entry (which reads only `DEBUG`) when `process.browser` is true, so we set that flag
 * for the duration of the import and remove it again. This keeps `--allow-env` narrowed to the
 * variables listed in deno.json. And the stream guard below.
 *
 * @module
 */
import process from "node:process";
import type * as IORedis from "ioredis";

const flagged = process as unknown as { browser?: boolean };
flagged.browser = true;
const ioredis = await import("ioredis");
delete flagged.browser;

/** ioredis's standalone client class. */
export const Redis: typeof IORedis.Redis = ioredis.Redis;
/** ioredis's standalone client type. */
export type Redis = IORedis.Redis;
/** ioredis's cluster client class. */
export const Cluster: typeof IORedis.Cluster = ioredis.Cluster;
/** ioredis's cluster client type. */
export type Cluster = IORedis.Cluster;
export type { ClusterNode, ClusterOptions, RedisOptions } from "ioredis";

// ---------------------------------------------------------------------------------------------
// the stream guard
/*
 * ioredis listens for a socket's 'error' with `once`. Under Deno a TLS socket can emit a second
 * error after the first (a write EPIPE right after the server's fatal alert, e.g. when it demands
 * a client certificate); with no listener left, that error is uncaught and ends the process
 * instead of becoming an exit-3 "unreachable". The guard keeps a listener on every socket the
 * client opens; ioredis still sees and handles the first error as before.
 */

interface Connector {
  connect(...args: unknown[]): Promise<{ on(event: "error", fn: () => void): unknown }>;
}

/** Installs the guard on `client` (before its first connect). */
export function guardStreamErrors(client: Redis): void {
  const connector = (client as unknown as { connector?: Connector }).connector;
  if (!connector) return;
  const connect = connector.connect.bind(connector);
  connector.connect = async (...args: unknown[]) => {
    const stream = await connect(...args);
    stream.on("error", () => {});
    return stream;
  };
}

/** Installs the guard on every node connection a cluster client opens. */
export function guardClusterStreamErrors(cluster: Cluster): void {
  cluster.on("+node", (node: Redis) => guardStreamErrors(node));
}
