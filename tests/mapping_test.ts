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
/** The second example of docs/mappings.md: two fields, each with its rule. */
const TWO_FIELDS = {
  from: "jobs:{queue}:{job_id}",
  to: "tasks:{tenant}:{region}:{queue}:{job_id}",
  patterns: { tenant: "^t[0-9]+$", region: "^[a-z]{2}-[0-9]+$" },
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

Deno.test("mapping: a new name built from two fields, each value under its own rule", () => {
  const keys = new KeySchema(TWO_FIELDS);
  assert.deepEqual(keys.fields, ["tenant", "region"]);
  assert.equal(keys.workspaceField, "tenant", "the first field read is the workspace");
  assert.equal(keys.isDefaultRule, false);
  const old = Buffer.from("jobs:high:7:x");
  const fresh = keys.newKeyOf(old, ["t1", "eu-1"])!;
  assert.equal(fresh.toString(), "tasks:t1:eu-1:high:7:x");
  assert.deepEqual(keys.parseNewKey(fresh), {
    oldKey: old,
    values: ["t1", "eu-1"],
    workspace: "t1",
  });
  assert.equal(keys.isCopyOf(fresh, old), true);
  assert.equal(keys.isCopyOf(Buffer.from("tasks:t1:eu1:high:7:x"), old), false, "region's rule");
  assert.equal(keys.isCopyOf(Buffer.from("tasks:x1:eu-1:high:7:x"), old), false, "tenant's rule");
  assert.equal(keys.newMatch, "tasks:*:*:*:*");
  assert.equal(keys.newMatchFor("t1"), "tasks:t1:*:*:*");
  // Every value under its own rule; the workspace under the first field's.
  assert.deepEqual(keys.checkValues(["t1", "eu-1"]), ["t1", "eu-1"]);
  assert.deepEqual(keys.checkValues([Buffer.from("t1"), Buffer.from("eu-1")]), ["t1", "eu-1"]);
  for (
    const bad of [["t1", "eu1"], ["eu-1", "t1"], ["t1", null], ["t1"], ["t1", "eu-1", "x"], [
      "t1",
      "eu-1:2",
    ]]
  ) {
    assert.equal(keys.checkValues(bad), undefined, JSON.stringify(bad));
  }
  assert.equal(keys.checkWorkspace("t1"), "t1");
  assert.equal(keys.checkWorkspace("eu-1"), undefined);
  // The default rule on both fields: checked in the scripts, each field on its own.
  const plain = new KeySchema({ to: "ai:job:{workspace_id}:{region}:{job_id}" });
  assert.equal(plain.isDefaultRule, true);
  assert.deepEqual(plain.checkValues(["ws-1", "eu_1"]), ["ws-1", "eu_1"]);
  assert.equal(plain.checkValues(["ws-1", "eu 1"]), undefined);
  // One rule custom is enough for the client to check them all.
  const mixed = new KeySchema({
    to: "ai:job:{workspace_id}:{region}:{job_id}",
    patterns: { region: "^[a-z]+$" },
  });
  assert.equal(mixed.isDefaultRule, false);
  assert.deepEqual(mixed.checkValues(["ws-1", "eu"]), ["ws-1", "eu"]);
  assert.equal(mixed.checkValues(["ws 1", "eu"]), undefined, "workspace_id keeps the default");
  assert.equal(mixed.checkValues(["ws-1", "eu-1"]), undefined);
  const ruled = new KeySchema({
    to: "t:{tenant}:{workspace_id}:{job_id}",
    workspacePattern: "^w[0-9]$",
  });
  assert.equal(ruled.workspaceField, "tenant");
  assert.equal(ruled.checkValues(["acme", "w1"])?.join(), "acme,w1");
  assert.equal(ruled.checkValues(["acme", "ws-1"]), undefined, "--workspace-pattern rules it");
});

Deno.test("mapping: the rules of every field are part of the checkpoint's and verify's parameters", () => {
  const keys = new KeySchema(TWO_FIELDS);
  assert.deepEqual(keys.fingerprint, {
    pattern: "^t[0-9]+$",
    mapping: "jobs:{queue}:{job_id} -> tasks:{tenant}:{region}:{queue}:{job_id}",
    patterns: { region: "^[a-z]{2}-[0-9]+$" },
  });
  const other = new KeySchema({
    ...TWO_FIELDS,
    patterns: { ...TWO_FIELDS.patterns, region: "^.+$" },
  });
  const run = (k: KeySchema) => runParams({ ...k.fingerprint, match: k.oldMatch });
  const verify = (k: KeySchema) =>
    verifyParams({ keys: k, ttlToleranceSeconds: 1, orphans: false });
  assert.notEqual(run(keys), run(other), "another region rule is another run");
  assert.notEqual(verify(keys), verify(other), "and another verify");
  assert.deepEqual(JSON.parse(run(keys)).patterns, { region: "^[a-z]{2}-[0-9]+$" });
  // A mapping of one field names no other rule (its checkpoints stay as they were).
  assert.equal(JSON.parse(run(new KeySchema(RENAMED))).patterns, undefined);
});

Deno.test("mapping: ambiguous or unusable mappings are refused with one line", () => {
  const refused: [KeySchemaOptions, RegExp][] = [
    [{ to: "ai:job:{workspace_id}" }, /does not use \{job_id\} of --from: two old keys/],
    [{ to: "ai:job:{job_id}" }, /reads no hash field; it must read at least one/],
    // Two fields: each under its own rule, each with the same checks as one.
    [{ to: "ai:job:{workspace_id}:{region}-{job_id}" }, /\{region\} could hold '-'/],
    [{ to: "ai:job:{workspace_id}-{region}:{job_id}" }, /\{workspace_id\} could hold '-'/],
    [
      { to: "ai:job:{tenant}:{region}_{job_id}", patterns: { tenant: "^t[0-9]+$" } },
      /\{region\} could hold '_'/,
    ],
    [{ to: "ai:jobs:{workspace_id}:{region}:{job_id}" }, /can produce names that match --from/],
    [{ to: "ai:job:{workspace_id}:{region}{job_id}" }, /need a literal between them/],
    [
      { to: "t:{tenant}:{region}:{job_id}", patterns: { zone: "^x$" } },
      /--pattern zone=…: \{zone\} is not a hash field --to .* reads/,
    ],
    [
      { to: "t:{tenant}:{region}:{job_id}", workspacePattern: "^x$" },
      /--workspace-pattern is the rule for workspace_id, which --to .* does not read \(--pattern tenant=RE\)/,
    ],
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
    [{ patterns: { region: "^x$" } }, /\{region\} is not a hash field/],
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
  // So may the rule of the second field: that value alone is refused, per key.
  const second = new KeySchema({
    to: "x:{workspace_id}:{region}-{job_id}",
    patterns: { region: "^.+$" },
  });
  assert.equal(second.newKeyOf(Buffer.from("ai:jobs:1"), ["ws", "a-b"]), undefined);
  assert.equal(second.checkValues(["ws", "a-b"]), undefined);
  assert.deepEqual(second.checkValues(["ws", "a+b"]), ["ws", "a+b"]);
  assert.equal(second.newKeyOf(Buffer.from("ai:jobs:1"), ["ws", "ab"])?.toString(), "x:ws:ab-1");
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
        // Two fields: one that could hold the literal after it, a rule for a field not read.
        ["--execute", "--to", "t:{tenant}:{region}-{job_id}"],
        ["--dry-run", "--to", "t:{tenant}:{region}:{job_id}", "--pattern", "zone=^[a-z]+$"],
        ["verify", "--to", "t:{tenant}:{region}:{job_id}", "--workspace-pattern", "^x$"],
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
