/**
 * TLS for the tests: a throwaway CA, a server certificate for 127.0.0.1/localhost and a client
 * certificate, made with openssl in a temp dir, and a redis-server that speaks only TLS.
 *
 * @module
 */
import { freePort } from "./redis_server.ts";

/** Paths of the generated PEM files. */
export interface TestPki {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** Another CA that signed nothing here (to prove verification fails). */
  otherCa: string;
  remove(): Promise<void>;
}

async function openssl(dir: string, ...args: string[]): Promise<void> {
  const out = await new Deno.Command("openssl", {
    args,
    cwd: dir,
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  if (!out.success) {
    throw new Error(`openssl ${args[0]} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** Makes a CA, a server certificate (SAN 127.0.0.1, localhost) and a client certificate. */
export async function makePki(): Promise<TestPki> {
  const dir = await Deno.makeTempDir({ prefix: "backfill-tls-" });
  const days = ["-days", "2"];
  const ca = async (name: string) => {
    await openssl(dir, "genrsa", "-out", `${name}.key`, "2048");
    await openssl(
      dir,
      "req",
      "-x509",
      "-new",
      "-key",
      `${name}.key`,
      "-sha256",
      ...days,
      "-subj",
      `/CN=${name}`,
      "-out",
      `${name}.crt`,
    );
  };
  const leaf = async (name: string, ext: string) => {
    await openssl(dir, "genrsa", "-out", `${name}.key`, "2048");
    await openssl(
      dir,
      "req",
      "-new",
      "-key",
      `${name}.key`,
      "-subj",
      `/CN=${name}`,
      "-out",
      `${name}.csr`,
    );
    await Deno.writeTextFile(`${dir}/${name}.ext`, ext);
    await openssl(
      dir,
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      ...days,
      "-sha256",
      "-extfile",
      `${name}.ext`,
      "-out",
      `${name}.crt`,
    );
  };
  await ca("ca");
  await ca("other-ca");
  // clientAuth too: a TLS cluster bus presents the server certificate when it dials other nodes.
  await leaf(
    "server",
    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n" +
      "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,DNS:redis.test\n",
  );
  await leaf(
    "client",
    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n" +
      "extendedKeyUsage=clientAuth\n",
  );
  return {
    dir,
    ca: `${dir}/ca.crt`,
    serverCert: `${dir}/server.crt`,
    serverKey: `${dir}/server.key`,
    clientCert: `${dir}/client.crt`,
    clientKey: `${dir}/client.key`,
    otherCa: `${dir}/other-ca.crt`,
    remove: () => Deno.remove(dir, { recursive: true }),
  };
}

/** A TLS-only redis-server owned by a test. */
export interface TlsRedis {
  port: number;
  /** `rediss://127.0.0.1:<port>` (with the user and password when given). */
  url: string;
  /** Runs redis-cli over TLS against it (trusting the test CA, with the client certificate). */
  cli(...args: string[]): Promise<string>;
  stop(): Promise<void>;
}

/** Options for {@linkcode startTlsRedis}. */
export interface TlsRedisOptions {
  /** `yes` requires a client certificate (mutual TLS); default `no`. */
  authClients?: "yes" | "no" | "optional";
  /** An ACL user created at start (`user:password`), in the URL. */
  user?: { name: string; password: string };
}

/** Starts redis-server with `--port 0 --tls-port N` and waits until it answers over TLS. */
export async function startTlsRedis(
  pki: TestPki,
  options: TlsRedisOptions = {},
): Promise<TlsRedis> {
  const port = freePort();
  const dir = await Deno.makeTempDir({ prefix: "backfill-redis-tls-" });
  const user = options.user;
  const child = new Deno.Command("redis-server", {
    args: [
      "--port",
      "0",
      "--tls-port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--dir",
      dir,
      "--save",
      "",
      "--appendonly",
      "no",
      "--tls-cert-file",
      pki.serverCert,
      "--tls-key-file",
      pki.serverKey,
      "--tls-ca-cert-file",
      pki.ca,
      "--tls-auth-clients",
      options.authClients ?? "no",
      "--loglevel",
      "warning",
      ...(user ? ["--user", user.name, "on", `>${user.password}`, "~*", "&*", "+@all"] : []),
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const cli = async (...args: string[]) => {
    const out = await new Deno.Command("redis-cli", {
      args: [
        "--tls",
        "--cacert",
        pki.ca,
        "--cert",
        pki.clientCert,
        "--key",
        pki.clientKey,
        "-p",
        String(port),
        ...(user ? ["--user", user.name, "--pass", user.password, "--no-auth-warning"] : []),
        ...args,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    return new TextDecoder().decode(out.stdout);
  };
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // already gone
    }
    await child.status;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const deadline = Date.now() + 10_000;
  while (!(await cli("PING")).includes("PONG")) {
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`TLS redis-server on port ${port} did not answer PING`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const auth = user ? `${encodeURIComponent(user.name)}:${encodeURIComponent(user.password)}@` : "";
  return { port, url: `rediss://${auth}127.0.0.1:${port}`, cli, stop };
}
