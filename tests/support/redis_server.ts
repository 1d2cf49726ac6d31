/**
 * Starts and stops real `redis-server` processes on free loopback ports for the tests.
 * Never touches a shared server on 6379.
 *
 * @module
 */
import { Redis } from "../../src/redis/ioredis.ts";

/** A free TCP port on 127.0.0.1 (the OS picks it; closed again before returning). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Options for {@linkcode startRedis}. */
export interface RedisServerOptions {
  /** Persist with an append-only file, so a restart keeps the data. */
  aof?: boolean;
  /** `requirepass` for the default user. */
  password?: string;
  /** More `redis-server` arguments, e.g. `["--maxmemory", "10mb"]`. */
  args?: string[];
  /** Port to use (default: a free one). */
  port?: number;
}

/** A running redis-server owned by a test. */
export interface RedisServer {
  port: number;
  /** `redis://127.0.0.1:<port>` (with the password when one is set). */
  url: string;
  dir: string;
  /** A new client connected to this server (the caller quits it). */
  client(): Redis;
  /** Stops the server (SIGTERM, waits for exit) and removes its directory. */
  stop(): Promise<void>;
  /** Kills the server with SIGKILL (no save), keeping its directory. */
  kill(): Promise<void>;
  /** Starts the server again on the same port and directory (after kill). */
  start(): Promise<void>;
  /** Sends a signal to the server process (SIGSTOP freezes it, SIGCONT thaws it). */
  signal(signal: Deno.Signal): void;
}

/** Starts a redis-server on a free loopback port and waits until it answers PING. */
export async function startRedis(
  options: RedisServerOptions = {},
  attempt = 0,
): Promise<RedisServer> {
  const port = options.port ?? freePort();
  const dir = await Deno.makeTempDir({ prefix: "backfill-redis-" });
  const args = [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--dir",
    dir,
    "--save",
    "",
    "--appendonly",
    options.aof ? "yes" : "no",
    "--appendfsync",
    "always",
    "--daemonize",
    "no",
    "--logfile",
    "",
    "--loglevel",
    "warning",
    ...(options.password ? ["--requirepass", options.password] : []),
    ...(options.args ?? []),
  ];
  let child: Deno.ChildProcess | undefined;
  const auth = options.password ? `:${encodeURIComponent(options.password)}@` : "";
  const url = `redis://${auth}127.0.0.1:${port}`;

  const server: RedisServer = {
    port,
    url,
    dir,
    client: () => new Redis(url, { maxRetriesPerRequest: 1, lazyConnect: false }),
    async start() {
      const spawned = new Deno.Command("redis-server", { args, stdout: "null", stderr: "null" })
        .spawn();
      child = spawned;
      // A redis-server that cannot bind its port (or a cluster node its bus port, port + 10000,
      // which may be some connection's source port) exits at once: stop waiting then.
      const exited = new AbortController();
      spawned.status.then(() => exited.abort());
      try {
        await waitForPing(port, options.password, 10_000, exited.signal);
      } catch (error) {
        if (!exited.signal.aborted) throw error;
        child = undefined;
        throw new PortTakenError(port, "redis-server exited before answering PING");
      }
      // Another process's redis-server may hold the port (ours then fails to bind and exits):
      // only ours runs in this server's own directory.
      if (!(await rawCommand(port, options.password, "CONFIG GET dir")).includes(dir)) {
        child.kill("SIGKILL");
        await child.status;
        child = undefined;
        throw new PortTakenError(port);
      }
    },
    signal(signal) {
      child?.kill(signal);
    },
    async kill() {
      if (!child) return;
      child.kill("SIGKILL");
      await child.status;
      child = undefined;
    },
    async stop() {
      if (child) {
        child.kill("SIGTERM");
        await child.status;
        child = undefined;
      }
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
  try {
    await server.start();
  } catch (error) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    // A free port was picked and taken meanwhile: pick another.
    if (error instanceof PortTakenError && options.port === undefined && attempt < 5) {
      return await startRedis(options, attempt + 1);
    }
    throw error;
  }
  return server;
}

/** The port answered, but from another process's redis-server. */
class PortTakenError extends Error {
  constructor(port: number, why = "is served by another redis-server") {
    super(`port ${port}: ${why}`);
  }
}

/** Sends one inline command over raw TCP and returns the raw reply text (first read). */
async function rawCommand(port: number, password: string | undefined, line: string) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(
      new TextEncoder().encode((password ? `AUTH ${password}\r\n` : "") + line + "\r\n"),
    );
    const buf = new Uint8Array(4096);
    let text = "";
    // AUTH's +OK, then the command's reply (an array ends with a line break).
    while (!/\r\n$/.test(text) || (password !== undefined && text.split("\r\n").length < 3)) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    return text;
  } finally {
    conn.close();
  }
}

/** Polls PING over raw TCP (no client library, so no reconnect timers leak) until it answers. */
export async function waitForPing(
  port: number,
  password?: string,
  timeoutMs = 10_000,
  signal?: AbortSignal,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const command = (password ? `AUTH ${password}\r\n` : "") + "PING\r\n";
  while (Date.now() < deadline) {
    signal?.throwIfAborted();
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        await conn.write(new TextEncoder().encode(command));
        const buf = new Uint8Array(256);
        let text = "";
        while (!text.includes("PONG") && !text.includes("-")) {
          const n = await conn.read(buf);
          if (n === null) break;
          text += new TextDecoder().decode(buf.subarray(0, n));
        }
        if (text.includes("PONG")) return;
      } finally {
        conn.close();
      }
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`redis-server on port ${port} did not answer PING within ${timeoutMs} ms`);
}

/**
 * Runs `fn` with a fresh redis-server and a client, stopping both afterwards (even on failure).
 */
export async function withRedis(
  fn: (server: RedisServer, client: Redis) => Promise<void>,
  options: RedisServerOptions = {},
): Promise<void> {
  const server = await startRedis(options);
  const client = server.client();
  try {
    await fn(server, client);
  } finally {
    client.disconnect();
    await server.stop();
  }
}
