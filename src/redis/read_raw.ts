/**
 * Raw reads for the read-only checks (verify): commands go out with Buffer replies, so key names,
 * field names and values stay bytes, never re-encoded. Errors come back per command, not thrown.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { classify } from "./errors.ts";
import { Cluster, type Redis } from "./ioredis.ts";

/** A reply: the error or the value. */
export type Reply = [Error | null, unknown];

/**
 * Runs read commands with raw (Buffer) replies. Standalone: one pipeline. Cluster: the commands
 * go out concurrently (a cluster pipeline must stay within one slot), which ioredis still writes
 * back to back per node.
 *
 * Commands are sent in upper case on purpose: ioredis's HGETALL reply transformer (keyed by the
 * lower-case name) would turn field names into UTF-8 strings and lose bytes; the upper-case
 * name keeps the raw `[field, value, ...]` array.
 */
export async function readAll(
  reader: Redis | Cluster,
  commands: readonly [string, ...(Buffer | string)[]][],
): Promise<Reply[]> {
  if (commands.length === 0) return [];
  if (reader instanceof Cluster) {
    return await Promise.all(
      commands.map(([name, ...args]) =>
        reader.callBuffer(name, ...args).then(
          (value): Reply => [null, value],
          (error: unknown): Reply => [asError(error), null],
        )
      ),
    );
  }
  const pipeline = reader.pipeline();
  for (const [name, ...args] of commands) pipeline.callBuffer(name, ...args);
  const replies = await pipeline.exec();
  if (!replies) throw new Error("Redis pipeline was discarded");
  return replies as Reply[];
}

/** A raw HGETALL reply as field (latin1, byte-exact) -> value; empty when the key is absent. */
export function toFieldMap(reply: unknown): Map<string, Buffer> {
  if (!Array.isArray(reply)) {
    throw new TypeError("HGETALL reply is not a flat array (ioredis reply transformer applied?)");
  }
  const fields = new Map<string, Buffer>();
  for (let i = 0; i + 1 < reply.length; i += 2) {
    fields.set(asBuffer(reply[i]).toString("latin1"), asBuffer(reply[i + 1]));
  }
  return fields;
}

/** A reply value as bytes (`null` and `undefined` as empty). */
export function asBuffer(value: unknown): Buffer {
  if (value instanceof Buffer) return value;
  if (value instanceof Uint8Array) return Buffer.from(value);
  return Buffer.from(value === null || value === undefined ? "" : String(value));
}

/** `error` as an Error (ioredis rejects with Errors; anything else is wrapped). */
function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

/** True when a read failed because the key holds another type (`WRONGTYPE`). */
export function isWrongType(error: Error | null): boolean {
  return error !== null && classify(error).kind === "wrongtype";
}

/** Throws `error` when set (a Redis error other than the WRONGTYPE we classify). */
export function rethrow(error: Error | null): void {
  if (error) throw error;
}
