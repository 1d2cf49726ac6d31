/**
 * The probe's connection: a bare RESP socket that sends `PING` and reads one-line replies, nothing
 * else. ioredis timed on this machine added its own jitter (idle loopback PING p99 2.9–5 ms against
 * 0.3–0.4 ms on a bare Deno socket), which is larger than the `--max-latency` it is compared with.
 * Plain TCP uses `Deno.connect`; TLS uses `node:tls`, which takes the same settings ioredis does
 * (CA, client certificate, SNI name apart from the address).
 *
 * @module
 */
import { Duplex } from "node:stream";
import { connect as connectTls } from "node:tls";

/** Where and how to connect (plain data: it crosses to the worker by `postMessage`). */
export interface ProbeTarget {
  host: string;
  port: number;
  /** ACL user and password, sent with `AUTH` (never logged, never posted back). */
  username?: string;
  password?: string;
  /** PEM strings and the SNI name, as ioredis got them; absent = plain TCP. */
  tls?: { ca?: string; cert?: string; key?: string; servername?: string };
}

/** A one-line error reply (`-ERR …`) or a lost connection. */
export class ProbeReplyError extends Error {
  override name = "ProbeReplyError";
  /** The reply's first word (`WRONGPASS`, `NOAUTH`, …) or `CONNECTION_LOST`. */
  readonly code: string;
  constructor(message: string, options: { code: string; cause?: unknown }) {
    super(message, { cause: options.cause });
    this.code = options.code;
  }
}

const PING = new TextEncoder().encode("*1\r\n$4\r\nPING\r\n");

/** An open probe connection; replies are matched to requests in order (RESP is ordered). */
export class ProbeConnection {
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #pending: PromiseWithResolvers<void>[] = [];
  readonly #close: () => void;
  #lost = false;

  private constructor(socket: Socket) {
    this.#writer = socket.writable.getWriter();
    this.#close = socket.close;
    void this.#readReplies(socket.readable);
  }

  /** Connects and authenticates. */
  static async open(target: ProbeTarget): Promise<ProbeConnection> {
    const connection = new ProbeConnection(
      target.tls ? await openTls(target) : await openTcp(target),
    );
    if (target.password !== undefined) {
      const auth = target.username === undefined
        ? ["AUTH", target.password]
        : ["AUTH", target.username, target.password];
      try {
        await connection.#send(encode(auth));
      } catch (error) {
        connection.close();
        throw error;
      }
    }
    return connection;
  }

  /** True once the server closed the connection (or it broke). */
  get lost(): boolean {
    return this.#lost;
  }

  /** One PING; resolves on its reply. */
  ping(): Promise<void> {
    return this.#send(PING);
  }

  /** Closes the socket; pending PINGs fail. */
  close(): void {
    this.#fail(new ProbeReplyError("the probe's connection was closed", { code: "CLOSED" }));
    try {
      this.#close();
    } catch {
      // Already closed.
    }
  }

  #send(bytes: Uint8Array): Promise<void> {
    if (this.#lost) {
      return Promise.reject(new ProbeReplyError("connection lost", { code: "CONNECTION_LOST" }));
    }
    const reply = Promise.withResolvers<void>();
    this.#pending.push(reply);
    this.#writer.write(bytes).catch((cause) => this.#fail(lostError(cause)));
    return reply.promise;
  }

  async #readReplies(readable: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    let text = "";
    try {
      for await (const chunk of readable) {
        text += decoder.decode(chunk, { stream: true });
        let end: number;
        // Every reply to PING or AUTH is one line: `+PONG`, `+OK` or `-ERR …`.
        while ((end = text.indexOf("\r\n")) >= 0) {
          const line = text.slice(0, end);
          text = text.slice(end + 2);
          const reply = this.#pending.shift();
          if (line.startsWith("-")) {
            const code = line.slice(1).split(" ", 1)[0] ?? "ERR";
            reply?.reject(new ProbeReplyError(line.slice(1), { code }));
          } else reply?.resolve();
        }
      }
      this.#fail(lostError(undefined));
    } catch (cause) {
      this.#fail(lostError(cause));
    }
  }

  #fail(error: Error): void {
    this.#lost = true;
    for (const reply of this.#pending.splice(0)) reply.reject(error);
  }
}

/** A byte stream both ways and how to close it. */
interface Socket {
  readable: ReadableStream<Uint8Array>;
  writable: WritableStream<Uint8Array>;
  close: () => void;
}

async function openTcp(target: ProbeTarget): Promise<Socket> {
  const conn = await Deno.connect({ hostname: target.host, port: target.port });
  conn.setNoDelay(true);
  return { readable: conn.readable, writable: conn.writable, close: () => conn.close() };
}

async function openTls(target: ProbeTarget): Promise<Socket> {
  const tls = target.tls!;
  const socket = connectTls({
    host: target.host,
    port: target.port,
    ca: tls.ca,
    cert: tls.cert,
    key: tls.key,
    servername: tls.servername,
  });
  await new Promise<void>((resolve, reject) => {
    socket.once("secureConnect", () => resolve());
    socket.once("error", reject);
  });
  socket.setNoDelay(true);
  const web = Duplex.toWeb(socket) as unknown as Omit<Socket, "close">;
  return { ...web, close: () => socket.destroy() };
}

function lostError(cause: unknown): ProbeReplyError {
  return new ProbeReplyError("the probe's connection was lost", { code: "CONNECTION_LOST", cause });
}

/** A RESP array of bulk strings. */
function encode(parts: string[]): Uint8Array {
  const bytes = new TextEncoder();
  const chunks = [`*${parts.length}\r\n`];
  for (const part of parts) chunks.push(`$${bytes.encode(part).length}\r\n${part}\r\n`);
  return bytes.encode(chunks.join(""));
}
