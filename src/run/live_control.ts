/**
 * Live control alongside an `--execute` run: obeys `<P>:control` (pause, resume, `set-rps N`,
 * `stop`) and publishes `<P>:status` about once a second from the run's observer events, then a
 * last `finished` status. Only commands issued while the run listens are obeyed; one exception
 * keeps an operator's brake on: a run that takes over from one that died paused starts paused.
 *
 * @module
 */
import {
  type ControlCommand,
  type ControlOpening,
  etaSeconds,
  formatControl,
  openControl,
  publishStatus,
  readStatus,
  type RunStatus,
  watchControl,
  writeStatus,
} from "../control/remote.ts";
import type { Shard } from "../redis/shard.ts";
import type { Throttle } from "../control/throttle.ts";
import type { Cluster, Redis } from "../redis/ioredis.ts";
import type { BatchReport, Logger, RunMode, RunObserver, RunStart } from "../run_events.ts";
import type { Gate } from "./copier.ts";

/** Why a run stopped when the operator said `backfill stop` (the abort reason). */
const STOP_REASON = "stop";
/** Milliseconds between control reads and between status updates. */
const INTERVAL_MS = 1000;

interface LiveControlOptions {
  client: Redis | Cluster;
  progressKey: string;
  mode: RunMode;
  holder: { host: string; pid: number };
  /** The operator's pause, and the status's view of the rate. */
  throttle: Pick<Throttle, "setPaused" | "view">;
  /** The hard cap (`set-rps`). */
  gate: Pick<Gate, "setCap">;
  logger: Logger;
  /** Aborted with {@linkcode STOP_REASON} on `backfill stop`. */
  stop: AbortController;
  /** The runner's `--shard`: it publishes its own status (`P:status:I/N`). */
  shard?: Shard;
  /** The key mapping, published when it is not the default one. */
  mapping?: string;
}

/** The control watcher and the status publisher of one run. */
export class LiveControl {
  /** Feeds the status from the run's events; add it to the run's observers. */
  readonly observer: RunObserver;
  readonly #options: LiveControlOptions;
  readonly #halt = new AbortController();
  readonly #started = new Date().toISOString();
  readonly #startedAt = performance.now();
  #counts: Record<string, number> = {};
  #estimate = 0;
  readonly #cursors: Record<string, string> = {};
  #loops: Promise<unknown> = Promise.resolve();
  #operatorPaused = false;
  #capBy: "--rps" | "set-rps" = "--rps";

  private constructor(options: LiveControlOptions) {
    this.#options = options;
    this.observer = {
      onStart: (start: RunStart) => void (this.#estimate = start.estimatedTotal),
      onBatch: (batch: BatchReport) => {
        this.#counts = { ...batch.totals };
        this.#estimate = batch.estimatedTotal;
        if (batch.cursor !== undefined) this.#cursors[batch.node] = batch.cursor;
      },
    };
  }

  /** Opens the control stream, then watches it and publishes the status until {@linkcode finish}. */
  static async start(options: LiveControlOptions): Promise<LiveControl> {
    const live = new LiveControl(options);
    const { client, progressKey } = options;
    // A control read must never fail the run: without it, the watcher opens the stream later.
    const opening = await openControl(client, progressKey).catch(() => undefined);
    if (opening) await live.#opened(opening);
    else {
      const message =
        `could not read ${progressKey}:control at the start; commands are read once it answers`;
      options.logger.log("warn", "control_unread", message);
    }
    const signal = live.#halt.signal;
    live.#loops = Promise.all([
      watchControl(client, progressKey, {
        signal,
        intervalMs: INTERVAL_MS,
        opening,
        onCommand: (next) => live.#obey(next),
        onIgnored: ({ value, problem }) =>
          options.logger.log(
            "warn",
            "control_ignored",
            `ignored control value '${value}' in ${progressKey}:control: ${problem}`,
          ),
      }),
      publishStatus(client, progressKey, {
        signal,
        intervalMs: INTERVAL_MS,
        snapshot: () => live.#snapshot("running"),
        shard: options.shard,
      }),
    ]);
    return live;
  }

  /** Stops watching and publishing, and writes the last status (phase `finished`). */
  async finish(): Promise<void> {
    this.#halt.abort();
    await this.#loops;
    const { client, progressKey, shard } = this.#options;
    await writeStatus(client, progressKey, this.#snapshot("finished"), shard).catch(() => {});
  }

  /**
   * The commands in the stream at the start were issued for earlier runs: logged, not applied;
   * except the pause a predecessor died under (its status still `running` and operator-paused):
   * the operator's brake stays on across a crash restart, until `resume`.
   */
  async #opened(opening: ControlOpening): Promise<void> {
    const commands = opening.earlier.flatMap((entry) =>
      typeof entry.command === "string" ? [] : [entry.command]
    );
    if (commands.length === 0) return;
    const { client, progressKey, shard, logger } = this.#options;
    logger.log(
      "info",
      "control_earlier",
      `not applied: ${commands.length} command(s) in ${progressKey}:control issued before this ` +
        `run started, the last '${formatControl(commands[0]!)}' (a command reaches only the runs ` +
        `alive when it is issued)`,
    );
    const brake = commands.find((command) => command.kind === "pause" || command.kind === "resume");
    if (brake?.kind !== "pause") return;
    const predecessor = await readStatus(client, progressKey, shard).catch(() => undefined);
    const died = predecessor?.status.phase === "running" && predecessor.status.mode === "execute";
    if (!died || predecessor.status.control?.operator_paused !== true) return;
    const { host, pid } = predecessor.status.holder;
    const message = `starting paused: the run this one takes over from (${host} pid ${pid}) ` +
      `died paused by the operator; backfill resume goes on`;
    logger.log("warn", "control_carried", message);
    this.#obey(brake);
  }

  #obey(command: ControlCommand): void {
    const { throttle, gate, logger, stop } = this.#options;
    logger.log("info", "control", `control: ${formatControl(command)}`);
    if (command.kind === "pause" || command.kind === "resume") {
      this.#operatorPaused = command.kind === "pause";
      throttle.setPaused(this.#operatorPaused);
    } else if (command.kind === "set-rps") {
      this.#capBy = "set-rps";
      gate.setCap(command.rps);
    } else {
      logger.log("warn", "control_stop", "stopping: backfill stop (checkpoint, summary)");
      stop.abort(STOP_REASON);
    }
  }

  #snapshot(phase: RunStatus["phase"]): Omit<RunStatus, "updated_at"> {
    const view = this.#options.throttle.view();
    const scanned = this.#counts.scanned ?? 0;
    const elapsed = (performance.now() - this.#startedAt) / 1000;
    return {
      mode: this.#options.mode,
      phase,
      holder: this.#options.holder,
      started_at: this.#started,
      rate: {
        rps: view.rps,
        cap_rps: view.capRps,
        paused: view.paused,
        throttled: view.throttled,
      },
      counts: this.#counts,
      estimated_total: this.#estimate,
      eta_seconds: phase === "finished" ? 0 : etaSeconds(scanned, this.#estimate, elapsed),
      cursors: { ...this.#cursors },
      control: { operator_paused: this.#operatorPaused, cap_by: this.#capBy },
      ...(this.#options.mapping === undefined ? {} : { mapping: this.#options.mapping }),
    };
  }
}
