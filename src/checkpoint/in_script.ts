/**
 * The checkpoint written inside the copy script (standalone). The last script call of a batch
 * stores the batch's checkpoint atomically with its own copies, so the engine can send batch k+1
 * while batch k is still in flight: no save round trip and no gap between batches.
 *
 * Why the checkpoint never passes a key that still has to be retried:
 * - The calls of a batch are sent on one connection and Redis runs them in that order, but the last
 *   call is sent before the earlier calls' replies are known. So the last call must learn in Redis
 *   whether every earlier call of its batch ended clean (no key left to retry).
 * - A call can fail in two ways: per key inside the script (OOM at a write, a changed workspace id,
 *   any error code), which the script sees; or as a whole, before it runs (OOM refused at the first
 *   write, NOSCRIPT after a script flush, a lost connection), which no script sees. A "dirty" mark
 *   set by failing calls would miss the second kind. So it is the other way round: a chain of
 *   tokens. Call j of batch k sets the token `k:j` only if it ran, every key it handled is final,
 *   and the token it found is `k:(j-1)`. Any failure, of either kind, breaks the chain.
 * - The last call stores the checkpoint only if the chain is whole, its own keys are clean, and the
 *   stored cursor is still the one the batch expects (compare-and-set): if an earlier batch did not
 *   store its checkpoint (it had a failure), a later one must not jump over it.
 * - Every write is `pcall`ed: a refused write (OOM) means "not stored", never a half-done step.
 * - When a batch's checkpoint did not land in the script, the engine stores it itself once every
 *   key of the batch is final (after the retries), and before it sends another batch
 *   (run/pipeline.ts).
 * Tokens carry a per-run nonce, so a token left behind by an earlier run never matches.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import type { NodeCheckpoint } from "./store.ts";

/** The field of the checkpoint's meta hash that holds the current call token. */
export const CHAIN_FIELD = "chain";

/** What one script call does for the in-script checkpoint. */
export interface ScriptStep {
  /** The checkpoint keys (`P:cursor`, `P:last_job`, `P:meta`). */
  keys: { cursor: string; lastJob: string; meta: string; within: string };
  /** The token the previous call of the batch set ("" for the batch's first call). */
  previous: string;
  /** The token this call sets when it ran clean. */
  token: string;
  /** The batch's last call only: the checkpoint to store, if the cursor is still `expected`. */
  checkpoint?: { expected: string; next: NodeCheckpoint };
  /** Told by the strategy what the call did: true = token set (or checkpoint stored). */
  done(applied: boolean): void;
}

/**
 * The ARGV tail that carries a step to the copy script (after the per-key arguments): meta key,
 * previous token, token; then, for the last call, cursor key, expected cursor, new cursor,
 * last_job key, last_job ("" = none), and the key of a position inside a batch (deleted). The run_id and parameters are not repeated: the engine
 * stored them with the cursor the chain starts from, and they do not change while it runs.
 */
export function stepArgs(step: ScriptStep): (string | Buffer)[] {
  const args: (string | Buffer)[] = [step.keys.meta, step.previous, step.token];
  const checkpoint = step.checkpoint;
  if (checkpoint === undefined) return args;
  const { next } = checkpoint;
  return [
    ...args,
    step.keys.cursor,
    checkpoint.expected,
    next.cursor,
    step.keys.lastJob,
    next.lastJob ?? "",
    step.keys.within,
  ];
}

/**
 * The Lua that runs a step at the end of the copy script. It expects `clean` (false when any key
 * of the call got an error or a changed workspace id), `out` (the reply) and `step_at` (the ARGV
 * index just before the step's arguments). It appends one integer to the reply: 1 when the token
 * was set (or the checkpoint stored), 0 when not; nothing when the call carries no step.
 */
export const STEP_LUA = `
if ARGV[step_at + 1] then
  -- pcall's reply is a table with .err when the write was refused (a status reply is {ok=...})
  local function wrote(reply) return type(reply) ~= "table" or reply.err == nil end
  local meta, previous, token = ARGV[step_at + 1], ARGV[step_at + 2], ARGV[step_at + 3]
  local applied = 0
  local chained = previous == "" or redis.call("HGET", meta, "${CHAIN_FIELD}") == previous
  if clean and chained then
    local cursor_key = ARGV[step_at + 4]
    if cursor_key == nil then
      if wrote(redis.pcall("HSET", meta, "${CHAIN_FIELD}", token)) then applied = 1 end
    elseif redis.call("GET", cursor_key) == ARGV[step_at + 5] then
      -- The cursor first: if it is refused (OOM), nothing of the step was written.
      if wrote(redis.pcall("SET", cursor_key, ARGV[step_at + 6])) then
        applied = 1
        if ARGV[step_at + 8] ~= "" then redis.pcall("SET", ARGV[step_at + 7], ARGV[step_at + 8]) end
        -- A position inside an earlier batch (a cut-short run) is behind this cursor now.
        redis.pcall("DEL", ARGV[step_at + 9])
      end
    end
  end
  out[#out + 1] = applied
end
`;
