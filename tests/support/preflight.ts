/**
 * The preflight of `deno task test` and `deno task demo` (see deno.json): before anything starts,
 * checks that the programs they spawn are on PATH and, if one is not, prints ONE line saying how to
 * get it (`script/bootstrap`) and exits 1, instead of a stack trace from deep inside a test.
 *
 * ```sh
 * deno run -q --allow-env=PATH --allow-read tests/support/preflight.ts redis-server redis-cli
 * ```
 *
 * @module
 */

/** What `script/bootstrap` installs, named in the hint. */
const BOOTSTRAP =
  "run script/bootstrap (installs Deno 2.9.6, redis-server, redis-cli, redis-benchmark and openssl)";

/**
 * The path of the executable `name` in the directories of `path` (a `PATH` value), or `undefined`
 * when none of them holds it.
 *
 * @example
 * ```ts
 * import { findOnPath } from "./preflight.ts";
 * findOnPath("redis-server", Deno.env.get("PATH"));
 * ```
 */
export function findOnPath(name: string, path: string | undefined): string | undefined {
  const separator = Deno.build.os === "windows" ? ";" : ":";
  for (const dir of (path ?? "").split(separator)) {
    if (dir === "") continue;
    const candidate = `${dir}/${name}`;
    try {
      const info = Deno.statSync(candidate);
      if (info.isFile && (info.mode === null || (info.mode & 0o111) !== 0)) return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

/** The one-line hint for the programs in `missing` (empty when nothing is missing). */
export function preflightHint(missing: readonly string[]): string {
  if (missing.length === 0) return "";
  return `error: ${missing.join(", ")} not found on PATH; ${BOOTSTRAP}`;
}

if (import.meta.main) {
  const missing = Deno.args.filter((name) => !findOnPath(name, Deno.env.get("PATH")));
  if (missing.length > 0) {
    Deno.stderr.writeSync(new TextEncoder().encode(preflightHint(missing) + "\n"));
    Deno.exit(1);
  }
}
