/**
 * `deno task demo` end to end: a real redis-server, the real CLI as child processes. Guards the
 * README's first command.
 *
 * @module
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

async function redisServerInstalled(): Promise<boolean> {
  try {
    await new Deno.Command("redis-server", { args: ["--version"], stdout: "null", stderr: "null" })
      .output();
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name: "demo: seeds, dry-runs, executes, verifies and cleans up (exit 0, parity 100%)",
  ignore: !(await redisServerInstalled()),
  async fn() {
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "demo/demo.ts"],
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      // ~11 s alone; beside the other tests on 2 cores it once took 44 s in CI.
      signal: AbortSignal.timeout(120_000),
    }).output();
    const out = new TextDecoder().decode(stdout);
    const err = new TextDecoder().decode(stderr);
    assert.equal(code, 0, `demo exited ${code}\n--- stdout\n${out}\n--- stderr\n${err}`);

    const migrated = [...out.matchAll(/^\s*Migrated:\s+(\d+)/gm)].map((m) => Number(m[1]));
    assert.equal(migrated.length, 2, `two summaries (dry run, execute) expected:\n${out}`);
    assert.ok(migrated[0]! > 0, `nothing to migrate:\n${out}`);
    assert.equal(migrated[1], migrated[0], "execute migrated what the dry run counted");
    assert.match(out, /parity\D*100(\.0+)?\s*%/i);
    assert.match(out, /relay_backfill_migrated_total\{/);
    assert.match(out, /Demo finished: all steps OK\./);
    const dir = out.match(/Cleaned up: redis-server stopped, (\S+) removed\./)?.[1];
    assert.ok(dir, `no cleanup line:\n${out}`);
    await assert.rejects(Deno.stat(dir), Deno.errors.NotFound, `${dir} was not removed`);
  },
});
