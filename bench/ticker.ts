/**
 * Sub-millisecond wake-ups. Deno's `setTimeout` rounds up to whole milliseconds (a 0.25 ms timer
 * fires after ~1–2 ms here), too coarse for a 1 ms send schedule or a 0.25 ms network delay. A
 * {@linkcode Ticker} sleeps in a worker thread with `Atomics.wait` (a futex with a fractional-ms
 * timeout) and posts a message to the main thread when the requested time has come; the main
 * thread's event loop stays free for socket I/O.
 *
 * Times are absolute: `performance.timeOrigin + performance.now()`, the same in both threads.
 *
 * @module
 */

/** Milliseconds since the epoch with sub-ms precision, comparable across threads. */
export function nowAbs(): number {
  return performance.timeOrigin + performance.now();
}

const WORKER = `
const nowAbs = () => performance.timeOrigin + performance.now();
self.onmessage = (event) => {
  const seq = new Int32Array(event.data.seq);
  const due = new Float64Array(event.data.due);
  let fired = NaN;
  for (;;) {
    const s = Atomics.load(seq, 0);
    if (s < 0) break; // closed
    const at = due[0];
    if (Number.isNaN(at) || at === fired) {
      Atomics.wait(seq, 0, s);
      continue;
    }
    const wait = at - nowAbs();
    if (wait > 0) {
      Atomics.wait(seq, 0, s, wait);
      continue;
    }
    fired = at;
    self.postMessage(0);
  }
  self.close();
};
`;

/** Calls `onFire` on the main thread at (or just after) the times passed to `wakeAt`. */
export class Ticker {
  #worker: Worker;
  #seq = new Int32Array(new SharedArrayBuffer(4));
  #due = new Float64Array(new SharedArrayBuffer(8));

  constructor(onFire: () => void) {
    this.#due[0] = NaN;
    const url = URL.createObjectURL(new Blob([WORKER], { type: "application/javascript" }));
    this.#worker = new Worker(url, { type: "module" });
    URL.revokeObjectURL(url);
    this.#worker.onmessage = () => {
      // The wake-up is consumed: until onFire sets the next one, wakeAt starts from none.
      this.#due[0] = NaN;
      onFire();
    };
    this.#worker.postMessage({ seq: this.#seq.buffer, due: this.#due.buffer });
  }

  /** The pending wake-up time (NaN when none). */
  get due(): number {
    return this.#due[0]!;
  }

  /**
   * Sets the next wake-up to `at` (absolute ms), replacing any pending one; NaN cancels. A fired
   * wake-up is cleared before `onFire` runs, so `onFire` sets the next deadline (if any), and the
   * owner calls {@linkcode Ticker.wakeAt} whenever a new deadline comes up.
   */
  set(at: number): void {
    this.#due[0] = at;
    Atomics.add(this.#seq, 0, 1);
    Atomics.notify(this.#seq, 0);
  }

  /** Moves the wake-up earlier when `at` is before the pending one (or none is pending). */
  wakeAt(at: number): void {
    const due = this.#due[0]!;
    if (Number.isNaN(due) || at < due) this.set(at);
  }

  /** Stops the worker thread. */
  close(): void {
    Atomics.store(this.#seq, 0, -1);
    Atomics.notify(this.#seq, 0);
    this.#worker.terminate();
  }
}
