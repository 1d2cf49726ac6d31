/**
 * The one import of ioredis. ioredis loads the `debug` package, whose Node entry enumerates every
 * environment variable at load time; under Deno that needs unrestricted `--allow-env`. `debug` picks
 * its browser entry (which reads only `DEBUG`) when `process.browser` is true, so we set that flag
 * for the duration of the import and remove it again. This keeps `--allow-env` narrowed to the
 * variables listed in deno.json.
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
export type { ClusterOptions, RedisOptions } from "ioredis";
