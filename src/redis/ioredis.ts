/**
 * The one import of ioredis. Its `debug` package's Node entry reads every environment variable at
 * load (unrestricted `--allow-env` under Deno); with `process.browser` set during the import it
 * loads its browser entry, which reads only `DEBUG`, so `--allow-env` stays as deno.json lists it.
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
