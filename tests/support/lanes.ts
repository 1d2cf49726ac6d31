/**
 * Whether a `verify --full` run took lanes: its lane script is in the server's script cache
 * (flush the cache before the run).
 *
 * @module
 */
import type { Redis } from "../../src/redis/ioredis.ts";
import { LANE_SCRIPT } from "../../src/verify/full/lane_script.ts";

/** The lane script's SHA-1, as SCRIPT LOAD names it. */
export async function laneScriptSha(): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(LANE_SCRIPT));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** True when the lane script was loaded on `client`'s server since its cache was last empty. */
export async function ranLanes(client: Redis): Promise<boolean> {
  const [exists] = await client.call("SCRIPT", "EXISTS", await laneScriptSha()) as number[];
  return exists === 1;
}
