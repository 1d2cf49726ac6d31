/**
 * The shipped monitoring files, checked with the tools an SRE would use (promtool, yamllint), and
 * the Pushgateway semantics of real CLI runs against a real Pushgateway.
 */
import assert from "node:assert/strict";
import { runCli } from "./support/cli.ts";
import { startPushgateway, toolsAvailable } from "./support/prometheus.ts";
import { withSeeded } from "./support/seed.ts";
import { BackfillMetrics } from "../src/telemetry/metrics.ts";
import { BatchFeed, results } from "./support/telemetry.ts";

const ROOT = new URL("../", import.meta.url).pathname;

async function run(binary: string, args: string[], stdin?: string) {
  const child = new Deno.Command(binary, {
    args,
    cwd: ROOT,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const out = await child.output();
  const decoder = new TextDecoder();
  return {
    code: out.code,
    output: decoder.decode(out.stdout) + decoder.decode(out.stderr),
  };
}

Deno.test({
  name: "deploy: promtool checks the alert rules and passes their unit tests",
  ignore: !toolsAvailable("promtool"),
  async fn() {
    const check = await run("promtool", ["check", "rules", "deploy/prometheus/alerts.yml"]);
    assert.equal(check.code, 0, check.output);
    assert.match(check.output, /SUCCESS: 5 rules found/);
    const unit = await run("promtool", ["test", "rules", "deploy/prometheus/alerts_test.yml"]);
    assert.equal(unit.code, 0, unit.output);
  },
});

Deno.test({
  name: "deploy: the YAML is yamllint-clean",
  ignore: !toolsAvailable("yamllint"),
  async fn() {
    const lint = await run("yamllint", ["-s", "-c", ".yamllint.yml", "deploy/"]);
    assert.equal(lint.code, 0, lint.output);
  },
});

Deno.test({
  name: "deploy: promtool check metrics finds nothing in the exposition",
  ignore: !toolsAvailable("promtool"),
  async fn() {
    const metrics = new BackfillMetrics({ version: "0" });
    metrics.onStart({ mode: "execute", rps: 10, estimatedTotal: 5, progressKey: "k" });
    metrics.onBatch(new BatchFeed().next(results(3, "migrated", "acme")));
    metrics.onRedisReply({ node: "127.0.0.1:6379" });
    metrics.onEnd(new BatchFeed().summary());
    const check = await run("promtool", ["check", "metrics"], await metrics.registry.metrics());
    assert.equal(check.code, 0, check.output);
    assert.equal(check.output.trim(), "");
  },
});

Deno.test({
  name: "pushgateway: a refused run pushes nothing; dry-run and execute keep their own groups",
  ignore: !toolsAvailable("prometheus-pushgateway"),
  async fn() {
    const gateway = await startPushgateway();
    try {
      await withSeeded(300, async (server, client) => {
        const args = ["--pushgateway", gateway.url, "--redis-url", server.url, "--json"];
        const execute = await runCli(["--execute", "--rps", "0", ...args]);
        assert.equal(execute.code, 0, execute.stderr);
        const completed = /^relay_backfill_completed\{.*mode="execute".*\} 1$/m;
        assert.match(await gateway.scrape(), completed);

        // The lock is held by another runner: exit 4, and the good result stays.
        await client.set("ai:backfill:lock", JSON.stringify({ host: "elsewhere", pid: 1 }));
        const refused = await runCli(["--execute", ...args]);
        assert.equal(refused.code, 4, refused.stderr);
        const after = await gateway.scrape();
        assert.match(after, completed);
        assert.doesNotMatch(after, /^relay_backfill_completed\{.*\} 0$/m);
        await client.del("ai:backfill:lock");

        const dry = await runCli(["--dry-run", "--rps", "0", ...args]);
        assert.equal(dry.code, 0, dry.stderr);
        const both = await gateway.scrape();
        assert.match(both, completed);
        assert.match(
          both,
          /^relay_backfill_migrated_total\{.*mode="dry-run".*workspace_id="ws-a"\} 0$/m,
        );
        assert.match(
          both,
          /^relay_backfill_migrated_total\{.*mode="execute".*workspace_id="ws-a"\} 100$/m,
        );
      });
    } finally {
      await gateway.stop();
    }
  },
});
