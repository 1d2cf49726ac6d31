/**
 * What schema.ts says twice, once for the client and once for the scripts, must agree: the
 * default workspace rule (a JavaScript regex; a Lua pattern + length bound), and the key mapping
 * (`KeySchema`; the shared Lua helper `KEY_LUA` every script builds new keys with).
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { DEFAULT_WORKSPACE_LUA, KEY_LUA, KeySchema } from "../src/schema.ts";
import type { Redis } from "../src/redis/ioredis.ts";
import { withRedis } from "./support/redis_server.ts";

const CHECK = `local out = {}
for i, ws in ipairs(ARGV) do
  if i > 2 then
    out[#out + 1] = (#ws <= tonumber(ARGV[2]) and string.find(ws, ARGV[1]) ~= nil) and 1 or 0
  end
end
return out`;

Deno.test("the Lua form of the default workspace rule agrees with the regex", async () => {
  const ids = [
    "ws1",
    "A",
    "a-b_c",
    "9lives",
    "x".repeat(64),
    "x".repeat(65),
    "",
    "-lead",
    "_lead",
    "has space",
    "has:colon",
    "dot.ted",
    "naïve",
    "tab\t",
    "new\nline",
    "%",
    "a%",
  ];
  await withRedis(async (_server, client) => {
    const lua = await client.eval(
      CHECK,
      0,
      DEFAULT_WORKSPACE_LUA.pattern,
      String(DEFAULT_WORKSPACE_LUA.maxLength),
      ...ids,
    ) as number[];
    const rule = new KeySchema();
    ids.forEach((id, i) => {
      assert.equal(lua[i] === 1, rule.checkWorkspace(id) !== undefined, JSON.stringify(id));
    });
  });
});

/**
 * The field names the helper read from the spec, then per case of ARGV[2..] (an old key and the
 * values of the n fields): the new key the helper builds, or nil.
 */
const BUILD = `${KEY_LUA}
local key_parts, new_key, fields = key_mapping(ARGV[1])
local n = #fields
local out = {fields}
for i = 2, #ARGV, 1 + n do
  local parts = key_parts(ARGV[i])
  local values = {}
  for j = 1, n do values[j] = ARGV[i + j] end
  out[#out + 1] = parts and new_key(parts, values) or false
end
return out`;

/**
 * Builds each case's new key with the Lua helper and checks it is the one `keys` builds (and that
 * the helper reads the fields `keys` names, in its order); returns which cases got a key. A case
 * is an old key and one value (one field) or the values of every field.
 */
async function assertLuaAgrees(
  client: Redis,
  keys: KeySchema,
  cases: readonly (readonly [Uint8Array | string, string | readonly string[]])[],
): Promise<boolean[]> {
  const valuesOf = (value: string | readonly string[]) =>
    typeof value === "string" ? [value] : value;
  const [fields, ...built] = await client.callBuffer(
    "EVAL",
    BUILD,
    "0",
    keys.luaSpec,
    ...cases.flatMap(([old, value]) => [Buffer.from(old), ...valuesOf(value)]),
  ) as [Buffer[], ...(Buffer | null)[]];
  assert.deepEqual(fields.map(String), keys.fields);
  cases.forEach(([old, value], i) => {
    const expected = keys.newKeyOf(Buffer.from(old), valuesOf(value));
    assert.deepEqual(built[i] ?? undefined, expected, `${keys.to.text}: ${old} ${value}`);
  });
  return built.map((b) => b !== null);
}

Deno.test("the shared Lua key helper builds exactly the new keys KeySchema builds", async () => {
  const cases: [Buffer, string][] = [
    [Buffer.from("ai:jobs:42"), "ws-1"],
    [Buffer.concat([Buffer.from("ai:jobs:"), Buffer.from([0x6a, 0xff, 0x00, 0x3a, 0x80])]), "w"],
    [Buffer.from("ai:jobs:a:b:c"), "ws"],
    [Buffer.from("ai:jobs:"), "ws"], // an empty job id: no new key
    [Buffer.from("ai:jobx:1"), "ws"], // not an old key
    [Buffer.from("ai:jobs:1"), "a:b"], // a workspace holding the separator
    [Buffer.from("ai:jobs:1"), ""],
  ];
  await withRedis(async (_server, client) => {
    assert.deepEqual(
      await assertLuaAgrees(client, new KeySchema(), cases),
      [true, true, true, false, false, false, false],
    );
  });
});

Deno.test("mapping: the Lua helper builds the new keys KeySchema builds, for every shape", async () => {
  const shapes: [KeySchema, [string, string][]][] = [
    [
      new KeySchema({ to: "ai:job:{{workspace_id}}:{job_id}" }),
      [["ai:jobs:42", "acme"], ["ai:jobs:", "acme"], ["ai:jobs:1", "a}:b"]],
    ],
    [
      new KeySchema({
        from: "jobs:{queue}:{job_id}",
        to: "tasks:{tenant}:{queue}:{job_id}",
        patterns: { tenant: "^t[0-9]+$" },
      }),
      [
        ["jobs:high:7:x", "t1"],
        ["jobs::7", "t1"],
        ["jobs:high", "t1"],
        ["jobs:low:9", "t:2"],
        ["job:low:9", "t2"],
      ],
    ],
    [new KeySchema({ from: "a/{x}/{y}.v1", to: "b/{x}/{z}/{y}.v2", patterns: { z: "^.+$" } }), [
      ["a/1/2.v1", "z"],
      ["a/1/2/3.v1", "z"],
      ["a/1/2", "z"],
      ["a/1/2.v1", "z/"],
    ]],
  ];
  await withRedis(async (_server, client) => {
    for (const [keys, cases] of shapes) await assertLuaAgrees(client, keys, cases);
  });
});

Deno.test("mapping: the Lua helper builds the new keys KeySchema builds from two fields", async () => {
  const shapes: [KeySchema, [string, string[]][], boolean[]][] = [
    [
      new KeySchema({
        from: "jobs:{queue}:{job_id}",
        to: "tasks:{tenant}:{region}:{queue}:{job_id}",
        patterns: { tenant: "^t[0-9]+$", region: "^[a-z]{2}-[0-9]+$" },
      }),
      [
        ["jobs:high:7:x", ["t1", "eu-1"]],
        ["jobs:high:7", ["t1", "eu:1"]], // the second value holds the literal after it
        ["jobs:high:7", ["t:1", "eu-1"]], // the first does
        ["jobs:high:7", ["t1", ""]],
        ["jobs:high:7", ["", "eu-1"]],
        ["jobs::7", ["t1", "eu-1"]],
      ],
      [true, false, false, false, false, false],
    ],
    [
      // Three fields, the first (the workspace: region) in a hash tag.
      new KeySchema({ to: "ai:job:{{region}}/{workspace_id}.{zone}:{job_id}" }),
      [
        ["ai:jobs:42", ["eu", "ws-1", "a"]],
        ["ai:jobs:42", ["e}/u", "ws-1", "a"]],
        ["ai:jobs:42", ["eu", "ws.1", "a"]],
        ["ai:jobs:42", ["eu", "ws-1", "a:b"]],
      ],
      [true, false, false, false],
    ],
  ];
  await withRedis(async (_server, client) => {
    for (const [keys, cases, made] of shapes) {
      assert.deepEqual(await assertLuaAgrees(client, keys, cases), made, keys.to.text);
    }
  });
});
