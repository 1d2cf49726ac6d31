/**
 * A delaying TCP proxy: listens on 127.0.0.1:`listenPort` and forwards every connection to
 * 127.0.0.1:`targetPort`, holding each chunk for `delayMs` in each direction (a round trip gains
 * 2 × `delayMs`), as a network between the backfill and Redis would. Each direction has its own
 * delay queue, so order is kept and pipelining is not serialized: a chunk read while earlier ones
 * wait is queued behind them with its own due time. Wake-ups come from a {@linkcode Ticker}
 * (sub-ms; `setTimeout` cannot hold 0.25 ms).
 *
 * In-process (`startDelayProxy`) or standalone:
 * `deno run -A bench/delay_proxy.ts --listen A --target B --delay-ms 0.25`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { nowAbs, Ticker } from "./ticker.ts";

/** A running proxy. */
export interface DelayProxy {
  port: number;
  delayMs: number;
  /**
   * Closes every proxied connection at once and drops what their queues hold, still listening:
   * commands that reached Redis ran, but their replies never arrive (a connection reset mid-call).
   */
  drop(): void;
  /** Stops listening and closes every proxied connection. */
  close(): Promise<void>;
}

/** One direction of one connection: a FIFO of chunks with their due times. */
class Pipe {
  readonly queue: { due: number; bytes: Uint8Array }[] = [];
  busy = false;
  ended = false;
  constructor(
    readonly to: Deno.Conn,
    readonly onDone: () => void,
    readonly wakeAt: (due: number) => void,
  ) {}

  /** Writes every due chunk (as one write), then looks again; keeps order. */
  flush(now: number): void {
    if (this.busy) return;
    let n = 0, size = 0;
    while (n < this.queue.length && this.queue[n]!.due <= now) {
      size += this.queue[n++]!.bytes.length;
    }
    if (n === 0) {
      if (this.ended && this.queue.length === 0) this.onDone();
      else if (this.queue.length) this.wakeAt(this.queue[0]!.due);
      return;
    }
    const out = new Uint8Array(size);
    let at = 0;
    for (const { bytes } of this.queue.splice(0, n)) {
      out.set(bytes, at);
      at += bytes.length;
    }
    this.busy = true;
    writeAll(this.to, out).then(
      () => {
        this.busy = false;
        this.flush(nowAbs());
      },
      () => this.onDone(),
    );
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.length;) done += await conn.write(bytes.subarray(done));
}

/** Starts a proxy to 127.0.0.1:`targetPort` adding `delayMs` each way. */
export function startDelayProxy(
  options: { targetPort: number; delayMs: number; listenPort?: number },
): DelayProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: options.listenPort ?? 0 });
  const pipes = new Set<Pipe>();
  const conns = new Set<Deno.Conn>();
  const tick = () => {
    const now = nowAbs();
    let next = NaN;
    for (const pipe of pipes) {
      pipe.flush(now);
      // A pipe still writing looks at its queue again when the write is done.
      const head = pipe.busy ? undefined : pipe.queue[0]?.due;
      if (head !== undefined && !(head >= next)) next = head;
    }
    ticker.set(next);
  };
  const ticker = new Ticker(tick);

  const pump = async (from: Deno.Conn, pipe: Pipe) => {
    const buf = new Uint8Array(64 * 1024);
    for (;;) {
      const n = await from.read(buf).catch(() => null);
      if (n === null) break;
      const due = nowAbs() + options.delayMs;
      pipe.queue.push({ due, bytes: buf.slice(0, n) });
      ticker.wakeAt(due);
    }
    pipe.ended = true;
    pipe.flush(nowAbs());
  };

  const closers = new Set<() => void>();

  const serve = async (client: Deno.TcpConn) => {
    let server: Deno.TcpConn;
    try {
      server = await Deno.connect({ hostname: "127.0.0.1", port: options.targetPort });
    } catch {
      client.close();
      return;
    }
    client.setNoDelay(true);
    server.setNoDelay(true);
    conns.add(client);
    conns.add(server);
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      closers.delete(close);
      pipes.delete(up);
      pipes.delete(down);
      for (const c of [client, server]) {
        conns.delete(c);
        try {
          c.close();
        } catch {
          // already closed
        }
      }
    };
    const wakeAt = (due: number) => ticker.wakeAt(due);
    const up = new Pipe(server, close, wakeAt);
    const down = new Pipe(client, close, wakeAt);
    pipes.add(up);
    pipes.add(down);
    closers.add(close);
    await Promise.all([pump(client, up), pump(server, down)]);
  };

  const accepting = (async () => {
    for await (const conn of listener) serve(conn);
  })().catch(() => {});

  return {
    port: (listener.addr as Deno.NetAddr).port,
    delayMs: options.delayMs,
    drop() {
      for (const close of [...closers]) close();
    },
    async close() {
      listener.close();
      await accepting;
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // already closed
        }
      }
      conns.clear();
      pipes.clear();
      ticker.close();
    },
  };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    strict: true,
    options: {
      listen: { type: "string" },
      target: { type: "string" },
      "delay-ms": { type: "string", default: "0.25" },
    },
  });
  const proxy = startDelayProxy({
    listenPort: Number(values.listen ?? 0),
    targetPort: Number(values.target),
    delayMs: Number(values["delay-ms"]),
  });
  Deno.stderr.writeSync(new TextEncoder().encode(`listening on 127.0.0.1:${proxy.port}\n`));
  const stop = () => proxy.close().then(() => Deno.exit(0));
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
}
