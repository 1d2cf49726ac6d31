/**
 * Where `verify --full` checks jobs on lanes (`lanes.ts`), and the glue between the per-node loop
 * (`run.ts`) and the lanes: the default workspace rule without `--workspace`, on every standalone
 * and on cluster masters before Redis 7.2. Everything else (and the orphans phase) stays on the
 * sub-batch path.
 *
 * @module
 */
import { SafetyRefusal } from "../../errors.ts";
import { redisVersion } from "../../migrate/in_server.ts";
import type { Redis } from "../../redis/ioredis.ts";
import type { KeySchema } from "../../schema.ts";
import type { NodeProgress } from "./checkpoint.ts";
import { freshLanes, type LaneDeps, type LaneOptions, runLanes } from "./lanes.ts";

/**
 * True when a verify with these options checks its jobs on lanes (where the master allows:
 * {@linkcode nodeTakesLanes}): the default workspace rule (the script checks it as a Lua pattern)
 * and no `--workspace`. Anything else stays on the sub-batch path.
 */
export function lanesApply(options: { keys: KeySchema; workspace?: string }): boolean {
  return options.keys.isDefaultRule && options.workspace === undefined;
}

/**
 * True when `node`'s cursor low bits are its main table's bucket bits: every standalone, and a
 * cluster master before Redis 7.2 (newer cluster servers keep one dict per slot, and the cursor's
 * low bits are the slot: lanes would not partition).
 */
export async function nodeTakesLanes(node: Redis, cluster: boolean): Promise<boolean> {
  if (!cluster) return true;
  const [major, minor] = redisVersion(await node.info("server"));
  return major < 7 || (major === 7 && minor < 2);
}

/**
 * Refuses a node's stored jobs progress made by the other path. Not possible with the same
 * parameters and run_id (the fingerprint names the path, the server's version follows its run_id):
 * a bug, or a hand-edited checkpoint. One path's cursor is never read as the other's.
 *
 * @throws {SafetyRefusal} when `progress` was stored by the other path.
 */
export function checkProgressForm(
  progress: NodeProgress,
  onLanes: boolean,
  where: { key: string; node: string },
): void {
  if (progress.phase !== "jobs") return;
  const stored = progress.lanes !== undefined ? true : progress.cursor === "0" ? onLanes : false;
  if (stored === onLanes) return;
  throw new SafetyRefusal(
    `${where.key} holds ${where.node}'s progress in the other path's form; add --reset-progress ` +
      "to start over",
  );
}

/** Runs a node's jobs phase on lanes from its stored lane cursors (or the lanes' starts). */
export async function runLanePhase(
  node: Redis,
  progress: NodeProgress,
  options: Omit<LaneOptions, "cursors">,
  deps: LaneDeps,
): Promise<void> {
  await runLanes(node, { ...options, cursors: progress.lanes ?? freshLanes() }, deps);
}
