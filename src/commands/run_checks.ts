/**
 * What `backfill` checks before its first write (the lock included), so a refusal leaves Redis
 * untouched.
 *
 * @module
 */
import { CheckpointStore } from "../run/checkpointer.ts";
import type { RunOptions } from "../cli/args.ts";
import { controlKey, statusKey } from "../control/remote.ts";
import { SafetyRefusal } from "../errors.ts";
import type { Redis } from "../redis/ioredis.ts";
import type { RedisTarget } from "../redis/target.ts";
import type { Logger } from "../run_events.ts";
import { intentKeyOfSlot } from "../migrate/cluster/intents.ts";
import { fenceKey, lockKey } from "../safety/lock.ts";
import { checkHeadroom } from "../safety/memory.ts";
import { checkPermissions } from "../safety/preflight.ts";
import { waitForPrimaries } from "../safety/primary.ts";

/**
 * Primaries (execute only), permissions, headroom; resolves to the commands the Redis user may
 * not run (dry-run reports them in its summary).
 *
 * @throws {SafetyRefusal} when `--execute` lacks a permission or a master lacks headroom.
 * @throws {RedisUnavailableError} when a master is still a replica after `--max-outage`.
 */
export async function checkBeforeWriting(
  target: RedisTarget,
  options: RunOptions,
  { logger, signal }: { logger: Logger; signal: AbortSignal },
): Promise<string[] | undefined> {
  if (options.mode === "execute") {
    await waitForPrimaries(target.masters(), {
      nameOf: (node) => target.nodeName(node),
      maxOutage: options.maxOutage,
      logger,
      signal,
    });
  }
  const missing = await preflightPermissions(target, options, logger);
  await checkHeadroom(target.masters(), {
    maxPct: options.maxMemoryPct,
    enforce: options.mode === "execute",
    logger,
    nameOf: (node) => target.nodeName(node),
    keys: options.keys,
  });
  return missing;
}

/** What the Redis user may not run of what `--execute` needs: execute refuses, dry-run warns. */
async function preflightPermissions(
  target: RedisTarget,
  options: RunOptions,
  logger: Logger,
): Promise<string[] | undefined> {
  const store = new CheckpointStore(target.client as Redis, options.progressKey);
  const names = store.keys(target.kind === "cluster" ? "preflight" : "");
  const missing = await checkPermissions(
    target.masters(),
    {
      ...names,
      lock: lockKey(options.progressKey, ""),
      control: controlKey(options.progressKey),
      status: statusKey(options.progressKey),
      perSlot: target.kind === "cluster"
        ? [fenceKey(options.progressKey, 0), intentKeyOfSlot(options.progressKey, 0)]
        : undefined,
    },
    options.keys,
  );
  if (missing === undefined || missing.length === 0) return missing;
  const message = `the Redis user may not run what --execute needs: ${missing.join(", ")}`;
  if (options.mode === "execute") {
    throw new SafetyRefusal(
      `${message}; nothing was written (grant it with ACL SETUSER, or run as another user)`,
    );
  }
  logger.log("warn", "preflight", `${message}; --execute would refuse to start`);
  return missing;
}
