/**
 * Key mappings (`--from`, `--to`, `--pattern`): how templates build and parse names, the Lua helper
 * agreeing with them, and the mappings refused before anything is read.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { runParams } from "../src/run/checkpointer.ts";
import { keySlot } from "../src/redis/slot.ts";
import { verifyParams } from "../src/verify/full/checkpoint.ts";
import { globsOverlap, KeySchema, type KeySchemaOptions, TemplateError } from "../src/schema.ts";
import { runCli } from "./support/cli.ts";
import { withRedis } from "./support/redis_server.ts";

const TAGGED = { to: "ai:job:{{workspace_id}}:{job_id}" };
const RENAMED = {
  from: "jobs:{queue}:{job_id}",
  to: "tasks:{tenant}:{queue}:{job_id}",
  patterns: { tenant: "^t[0-9]+$" },
};

Deno.test("mapping: a hash-tagged --to puts the new key in its workspace's slot", () => {
  const keys = new KeySchema(TAGGED);
  const fresh = keys.newKeyOf(Buffer.from("ai:jobs:42"), ["acme"])!;
  assert.equal(fresh.toString(), "ai:job:{acme}:42");
  assert.equal(keySlot(fresh), keySlot(Buffer.from("acme")));
  assert.equal(keys.newMatch, "ai:job:{*}:*");
  assert.equal(keys.newMatchFor("acme"), "ai:job:{acme}:*");
  const parsed = keys.parseNewKey(fresh)!;
  assert.equal(parsed.oldKey.toString(), "ai:jobs:42");
  assert.equal(parsed.workspace, "acme");
  assert.equal(keys.isDefaultMapping, false);
  // Which mapping made a new key: this one, not the default (which reads the tag as a workspace
  // "{acme}", invalid under its rule); and the default's copies are not this one's.
  const defaults = new KeySchema();
  assert.equal(keys.isCopyOf(fresh, Buffer.from("ai:jobs:42")), true);
  assert.equal(defaults.isCopyOf(fresh, Buffer.from("ai:jobs:42")), false);
  assert.equal(keys.isCopyOf(Buffer.from("ai:job:acme:42"), Buffer.from("ai:jobs:42")), false);
  assert.equal(keys.isCopyOf(fresh, Buffer.from("ai:jobs:43")), false);
  assert.deepEqual(keys.fingerprint, {
    pattern: "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
    mapping: "ai:jobs:{job_id} -> ai:job:{{workspace_id}}:{job_id}",
  });
  assert.deepEqual(new KeySchema().fingerprint, { pattern: "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$" });
});

Deno.test("mapping: the checkpoint's and verify's parameters name another mapping only", () => {
  const params = (keys: KeySchema) => ({
    run: runParams({ ...keys.fingerprint, match: keys.oldMatch }),
    verify: verifyParams({ keys, ttlToleranceSeconds: 1, orphans: false }),
  });
  const before = {
    run: '{"workspace":null,"pattern":"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$","match":"ai:jobs:*"}',
    verify: '{"workspace":null,"pattern":"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$","ttl_tolerance":1,' +
      '"orphans":false,"jobs_path":"sub_batches"}',
  };
  assert.deepEqual(params(new KeySchema()), before, "the default's are as they were");
  const tagged = params(new KeySchema(TAGGED));
  for (const text of [tagged.run, tagged.verify]) {
    assert.equal(JSON.parse(text).mapping, "ai:jobs:{job_id} -> ai:job:{{workspace_id}}:{job_id}");
  }
});

Deno.test("mapping: a renamed prefix with a placeholder of the old name and a field", () => {
  const keys = new KeySchema(RENAMED);
  assert.equal(keys.workspaceField, "tenant");
  assert.equal(keys.oldMatch, "jobs:*:*");
  // {queue} ends at the first ':'; {job_id} takes the rest, ':' included.
  const old = Buffer.from("jobs:high:7:x");
  assert.deepEqual(keys.oldParts(old)?.map(String), ["high", "7:x"]);
  assert.equal(keys.idOf(old)?.toString(), "high:7:x");
  const fresh = keys.newKeyOf(old, ["t1"])!;
  assert.equal(fresh.toString(), "tasks:t1:high:7:x");
  assert.deepEqual(keys.parseNewKey(fresh)?.oldKey, old);
  assert.equal(keys.checkWorkspace("t12"), "t12");
  assert.equal(keys.checkWorkspace("acme"), undefined, "--pattern tenant=… is its rule");
  assert.equal(keys.isDefaultRule, false);
  assert.equal(keys.oldParts(Buffer.from("jobs::7")), undefined, "an empty placeholder");
  assert.equal(keys.oldParts(Buffer.from("jobs:high")), undefined, "no ':' after {queue}");
});

Deno.test("mapping: ambiguous or unusable mappings are refused with one line", () => {
  const refused: [KeySchemaOptions, RegExp][] = [
    [{ to: "ai:job:{workspace_id}" }, /does not use \{job_id\} of --from: two old keys/],
    [{ to: "ai:job:{job_id}" }, /reads 0 hash fields \(none\); it must read exactly one/],
    [{ to: "ai:job:{workspace_id}:{region}:{job_id}" }, /reads 2 hash fields/],
    [{ to: "ai:job:{job_id}:{workspace_id}" }, /\{job_id\} could hold ':', the literal after it/],
    [{ to: "ai:job:{workspace_id}-{job_id}" }, /\{workspace_id\} could hold '-'/],
    [
      { from: "q:{queue}-{job_id}", to: "t:{queue}:{workspace_id}:{job_id}" },
      /\{queue\} could hold ':'/,
    ],
    [{ to: "ai:jobs:{workspace_id}:{job_id}" }, /can produce names that match --from/],
    [{ from: "ai:jobs:{job_id}", to: "{workspace_id}:jobs:{job_id}" }, /match --from/],
    [{ to: "ai:job:{workspace_id}{job_id}" }, /need a literal between them/],
    [{ to: "ai:job:{workspace_id}:{job_id}}" }, /a stray '\}'/],
    [{ from: "ai:jobs:{job_id}:{job_id}" }, /\{job_id\} appears twice/],
    [{ to: "ai:job:{work space}:{job_id}" }, /\{work space\} is not a name/],
    [{ from: "ai:jobs" }, /no placeholder/],
    [{ patterns: { region: "^x$" } }, /\{region\} is not the hash field/],
    [{ patterns: { workspace_id: "^x$" } }, /the rule for workspace_id is --workspace-pattern/],
    [
      { to: "t:{tenant}:{job_id}", workspacePattern: "^x$" },
      /--workspace-pattern is the rule for workspace_id, which --to .* does not read \(--pattern tenant=RE\)/,
    ],
  ];
  for (const [options, reason] of refused) {
    assert.throws(() => new KeySchema(options), (error: unknown) => {
      assert.ok(error instanceof TemplateError, JSON.stringify(options));
      assert.match(error.message, reason, JSON.stringify(options));
      assert.ok(!error.message.includes("\n"));
      return true;
    });
  }
  // A custom rule may allow the literal after the field: such a value is refused per key.
  const loose = new KeySchema({ to: "x:{tenant}-{job_id}", patterns: { tenant: "^.+$" } });
  assert.equal(loose.newKeyOf(Buffer.from("ai:jobs:1"), ["a-b"]), undefined);
  assert.equal(loose.checkWorkspace("a-b"), undefined, "nor a valid workspace");
  assert.equal(loose.checkWorkspace("a+b"), "a+b");
  assert.equal(loose.newKeyOf(Buffer.from("ai:jobs:1"), ["ab"])?.toString(), "x:ab-1");
});

Deno.test("mapping: glob overlap", () => {
  assert.equal(globsOverlap("ai:jobs:*", "ai:job:*:*"), false);
  assert.equal(globsOverlap("ai:jobs:*", "ai:job*"), true);
  assert.equal(globsOverlap("a\\*b", "a*b"), true);
  assert.equal(globsOverlap("a\\*b", "acb"), false);
  assert.equal(globsOverlap("*:x", "y:*"), true);
});

Deno.test("mapping: a bad mapping exits 2 with one line before Redis is even reached", async () => {
  await withRedis(async (server, client) => {
    const connections = async () =>
      Number((await client.info("stats")).match(/total_connections_received:(\d+)/)![1]);
    const before = await connections();
    for (
      const args of [
        ["--execute", "--to", "ai:jobs:{workspace_id}:{job_id}"],
        ["--dry-run", "--to", "ai:job:{workspace_id}"],
        ["verify", "--full", "--from", "q:{queue}-{job_id}", "--to", "t:{queue}:{tenant}:{job_id}"],
        ["--execute", "--pattern", "tenant"],
      ]
    ) {
      const result = await runCli([...args, "--redis-url", server.url]);
      assert.equal(result.code, 2, args.join(" "));
      assert.equal(result.stdout, "");
      assert.match(result.stderr, /^error: [^\n]+\n$/, args.join(" "));
    }
    assert.equal(await connections(), before, "no connection was made");
  });
});
