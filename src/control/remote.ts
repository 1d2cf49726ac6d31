/**
 * Live control: the CLI appends commands (`pause`, `resume`, `set-rps N`, `stop`) to the stream
 * `<P>:control`; every runner of the progress key (every `--shard`) reads the entries added since
 * it last looked, about once a second, and obeys them in order. Nobody removes entries, so no
 * runner takes a command from another. A run reads only entries after the last one that existed
 * when it started listening: a `stop` left by a dead run never reaches a later one (stream ids
 * only grow, whatever the clock). An entry that is no command is logged once and ignored: a typo
 * must never crash a migration. What the run says back, `<P>:status`, is below.
 *
 * @module
 */
import type { Cluster, Redis } from "../redis/ioredis.ts";
import { delay } from "../async/delay.ts";
import { parseShard, type Shard, shardLabel } from "../redis/shard.ts";
import type { RunMode } from "../run_events.ts";

/** A command the run obeys. */
export type ControlCommand =
  | { kind: "pause" }
  | { kind: "resume" }
  | { kind: "stop" }
  | { kind: "set-rps"; rps: number };

/** Entries the control stream keeps (a run reads every entry added within a second). */
const CONTROL_HISTORY = 100;

const FIELD = "command";

/** The control key of a progress key. */
export function controlKey(progressKey: string): string {
  return `${progressKey}:control`;
}

/** Parses a command's text; a string describing the problem when it is not a known command. */
export function parseControl(text: string): ControlCommand | string {
  const words = text.trim().split(/\s+/);
  const [verb, argument, ...rest] = words;
  if (rest.length > 0) return `too many words`;
  if ((verb === "pause" || verb === "resume" || verb === "stop") && argument === undefined) {
    return { kind: verb };
  }
  if (verb === "set-rps") {
    if (argument === undefined || !/^\d{1,9}$/.test(argument)) {
      return `set-rps needs a whole number >= 0 (0 = no cap)`;
    }
    return { kind: "set-rps", rps: Number(argument) };
  }
  return `not a known command (pause, resume, set-rps N, stop)`;
}

/** The text that stands for a command in an entry. */
export function formatControl(command: ControlCommand): string {
  return command.kind === "set-rps" ? `set-rps ${command.rps}` : command.kind;
}

/** Appends ARGV[1] as a command, replacing a plain value an older version stored. */
const WRITE_LUA = `local kind = redis.call("TYPE", KEYS[1]).ok
if kind ~= "stream" and kind ~= "none" then redis.call("DEL", KEYS[1]) end
return redis.call("XADD", KEYS[1], "MAXLEN", ARGV[2], "*", "${FIELD}", ARGV[1])`;

/** The entries after ARGV[1] (oldest first), or with "" the newest; none if not a stream. */
const READ_LUA = `if redis.call("TYPE", KEYS[1]).ok ~= "stream" then return {} end
if ARGV[1] == "" then return redis.call("XREVRANGE", KEYS[1], "+", "-", "COUNT", ARGV[2]) end
return redis.call("XRANGE", KEYS[1], "(" .. ARGV[1], "+", "COUNT", ARGV[2])`;

/** Appends a command to the control stream; returns its entry id. */
export async function writeControl(
  client: Redis | Cluster,
  progressKey: string,
  command: ControlCommand,
): Promise<string> {
  const key = controlKey(progressKey);
  return String(
    await client.eval(WRITE_LUA, 1, key, formatControl(command), String(CONTROL_HISTORY)),
  );
}

/** One entry of the stream as read: `command` is a string saying why when it is not one. */
export interface ControlEntry {
  id: string;
  command: ControlCommand | string;
  /** Raw: sanitise before logging. */
  text: string;
}

/** Where a run's listening begins: entries up to `since` ("0-0": none) are earlier runs'. */
export interface ControlOpening {
  since: string;
  /** Newest first. */
  earlier: ControlEntry[];
}

/** Reads where a run's listening begins (one step on the key's server). */
export async function openControl(
  client: Redis | Cluster,
  progressKey: string,
): Promise<ControlOpening> {
  const earlier = await readEntries(client, progressKey, "");
  return { since: earlier[0]?.id ?? "0-0", earlier };
}

