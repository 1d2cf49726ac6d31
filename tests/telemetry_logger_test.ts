import assert from "node:assert/strict";
import { createLogger, type LoggerOptions } from "../src/telemetry/logger.ts";
import { escapeForLog, redactSecrets } from "../src/telemetry/redact.ts";

const NOW = Date.UTC(2025, 0, 2, 3, 4, 5, 678);

function capture(options: Omit<LoggerOptions, "write" | "now">) {
  const lines: string[] = [];
  const logger = createLogger({ ...options, write: (t) => lines.push(t), now: () => NOW });
  return { logger, lines };
}

Deno.test("logger text: time LEVEL event: message k=v, one line", () => {
  const { logger, lines } = capture({ format: "text" });
  logger.log("info", "resume", "Resuming from stored cursor", {
    cursor: "1234",
    last_job: "job 42",
    scanned: 10,
    done: false,
    missing: undefined,
  });
  assert.deepEqual(lines, [
    '2025-01-02T03:04:05.678Z INFO resume: Resuming from stored cursor cursor=1234 last_job="job 42" scanned=10 done=false\n',
  ]);
});

Deno.test("logger json: one object per line with time, level, event, message and fields", () => {
  const { logger, lines } = capture({ format: "json" });
  logger.log("warn", "push_failed", "could not push", {
    status: 503,
    big: 2n ** 70n,
    error: new TypeError("boom"),
    message: "a field named like a core key",
  });
  assert.equal(lines.length, 1);
  assert.ok(lines[0]!.endsWith("}\n"));
  assert.equal(lines[0]!.split("\n").length, 2);
  assert.deepEqual(JSON.parse(lines[0]!), {
    time: "2025-01-02T03:04:05.678Z",
    level: "warn",
    event: "push_failed",
    message: "could not push",
    status: 503,
    big: "1180591620717411303424",
    error: "TypeError: boom",
    field_message: "a field named like a core key",
  });
});

Deno.test("logger: quiet drops debug and info, keeps warn and error; debug is opt-in", () => {
  const emit = (logger: ReturnType<typeof createLogger>) => {
    for (const level of ["debug", "info", "warn", "error"] as const) logger.log(level, level, "m");
  };
  const levels = (lines: string[]) => lines.map((l) => l.split(" ")[1]);
  const normal = capture({ format: "text" });
  emit(normal.logger);
  assert.deepEqual(levels(normal.lines), ["INFO", "WARN", "ERROR"]);
  const quiet = capture({ format: "text", quiet: true });
  emit(quiet.logger);
  assert.deepEqual(levels(quiet.lines), ["WARN", "ERROR"]);
  const debug = capture({ format: "text", debug: true });
  emit(debug.logger);
  assert.deepEqual(levels(debug.lines), ["DEBUG", "INFO", "WARN", "ERROR"]);
  const quietDebug = capture({ format: "json", quiet: true, debug: true });
  emit(quietDebug.logger);
  assert.deepEqual(quietDebug.lines.map((l) => JSON.parse(l).level), ["warn", "error"]);
});

Deno.test("logger: URL passwords are redacted in messages and fields, in both formats", () => {
  for (const format of ["text", "json"] as const) {
    const { logger, lines } = capture({ format });
    logger.log("error", "connect_failed", "cannot reach redis://app:hunter2@10.0.0.1:6379/0", {
      url: "rediss://:hunter2@cache.internal:6380",
      nested: { url: "redis://default:hunter2@h" },
      error: new Error("connect to redis://u:hunter2@h failed"),
    });
    assert.equal(lines.length, 1);
    assert.ok(!lines[0]!.includes("hunter2"), lines[0]);
    assert.ok(lines[0]!.includes("redis://app:***@10.0.0.1:6379/0"), lines[0]);
    assert.ok(lines[0]!.includes("rediss://:***@cache.internal:6380"), lines[0]);
  }
});

Deno.test("logger text: control characters cannot start a new line", () => {
  const { logger, lines } = capture({ format: "text" });
  logger.log("warn", "ev\nil", "line one\nINFO fake: injected\u2028", { ws: "a\r\nb" });
  assert.equal(lines.length, 1);
  assert.equal(lines[0]!.split("\n").length, 2);
  assert.ok(!lines[0]!.includes("\r") && !lines[0]!.includes("\u2028"));
  assert.ok(lines[0]!.includes("ev\\x0ail: line one\\x0aINFO fake: injected\\u{2028}"), lines[0]);
  assert.ok(lines[0]!.endsWith(' ws="a\\r\\nb"\n'), lines[0]);
});

Deno.test("redactSecrets", () => {
  assert.equal(redactSecrets("redis://user:secret@host:6379"), "redis://user:***@host:6379");
  assert.equal(redactSecrets("redis://:secret@host"), "redis://:***@host");
  assert.equal(redactSecrets("redis://tokenonly@host"), "redis://***@host");
  assert.equal(redactSecrets("redis://u:p@ss@host/0"), "redis://u:***@host/0");
  assert.equal(redactSecrets("redis://host:6379/0"), "redis://host:6379/0");
  assert.equal(
    redactSecrets("a=redis://u:x@h1 b=http://v:y@h2/p"),
    "a=redis://u:***@h1 b=http://v:***@h2/p",
  );
  assert.equal(redactSecrets("mail me at ops@example.com"), "mail me at ops@example.com");
});

Deno.test("escapeForLog: printable ASCII passes, the rest is escaped, long values are cut", () => {
  assert.equal(escapeForLog("acme-42"), "acme-42");
  assert.equal(escapeForLog("bad\nid\\"), "bad\\x0aid\\x5c");
  assert.equal(escapeForLog("caf\u00e9\u{1f600}"), "caf\\xe9\\u{1f600}");
  assert.equal(escapeForLog(new Uint8Array([0x61, 0xff, 0x00])), "a\\xff\\x00");
  assert.equal(escapeForLog("x".repeat(64)), "x".repeat(64));
  assert.equal(escapeForLog("x".repeat(65)), `${"x".repeat(61)}...`);
  // An escape is never cut in half.
  const cut = escapeForLog(`${"x".repeat(58)}\n\n`, 64);
  assert.equal(cut, `${"x".repeat(58)}...`);
  assert.throws(() => escapeForLog("x", 0), RangeError);
});
