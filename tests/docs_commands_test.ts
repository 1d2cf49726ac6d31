/**
 * Every `./backfill …` command the README and the docs tell a reader to type is run here, in the
 * order the pages give them, against a real redis-server holding a small job store. A command the
 * parser refuses (exit 2), that is refused or crashes fails the test, so a renamed flag or a changed
 * subcommand cannot leave the docs behind. The Prometheus queries of the docs are run against a real
 * Prometheus by `tests/telemetry_prometheus_test.ts`.
 */
import assert from "node:assert/strict";
import { ExitCode } from "../src/errors.ts";
import { runCli } from "./support/cli.ts";
import { makeJobs, seedOld } from "./support/seed.ts";
import { withRedis } from "./support/redis_server.ts";
import { countClusterKeys, seedOldCluster, startCluster } from "./support/cluster.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const SUBCOMMANDS = new Set(["verify", "status", "pause", "resume", "set-rps", "stop"]);

/** The pages, in the order a newcomer reads them: the README first. */
function pages(): string[] {
  const docs = [...Deno.readDirSync(`${ROOT}docs`)]
    .filter((entry) => entry.isFile && entry.name.endsWith(".md"))
    .map((entry) => `docs/${entry.name}`)
    .sort();
  return ["README.md", ...docs];
}

/**
 * The commands a page tells the reader to run: `./backfill` (or `deno task backfill`) followed by a
 * flag or a subcommand, in code spans and code blocks; `cmd &` chains split; comments dropped. A
 * synopsis (`[--sample N]`, `a | b`, `<ws>`) is a grammar, not a command, and is left out.
 */
export function docCommands(text: string): string[][] {
  const found: string[][] = [];
  const candidates = [
    ...text.matchAll(/```[a-z]*\n([\s\S]*?)```/g).flatMap((m) => m[1]!.split("\n")),
    ...text.replace(/```[\s\S]*?```/g, "").matchAll(/`([^`\n]+)`/g).map((m) => m[1]!),
  ];
  for (const candidate of candidates) {
    for (const part of candidate.replace(/\s+#.*$/, "").split(/\s&\s*|\s&$/)) {
      const match = part.trim().match(/^(?:\.\/backfill|deno task backfill)\s+(.*)$/);
      if (!match) continue;
      const args = match[1]!.trim().split(/\s+/);
      if (!(args[0]!.startsWith("-") || SUBCOMMANDS.has(args[0]!))) continue;
      if (args.some((arg) => /[[\]|<>…]|^N$/.test(arg))) continue;
      found.push(args);
    }
  }
  return found;
}

Deno.test("docs: the command finder reads code spans, blocks, chains and skips grammar", () => {
  const text = [
    "Run `./backfill --dry-run --rps 200` first, then `backfill status` (a reference).",
    "```sh",
    "./backfill --execute --shard 0/3 &   ./backfill --execute --shard 1/3 &",
    "./backfill verify --sample 1000       # read-only",
    "deno task backfill --dry-run --redis-url redis://127.0.0.1:6379",
    "```",
    "`./backfill verify [--sample N]` and `./backfill set-rps N` are grammar; `./backfill for this`.",
  ].join("\n");
  assert.deepEqual(docCommands(text), [
    ["--execute", "--shard", "0/3"],
    ["--execute", "--shard", "1/3"],
    ["verify", "--sample", "1000"],
    ["--dry-run", "--redis-url", "redis://127.0.0.1:6379"],
    ["--dry-run", "--rps", "200"],
  ]);
});

Deno.test("docs: every ./backfill command in README.md and docs/ runs against a real Redis", async () => {
  const commands = pages().flatMap((page) =>
    docCommands(Deno.readTextFileSync(`${ROOT}${page}`)).map((args) => ({ page, args }))
  );
  // The happy path's own commands are among them (the finder has not gone blind).
  const lines = commands.map((c) => c.args.join(" "));
  for (const expected of ["--dry-run --rps 200", "--execute --rps 0", "verify --sample 1000"]) {
    assert.ok(lines.includes(expected), `the README's "${expected}" is found`);
  }
  // `--shard i/N` splits a cluster's masters: those commands run against a real 3-master cluster.
  const sharded = commands.filter((c) => c.args.includes("--shard"));
  assert.ok(sharded.length >= 3, "the runbook's shard runners are found");
  await withRedis(async (server, client) => {
    await seedOld(client, makeJobs(300));
    for (const { page, args } of commands.filter((c) => !c.args.includes("--shard"))) {
      await runDocumented(page, args, server.url);
    }
    // Followed in order, the pages leave the store migrated.
    assert.equal((await client.keys("ai:job:*")).length, 300);
  });
  const cluster = await startCluster();
  const client = cluster.client();
  const nodes = cluster.nodeClients();
  try {
    await seedOldCluster(client, makeJobs(300));
    for (const { page, args } of sharded) await runDocumented(page, args, cluster.url);
    assert.equal(await countClusterKeys(nodes, "ai:job:*"), 300, "the shards cover every master");
  } finally {
    for (const node of nodes) node.disconnect();
    client.disconnect();
    await cluster.stop();
  }
});

/** Runs one documented command against `url` (a URL in the docs points at the reader's Redis). */
async function runDocumented(page: string, args: string[], url: string): Promise<void> {
  const at = args.indexOf("--redis-url");
  const withUrl = at >= 0
    ? args.map((arg, i) => (i === at + 1 ? url : arg))
    : [...args, "--redis-url", url];
  const local = ["--help", "-h", "--version"].some((flag) => args.includes(flag));
  const result = await runCli(local ? args : withUrl);
  // 0, or 5 after a documented `stop`; a verify run before the store is complete reports parity
  // below 100% with 1. Never a usage error, a refusal or an internal error.
  const allowed: number[] = [ExitCode.ok, ExitCode.stopped];
  if (args[0] === "verify") allowed.push(ExitCode.failed);
  const what = `${page}: ./backfill ${args.join(" ")} exited ${result.code}\n${result.stderr}`;
  assert.ok(allowed.includes(result.code), what);
  assert.doesNotMatch(result.stderr, /internal error/, what);
}