async function readEntries(
  client: Redis | Cluster,
  progressKey: string,
  after: string,
): Promise<ControlEntry[]> {
  const key = controlKey(progressKey);
  const raw = await client.eval(READ_LUA, 1, key, after, String(CONTROL_HISTORY));
  return (raw as [id: string, fields: string[]][]).map(([id, fields]) => {
    const at = fields.findIndex((field, i) => i % 2 === 0 && field === FIELD);
    const text = at < 0 ? "" : fields[at + 1] ?? "";
    return { id, text, command: at < 0 ? `no '${FIELD}' field` : parseControl(text) };
  });
}

/** Options of {@linkcode watchControl}. */
export interface ControlWatchOptions {
  signal: AbortSignal;
  /** Where listening began; absent when that read failed (the first read that succeeds opens). */
  opening?: ControlOpening;
  /** Called in order, never concurrently. */
  onCommand: (command: ControlCommand) => void;
  /** An entry that is no command, sanitised: one call per entry. */
  onIgnored?: (event: { value: string; problem: string }) => void;
  /** Milliseconds between reads. Default 1000. */
  intervalMs?: number;
}

/**
 * Reads new entries until the signal aborts. A failed read is retried at the next interval (an
 * unreachable Redis is the engine's outage handling, not a control problem).
 */
export async function watchControl(
  client: Redis | Cluster,
  progressKey: string,
  options: ControlWatchOptions,
): Promise<void> {
  let seen = options.opening?.since;
  while (!options.signal.aborted) {
    if (seen === undefined) {
      seen = (await openControl(client, progressKey).catch(() => undefined))?.since;
    }
    const entries = seen === undefined
      ? []
      : await readEntries(client, progressKey, seen).catch(() => []);
    for (const entry of entries) {
      seen = entry.id;
      if (typeof entry.command === "string") {
        options.onIgnored?.({ value: sanitise(entry.text), problem: entry.command });
      } else options.onCommand(entry.command);
    }
    await delay(options.intervalMs ?? 1000, { signal: options.signal }).catch(() => {});
  }
}

/** At most 40 printable characters: the value goes into a log line. */
function sanitise(value: string): string {
  const printable = value.replace(/[^\x20-\x7e]/g, "?");
  return printable.length > 40 ? `${printable.slice(0, 40)}…` : printable;
}

// ---------------------------------------------------------------------------------------------
// the status
/*
 * A run publishes one JSON object in `<P>:status` about once a second, with an expiry. Its age is
 * read from the key's remaining TTL on the server, so a reader with a skewed clock still tells a
 * live run from a dead one. A `--shard` runner publishes `<P>:status:<I>/<N>`, listed in
 * `<P>:status:shards`; with no sharded runner `backfill status` prints the one-run form.
 */

/** Long enough to read who died, short enough to go away. */
export const STATUS_TTL_MS = 300_000;
/** Older than this, a status is stale: its run missed several refreshes. */
const STALE_AFTER_MS = 5_000;

/** The published object (`backfill status --json` prints it with `age_seconds` and `state`). */
export interface RunStatus {
  mode: RunMode;
  phase: "running" | "finished";
  holder: { host: string; pid: number };
  started_at: string;
  updated_at: string;
  /** Effective rate in jobs per second (0 = unlimited), the cap, and what holds it back. */
  rate: { rps: number; cap_rps: number; paused: boolean; throttled: string[] };
  counts: Record<string, number>;
  estimated_total: number;
  /** Seconds until the estimate is reached at the current pace; null when unknown. */
  eta_seconds: number | null;
  /** SCAN cursor per node (`host:port` → cursor). */
  cursors: Record<string, string>;
  /** What this run's operator commands set; absent in an older version's status. */
  control?: { operator_paused: boolean; cap_by: "--rps" | "set-rps" };
  /** The key mapping (`--from -> --to`); absent for the default mapping. */
  mapping?: string;
}

/** The one place status keys are named: `<P>:status`, or `<P>:status:<I>/<N>` for a shard. */
export function statusKey(progressKey: string, shard?: Shard): string {
  return shard === undefined || shard.count === 1
    ? `${progressKey}:status`
    : `${progressKey}:status:${shardLabel(shard)}`;
}

/** The set of shard labels (`I/N`) that published a status. */
export function statusShardsKey(progressKey: string): string {
  return `${progressKey}:status:shards`;
}

/** Seconds until `estimatedTotal` at the pace so far; null before there is a pace. */
export function etaSeconds(
  scanned: number,
  estimatedTotal: number,
  elapsedSeconds: number,
): number | null {
  if (scanned <= 0 || elapsedSeconds <= 0) return null;
  return Math.max(0, (estimatedTotal - scanned) / (scanned / elapsedSeconds));
}

