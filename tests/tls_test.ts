/**
 * TLS through the real CLI: a TLS-only redis-server (`--port 0 --tls-port N`) with a certificate
 * signed by a CA made in the test, an ACL user in the URL.
 */
import assert from "node:assert/strict";
import { runCli, runJson } from "./support/cli.ts";
import { connectRedis } from "../src/redis/connect.ts";
import { seedOldCluster, startCluster } from "./support/cluster.ts";
import { makeJobs, newKey } from "./support/seed.ts";
import { makePki, startTlsRedis, type TestPki, type TlsRedis } from "./support/tls.ts";

const USER = { name: "backfill", password: "tls-s3cret!" };

async function withTlsRedis(
  fn: (server: TlsRedis, pki: TestPki) => Promise<void>,
  authClients: "yes" | "no" = "no",
) {
  const pki = await makePki();
  const server = await startTlsRedis(pki, { authClients, user: USER }).catch(async (error) => {
    await pki.remove();
    throw error;
  });
  try {
    // 50 jobs of ws-a; job-1 with a TTL.
    await server.cli(
      "EVAL",
      `for i = 1, 50 do redis.call("HSET", "ai:jobs:job-" .. i, "workspace_id", "ws-a", "n", i) end
       return redis.call("PEXPIRE", "ai:jobs:job-1", 600000)`,
      "0",
    );
    await fn(server, pki);
  } finally {
    await server.stop();
    await pki.remove();
  }
}

function assertNoSecret(text: string) {
  assert.ok(!text.includes(USER.password), "the password never appears in output");
}

Deno.test("tls: rediss:// with --tls-ca and an ACL user migrates; the password is never printed", async () => {
  await withTlsRedis(async (server, pki) => {
    const { code, summary, stdout, stderr } = await runJson([
      "--execute",
      "--rps",
      "0",
      "--redis-url",
      server.url,
      "--tls-ca",
      pki.ca,
    ]);
    assert.equal(code, 0, stderr);
    assert.equal(summary.migrated, 50);
    assertNoSecret(stdout + stderr);
    assert.match(stderr, /rediss:\/\/backfill:\*\*\*@127\.0\.0\.1:\d+/);
    assert.equal(await server.cli("HGET", "ai:job:ws-a:job-7", "n"), "7\n");
    const pttl = Number(await server.cli("PTTL", "ai:job:ws-a:job-1"));
    assert.ok(pttl > 590_000 && pttl <= 600_000, `TTL copied (${pttl})`);
    assert.equal(await server.cli("PTTL", "ai:job:ws-a:job-2"), "-1\n");
  });
});

Deno.test("tls: an untrusted server certificate fails at once with exit 3", async () => {
  await withTlsRedis(async (server, pki) => {
    for (const extra of [["--tls-ca", pki.otherCa], []]) {
      const started = Date.now();
      const { code, stdout, stderr } = await runCli([
        "--execute",
        "--redis-url",
        server.url,
        ...extra,
      ]);
      assert.equal(code, 3, stderr);
      assert.match(
        stderr,
        new RegExp(
          `^error: TLS connection to Redis at 127\\.0\\.0\\.1:${server.port} failed: .*certificate`,
          "m",
        ),
      );
      assert.ok(Date.now() - started < 8_000, "no pointless retries on a certificate error");
      assertNoSecret(stdout + stderr);
    }
    assert.equal(await server.cli("EXISTS", "ai:job:ws-a:job-1", "ai:backfill:lock"), "0\n");
  });
});

Deno.test("tls: --tls-servername sets the name the certificate must match (SNI)", async () => {
  await withTlsRedis(async (server, pki) => {
    const good = await runJson([
      "--dry-run",
      "--redis-url",
      server.url,
      "--tls-ca",
      pki.ca,
      "--tls-servername",
      "redis.test",
    ]);
    assert.equal(good.code, 0, good.stderr);
    assert.equal(good.summary.migrated, 50);
    const bad = await runCli([
      "--dry-run",
      "--redis-url",
      server.url,
      "--tls-ca",
      pki.ca,
      "--tls-servername",
      "wrong.test",
    ]);
    assert.equal(bad.code, 3, bad.stderr);
    assert.match(bad.stderr, /wrong\.test/);
  });
});

Deno.test("tls: mutual TLS with --tls-cert/--tls-key; without a client certificate, exit 3", async () => {
  await withTlsRedis(async (server, pki) => {
    const withCert = await runJson([
      "--execute",
      "--rps",
      "0",
      "--redis-url",
      server.url,
      "--tls-ca",
      pki.ca,
      "--tls-cert",
      pki.clientCert,
      "--tls-key",
      pki.clientKey,
    ]);
    assert.equal(withCert.code, 0, withCert.stderr);
    assert.equal(withCert.summary.migrated, 50);
    const without = await runCli(["--dry-run", "--redis-url", server.url, "--tls-ca", pki.ca]);
    assert.equal(without.code, 3, without.stderr);
    assert.match(
      without.stderr,
      new RegExp(`TLS connection to Redis at 127\\.0\\.0\\.1:${server.port} failed: .*Certificate`),
    );
    assertNoSecret(without.stdout + without.stderr);
  }, "yes");
});

Deno.test("tls: a Redis Cluster over TLS (rediss:// seed, --tls-ca) migrates on every master", async () => {
  const pki = await makePki();
  try {
    const cluster = await startCluster({ tls: pki });
    const client = cluster.client();
    try {
      const jobs = makeJobs(300);
      await seedOldCluster(client, jobs);
      const { code, summary, stderr } = await runJson([
        "--execute",
        "--rps",
        "0",
        "--redis-url",
        `rediss://127.0.0.1:${cluster.tlsPorts[0]}`,
        "--tls-ca",
        pki.ca,
      ]);
      assert.equal(code, 0, stderr);
      assert.match(stderr, /\(cluster\)/);
      assert.equal(summary.migrated, 300);
      // The scan connections go to the TLS ports the nodes announce to TLS clients.
      const target = await connectRedis([`rediss://127.0.0.1:${cluster.tlsPorts[1]}`], {
        tls: { ca: pki.ca },
      });
      try {
        assert.equal(target.kind, "cluster");
        assert.deepEqual(
          target.masters().map((node) => target.nodeName(node)).sort(),
          cluster.tlsPorts.map((port) => `127.0.0.1:${port}`).sort(),
        );
      } finally {
        await target.close();
      }
      for (const job of jobs) {
        assert.deepEqual(await client.hgetall(newKey(job)), {
          workspace_id: job.workspace,
          ...job.fields,
        });
      }
    } finally {
      client.disconnect();
      await cluster.stop();
    }
  } finally {
    await pki.remove();
  }
});
