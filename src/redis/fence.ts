/**
 * A SCAN cursor belongs to one server process. ioredis reconnects by itself, so when a server
 * restarts (or a failover moves us to another primary) while no command is in flight, nothing
 * fails: the next SCAN carries the old cursor to another keyspace and silently skips keys. This
 * fence notices the new `run_id` at reconnect and fails the next SCAN that continues a cursor as
 * an outage, so the engine rescans the node from cursor 0 (valid anywhere; it lifts the fence).
 *
 * @module
 */
import { serverRunId } from "./availability.ts";
import { ServerChangedError } from "./errors.ts";
import type { Redis } from "./ioredis.ts";

type ScanBuffer = Redis["scanBuffer"];

/** Each fenced node's check of a cursor, for SCANs sent another way (control/scanner.ts). */
const fences = new WeakMap<Redis, (cursor: string) => Promise<void>>();

/**
 * Rejects with {@linkcode ServerChangedError} when `cursor` continues a scan on a node whose server
 * changed since (a no-op on a node without a fence, and for cursor "0", which lifts it).
 */
export async function checkScanCursor(node: Redis, cursor: string): Promise<void> {
  await fences.get(node)?.(cursor);
}

/** Installs the fence on `node` (a connection the scanner uses); `name()` is its `host:port`. */
export function fenceScanCursors(node: Redis, name: () => string): void {
  let runId: string | undefined;
  let fenced = false;
  /** The `run_id` could not be read after a reconnect: read it again before the next SCAN. */
  let unread = false;
  const read = () =>
    serverRunId(node).then(
      (now) => {
        if (runId !== undefined && now !== runId) fenced = true;
        runId = now;
        unread = false;
      },
      () => {
        if (runId !== undefined) unread = true;
      },
    );
  let check: Promise<void> = Promise.resolve();
  node.on("ready", () => {
    check = read();
  });
  const guard = async (cursor: string) => {
    await check;
    // Unknown whether the server changed (the connection dropped again before INFO answered):
    // ask now. A server that stays unreadable fails the SCAN as an outage, never for good.
    if (unread && cursor !== "0") await (check = read());
    if (cursor === "0") fenced = unread = false;
    else if (fenced || unread) throw new ServerChangedError(name());
  };
  fences.set(node, guard);
  const scan = node.scanBuffer.bind(node) as (...args: unknown[]) => ReturnType<ScanBuffer>;
  node.scanBuffer = (async (cursor: string | number | Uint8Array, ...rest: unknown[]) => {
    await guard(String(cursor));
    return await scan(cursor, ...rest);
  }) as ScanBuffer;
}