/** Options of {@linkcode publishStatus}. */
export interface StatusPublishOptions {
  /** What to publish now (without `updated_at`). */
  snapshot: () => Omit<RunStatus, "updated_at">;
  signal: AbortSignal;
  /** Milliseconds between updates. Default 1000. */
  intervalMs?: number;
  shard?: Shard;
}

/** Writes one status now (a sharded runner also lists its shard in {@linkcode statusShardsKey}). */
export async function writeStatus(
  client: Redis | Cluster,
  progressKey: string,
  status: Omit<RunStatus, "updated_at">,
  shard?: Shard,
): Promise<void> {
  const value: RunStatus = { ...status, updated_at: new Date().toISOString() };
  await client.set(statusKey(progressKey, shard), JSON.stringify(value), "PX", STATUS_TTL_MS);
  if (shard !== undefined && shard.count > 1) {
    // Separate commands: on a cluster the two keys may live on different masters.
    await client.sadd(statusShardsKey(progressKey), shardLabel(shard));
    await client.pexpire(statusShardsKey(progressKey), STATUS_TTL_MS);
  }
}

/**
 * Publishes the snapshot until the signal aborts. A failed write is skipped: the status is a view,
 * the run never fails for it. The caller writes the final status with {@linkcode writeStatus}.
 */
export async function publishStatus(
  client: Redis | Cluster,
  progressKey: string,
  options: StatusPublishOptions,
): Promise<void> {
  while (!options.signal.aborted) {
    await writeStatus(client, progressKey, options.snapshot(), options.shard).catch(() => {});
    await delay(options.intervalMs ?? 1000, { signal: options.signal }).catch(() => {});
  }
}

/** A status as read back, with its age by the server's clock; `shard` undefined for a whole run. */
export interface RunnerStatus {
  state: "active" | "stale" | "finished";
  age_seconds: number;
  status: RunStatus;
  shard?: Shard;
}

/** Reads `<P>:status` (or a shard's); undefined when there is none or it is not ours. */
export async function readStatus(
  client: Redis | Cluster,
  progressKey: string,
  shard?: Shard,
): Promise<RunnerStatus | undefined> {
  const key = statusKey(progressKey, shard);
  const [value, pttl] = await Promise.all([client.get(key), client.pttl(key)]);
  if (value === null) return undefined;
  let status: RunStatus;
  try {
    status = JSON.parse(value) as RunStatus;
    if (typeof status?.holder?.pid !== "number") return undefined;
  } catch {
    return undefined;
  }
  const ageMs = pttl > 0 ? Math.max(0, STATUS_TTL_MS - pttl) : 0;
  const state = status.phase === "finished"
    ? "finished"
    : ageMs > STALE_AFTER_MS
    ? "stale"
    : "active";
  const age_seconds = Math.round(ageMs / 100) / 10;
  return { state, age_seconds, status, ...(shard === undefined ? {} : { shard }) };
}

/** `backfill status` as text (pure). */
export function renderStatus(read: RunnerStatus | undefined): string {
  if (read === undefined) return "no run is active (no status published)\n";
  const { status, age_seconds: age } = read;
  const holder = `holder ${status.holder.host} pid ${status.holder.pid}`;
  const head = {
    active: `active: ${status.mode}, ${holder}, updated ${age} s ago`,
    stale: `stale: last update ${Math.round(age)} s ago (${holder}); the run is probably dead`,
    finished: `no run is active; the last run (${holder}) finished ${Math.round(age)} s ago`,
  }[read.state];
  const counts = status.counts;
  const rate = status.rate.paused
    ? "paused"
    : status.rate.rps === 0
    ? "unlimited"
    : `${status.rate.rps}/s`;
  const why = status.rate.throttled.length > 0
    ? ` (throttled: ${status.rate.throttled.join(", ")})`
    : "";
  const by = status.control ? ` (${status.control.cap_by})` : "";
  const cap = status.rate.cap_rps > 0 ? `, cap ${status.rate.cap_rps}/s${by}` : `, no cap${by}`;
  const cursors = Object.entries(status.cursors).map(([node, at]) => `${node}=${at}`).join(" ");
  const lines = [
    head,
    ...(status.mapping === undefined ? [] : [`keys: ${status.mapping}`]),
    `rate: ${rate}${why}${cap}`,
    `progress: ${scannedOf(counts, status.estimated_total)}, ETA ${duration(status.eta_seconds)}`,
    `counts: ${countList(counts)}`,
    `cursors: ${cursors || "none"}`,
    `started ${status.started_at}, updated ${status.updated_at}`,
  ];
  return lines.join("\n") + "\n";
}

