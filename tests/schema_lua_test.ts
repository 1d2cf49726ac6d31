/**
 * The default workspace rule exists twice: as the JavaScript regex the client checks and as the
 * Lua pattern + length bound the in-server script checks (both from schema.ts). They must agree.
 */
import assert from "node:assert/strict";
import { DEFAULT_WORKSPACE_LUA, WorkspaceRule } from "../src/schema.ts";
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
    const rule = new WorkspaceRule();
    ids.forEach((id, i) => {
      assert.equal(lua[i] === 1, rule.check(id) !== undefined, JSON.stringify(id));
    });
  });
});
