/**
 * ioredis listens for a socket's 'error' with `once`. Under Deno a TLS socket can emit a second
 * error after the first (a write EPIPE right after the server's fatal alert, e.g. when it demands
 * a client certificate); with no listener left, that error is uncaught and ends the process
 * instead of becoming an exit-3 "unreachable". The guard keeps a listener on every socket the
 * client opens; ioredis still sees and handles the first error as before.
 *
 * @module
 */
import type { Cluster, Redis } from "./ioredis.ts";

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