/** Every published status of `progressKey`: the unsharded one first, then shards by N and I. */
export async function readAllStatuses(
  client: Redis | Cluster,
  progressKey: string,
): Promise<RunnerStatus[]> {
  const labels = await client.smembers(statusShardsKey(progressKey));
  const shards = labels.flatMap((label) => {
    try {
      return [parseShard(label)];
    } catch {
      return []; // not written by us: ignore
    }
  }).filter((shard) => shard.count > 1)
    .sort((a, b) => a.count - b.count || a.index - b.index);
  const reads = await Promise.all([
    readStatus(client, progressKey),
    ...shards.map((shard) => readStatus(client, progressKey, shard)),
  ]);
  return reads.filter((read): read is RunnerStatus => read !== undefined);
}

/** No sharded runner: the one-run form (text and JSON) applies. */
function isOneRun(reads: readonly RunnerStatus[]): boolean {
  return reads.length === 0 || (reads.length === 1 && reads[0]!.shard === undefined);
}

/** Sums over runners; `rps` is the active runners' sum, null when one runs unlimited. */
function totalOf(reads: readonly RunnerStatus[]) {
  const counts: Record<string, number> = {};
  let rps: number | null = 0;
  for (const { status, state } of reads) {
    for (const [name, n] of Object.entries(status.counts)) counts[name] = (counts[name] ?? 0) + n;
    if (state !== "active" || status.rate.paused) continue;
    rps = status.rate.rps === 0 || rps === null ? null : rps + status.rate.rps;
  }
  return {
    runners: reads.length,
    active: reads.filter((r) => r.state === "active").length,
    stale: reads.filter((r) => r.state === "stale").length,
    finished: reads.filter((r) => r.state === "finished").length,
    counts,
    estimated_total: reads.reduce((sum, r) => sum + r.status.estimated_total, 0),
    rps,
  };
}

/** `backfill status` as text (pure): one block per runner, then a total line. */
export function renderAllStatuses(reads: readonly RunnerStatus[]): string {
  if (isOneRun(reads)) return renderStatus(reads[0]);
  const blocks = reads.map((read) =>
    `${read.shard ? `shard ${shardLabel(read.shard)}` : "all masters"}: ${renderStatus(read)}`
  );
  const total = totalOf(reads);
  const rate = total.rps === null ? "unlimited" : `${total.rps}/s`;
  const line = `total: ${total.runners} runners (${total.active} active, ${total.stale} stale, ` +
    `${total.finished} finished); ${scannedOf(total.counts, total.estimated_total)}; ` +
    `rate ${rate}; ${countList(total.counts)}`;
  return `${blocks.join("\n")}\n${line}\n`;
}

/**
 * `status --json`: with no sharded runner the one-run object (`{"state":"none"}` when none);
 * otherwise `{state, active, runners, total}`, `state` the liveliest runner's.
 */
export function allStatusesJson(reads: readonly RunnerStatus[]): Record<string, unknown> {
  if (isOneRun(reads)) return oneJson(reads[0]);
  const total = totalOf(reads);
  const state = total.active > 0 ? "active" : total.stale > 0 ? "stale" : "finished";
  return {
    state,
    active: state === "active",
    runners: reads.map((read) => ({
      shard: read.shard ? shardLabel(read.shard) : null,
      ...oneJson(read),
    })),
    total,
  };
}

/** One run's status object: the published fields with its state and age. */
function oneJson(read: RunnerStatus | undefined): Record<string, unknown> {
  if (read === undefined) return { state: "none", active: false };
  const { state, age_seconds } = read;
  return { state, active: state === "active", age_seconds, ...read.status };
}

/** `scanned S of ~E (P%)`, the percentage only with an estimate. */
function scannedOf(counts: Record<string, number>, estimated: number): string {
  const scanned = counts.scanned ?? 0;
  const pct = estimated > 0 ? ` (${Math.min(100, (scanned / estimated) * 100).toFixed(1)}%)` : "";
  return `scanned ${scanned} of ~${estimated}${pct}`;
}

/** `name=n name=n …` of the counters. */
function countList(counts: Record<string, number>): string {
  return Object.entries(counts).map(([name, n]) => `${name}=${n}`).join(" ");
}

function duration(seconds: number | null): string {
  if (seconds === null) return "unknown";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}
