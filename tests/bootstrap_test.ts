/**
 * The fresh-machine path of the README's quick start: `script/bootstrap`, `script/demo`,
 * `script/test`, and the preflight of `deno task test` / `deno task demo`. Each test runs the real
 * script under a PATH made of a temporary directory only: symlinks to the real programs the case
 * has, and shims for the installers (apt-get, npm, brew, sudo) that record every call.
 *
 * @module
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { findOnPath, preflightHint } from "./support/preflight.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const REAL_PATH = Deno.env.get("PATH");
const REDIS = ["redis-server", "redis-cli", "redis-benchmark"];
const TEST_TOOLS = ["promtool", "prometheus", "prometheus-pushgateway", "shellcheck", "yamllint"];
const isPosix = Deno.build.os !== "windows";
const bash = findOnPath("bash", REAL_PATH);

function allOnPath(names: readonly string[]): boolean {
  return names.every((name) => findOnPath(name, REAL_PATH) !== undefined);
}

/** A PATH of one temporary directory; `calls()` lists what the installer shims were asked to do. */
interface FakePath {
  path: string;
  calls(): Promise<string[]>;
  remove(): Promise<void>;
}

/** Shim bodies, run after the shim logged its call. */
const FAIL = "exit 1";
const SUCCEED = "exit 0";
/** `sudo -n CMD…` runs CMD (as the same user: the shim only proves that sudo was used). */
const SUDO = `[ "$1" = -n ] && shift\n"$@"`;
/** The four installers, each failing: a call is recorded and installs nothing. */
const FAILING_INSTALLERS = { "apt-get": FAIL, npm: FAIL, brew: FAIL, sudo: FAIL };

/**
 * A directory holding symlinks to the real `programs` (`deno` always: the running one) and, for
 * each entry of `shims`, a script that appends its name and arguments to a log and then runs the
 * entry's body (`$SHIM_DIR` is the directory).
 */
async function fakePath(
  programs: readonly string[],
  shims: Record<string, string> = {},
): Promise<FakePath> {
  const dir = await Deno.makeTempDir({ prefix: "backfill-path-" });
  await Deno.chmod(dir, 0o777); // the non-root test writes its log here too
  const log = `${dir}/.calls`;
  await Deno.symlink(Deno.execPath(), `${dir}/deno`);
  for (const name of ["bash", ...programs]) {
    const real = findOnPath(name, REAL_PATH);
    assert.ok(real, `${name} is not on this machine's PATH`);
    await Deno.symlink(real, `${dir}/${name}`);
  }
  for (const [name, body] of Object.entries(shims)) {
    await Deno.writeTextFile(
      `${dir}/${name}`,
      `#!${bash}\nSHIM_DIR='${dir}'\necho "${name} $*" >> '${log}'\n${body}\n`,
      { mode: 0o755 },
    );
  }
  return {
    path: dir,
    async calls() {
      try {
        return (await Deno.readTextFile(log)).trim().split("\n");
      } catch (error: unknown) {
        if (error instanceof Deno.errors.NotFound) return [];
        throw error;
      }
    },
    remove: () => Deno.remove(dir, { recursive: true }),
  };
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

/**
 * Runs `command args` from the project root (or `cwd`) with nothing in the environment but `path`.
 */
async function run(command: string, args: string[], path: string, cwd = ROOT): Promise<Run> {
  const env: Record<string, string> = { PATH: path, NO_COLOR: "1" };
  for (const name of ["HOME", "DENO_DIR"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  const started = performance.now();
  const out = await new Deno.Command(command, {
    args,
    cwd,
    clearEnv: true,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const decoder = new TextDecoder();
  return {
    code: out.code,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
    ms: performance.now() - started,
  };
}

function lines(text: string): string[] {
  return text.split("\n").filter((line) => line.trim() !== "");
}

Deno.test({
  name: "scripts: script/* and .ci/run are shellcheck-clean (a missing shellcheck fails under CI)",
  ignore: !findOnPath("shellcheck", REAL_PATH) && Deno.env.get("CI") !== "true",
  async fn() {
    assert.ok(findOnPath("shellcheck", REAL_PATH), "CI=true but shellcheck is not on PATH");
    const scripts = ["script/bootstrap", "script/demo", "script/test", ".ci/run"];
    const out = await run("shellcheck", scripts, REAL_PATH ?? "");
    assert.equal(out.code, 0, `shellcheck:\n${out.stdout}${out.stderr}`);
  },
});

Deno.test({
  name: "bootstrap: with everything present it calls no installer and returns quickly",
  ignore: !isPosix || !bash || !allOnPath([...REDIS, "openssl"]),
  async fn() {
    const fake = await fakePath([...REDIS, "openssl"], FAILING_INSTALLERS);
    try {
      const out = await run(`${ROOT}script/bootstrap`, [], fake.path);
      assert.equal(out.code, 0, out.stderr);
      assert.deepEqual(await fake.calls(), []);
      assert.equal(out.stdout, "");
      assert.match(out.stderr, /^bootstrap: nothing to install \(deno 2\.9\.6, redis-server \d/);
      assert.equal(lines(out.stderr).length, 1, out.stderr);
      assert.ok(out.ms < 1000, `took ${out.ms} ms`);
    } finally {
      await fake.remove();
    }
  },
});

Deno.test({
  name: "bootstrap --test-tools: with the test tools present it calls no installer either",
  ignore: !isPosix || !bash ||
    (!allOnPath([...REDIS, "openssl", ...TEST_TOOLS]) && Deno.env.get("CI") !== "true"),
  async fn() {
    const fake = await fakePath([...REDIS, "openssl", ...TEST_TOOLS], FAILING_INSTALLERS);
    try {
      const out = await run(`${ROOT}script/bootstrap`, ["--test-tools"], fake.path);
      assert.equal(out.code, 0, out.stderr);
      assert.deepEqual(await fake.calls(), []);
    } finally {
      await fake.remove();
    }
  },
});

Deno.test({
  name: "bootstrap: redis-server missing and no installer → one line naming the command, exit 1",
  ignore: !isPosix || !bash || !allOnPath(["openssl"]),
  async fn() {
    const fake = await fakePath(["openssl"]);
    try {
      const out = await run(`${ROOT}script/bootstrap`, [], fake.path);
      assert.equal(out.code, 1);
      assert.equal(out.stdout, "");
      assert.deepEqual(lines(out.stderr), [
        "error: redis-server, redis-cli, redis-benchmark not found; install them with your " +
        "package manager (Debian/Ubuntu: sudo apt-get install -y redis-server redis-tools)",
      ]);
    } finally {
      await fake.remove();
    }
  },
});

Deno.test({
  name: "bootstrap: asks apt-get for exactly the missing packages, then says what is still missing",
  ignore: !isPosix || !bash || !allOnPath(["openssl", "env"]),
  async fn() {
    // apt-get "succeeds" without installing anything: bootstrap must notice.
    const fake = await fakePath(["openssl", "env"], {
      ...FAILING_INSTALLERS,
      "apt-get": SUCCEED,
    });
    try {
      const out = await run(`${ROOT}script/bootstrap`, [], fake.path);
      assert.equal(out.code, 1);
      const apt = (await fake.calls()).filter((call) => call.startsWith("apt-get"));
      assert.deepEqual(apt, [
        "apt-get update -qq",
        "apt-get install -y -qq --no-install-recommends redis-server redis-tools",
      ]);
      assert.ok(!(await fake.calls()).some((call) => call.startsWith("npm")), "npm was called");
      assert.equal(
        lines(out.stderr).at(-1),
        "error: redis-server still not found on PATH after installing redis-server redis-tools",
      );
    } finally {
      await fake.remove();
    }
  },
});

Deno.test({
  name: "bootstrap: another Deno version is not replaced; one line says how to upgrade",
  ignore: !isPosix || !bash || !allOnPath([...REDIS, "openssl"]),
  async fn() {
    const fake = await fakePath([...REDIS, "openssl"], FAILING_INSTALLERS);
    try {
      // Stands in for a developer's own Deno (a second real version is not installed here).
      await Deno.remove(`${fake.path}/deno`);
      await Deno.writeTextFile(
        `${fake.path}/deno`,
        `#!${bash}\necho "deno 2.1.0 (stable, release, x86_64-unknown-linux-gnu)"\n`,
        { mode: 0o755 },
      );
      const out = await run(`${ROOT}script/bootstrap`, [], fake.path);
      assert.equal(out.code, 1);
      assert.deepEqual(await fake.calls(), []);
      assert.deepEqual(lines(out.stderr), [
        "error: deno 2.1.0 is on PATH, this project needs 2.9.6; run: deno upgrade --version 2.9.6",
      ]);
    } finally {
      await fake.remove();
    }
  },
});

Deno.test({
  name: "bootstrap: Deno missing → npm install -g deno@2.9.6, and nothing else is installed",
  ignore: !isPosix || !bash || !allOnPath([...REDIS, "openssl", "ln"]),
  async fn() {
    const ln = findOnPath("ln", REAL_PATH);
    // `npm prefix -g` names the fake directory; the "install" links the real Deno into it.
    const npm = `[ "$1" = prefix ] && { echo "$SHIM_DIR"; exit 0; }\n` +
      `'${ln}' -s '${Deno.execPath()}' "$SHIM_DIR/deno"`;
    const fake = await fakePath([...REDIS, "openssl"], { ...FAILING_INSTALLERS, npm });
    try {
      await Deno.remove(`${fake.path}/deno`);
      const out = await run(`${ROOT}script/bootstrap`, [], fake.path);
      assert.equal(out.code, 0, out.stderr);
      assert.deepEqual(await fake.calls(), ["npm prefix -g", "npm install -g deno@2.9.6"]);
      assert.equal(lines(out.stderr).at(-1), "bootstrap: installed deno 2.9.6");
    } finally {
      await fake.remove();
    }
  },
});

Deno.test({
  name: "bootstrap: Deno and npm missing → one line naming Node.js and the npm command",
  ignore: !isPosix || !bash,
  async fn() {
    const fake = await fakePath([]);
    try {
      await Deno.remove(`${fake.path}/deno`);
      const out = await run(`${ROOT}script/bootstrap`, [], fake.path);
      assert.equal(out.code, 1);
      assert.deepEqual(lines(out.stderr), [
        "error: deno not found and neither is npm; install Node.js 20+ with npm, then run: " +
        "npm install -g deno@2.9.6",
      ]);
    } finally {
      await fake.remove();
    }
  },
});

Deno.test({
  name: "bootstrap --test-tools: asks apt-get for the test tools' packages too",
  ignore: !isPosix || !bash || !allOnPath(["openssl", "env"]),
  async fn() {
    const fake = await fakePath(["openssl", "env"], { ...FAILING_INSTALLERS, "apt-get": SUCCEED });
    try {
      const out = await run(`${ROOT}script/bootstrap`, ["--test-tools"], fake.path);
      assert.equal(out.code, 1);
      assert.deepEqual((await fake.calls()).filter((call) => call.startsWith("apt-get")), [
        "apt-get update -qq",
        "apt-get install -y -qq --no-install-recommends redis-server redis-tools prometheus " +
        "prometheus-pushgateway shellcheck yamllint",
      ]);
    } finally {
      await fake.remove();
    }
  },
});

Deno.test({
  name: "bootstrap: without apt-get, brew installs redis",
  ignore: !isPosix || !bash || !allOnPath(["openssl"]),
  async fn() {
    const fake = await fakePath(["openssl"], { npm: FAIL, sudo: FAIL, brew: SUCCEED });
    try {
      const out = await run(`${ROOT}script/bootstrap`, [], fake.path);
      assert.equal(out.code, 1);
      assert.deepEqual(await fake.calls(), ["brew install redis"]);
      assert.equal(
        lines(out.stderr).at(-1),
        "error: redis-server still not found on PATH after installing redis",
      );
    } finally {
      await fake.remove();
    }
  },
});

/**
 * A copy of `script/bootstrap` that another user can run: the checkout may lie under a directory
 * only root can enter (a `mktemp -d`, `/root`), where uid 65534 could not even reach the file.
 * The script reads nothing else of the repository.
 */
async function reachableBootstrap(): Promise<{ dir: string; script: string }> {
  const dir = await Deno.makeTempDir({ prefix: "backfill-bootstrap-" });
  await Deno.chmod(dir, 0o755);
  const script = `${dir}/bootstrap`;
  await Deno.copyFile(`${ROOT}script/bootstrap`, script);
  await Deno.chmod(script, 0o755);
  return { dir, script };
}

const setpriv = findOnPath("setpriv", REAL_PATH);
for (const sudo of ["fails", "works"] as const) {
  Deno.test({
    name: `bootstrap as a non-root user whose passwordless sudo ${sudo}`,
    ignore: !isPosix || !bash || !setpriv || Deno.uid() !== 0 || !allOnPath(["openssl", "env"]),
    async fn() {
      // No brew: with Homebrew on Linux, a user without sudo gets `brew install redis` instead.
      const fake = await fakePath(["openssl", "env"], {
        npm: FAIL,
        "apt-get": SUCCEED,
        sudo: sudo === "works" ? SUDO : FAIL,
      });
      const copy = await reachableBootstrap();
      try {
        const out = await run(
          setpriv!,
          ["--reuid=65534", "--regid=65534", "--clear-groups", copy.script],
          fake.path,
          copy.dir,
        );
        assert.equal(out.code, 1);
        if (sudo === "fails") {
          assert.deepEqual(await fake.calls(), ["sudo -n true"]);
          assert.deepEqual(lines(out.stderr), [
            "error: redis-server, redis-cli, redis-benchmark not found; " +
            "run: sudo apt-get install -y redis-server redis-tools",
          ]);
        } else {
          const calls = await fake.calls();
          assert.ok(
            calls.includes("sudo -n env DEBIAN_FRONTEND=noninteractive apt-get update -qq"),
          );
          assert.ok(
            calls.includes(
              "apt-get install -y -qq --no-install-recommends " +
                "redis-server redis-tools",
            ),
            calls.join("\n"),
          );
        }
      } finally {
        await fake.remove();
        await Deno.remove(copy.dir, { recursive: true });
      }
    },
  });
}

Deno.test({
  name: "bootstrap: a redis-server older than 7.0 gets one line, exit 1",
  ignore: !isPosix || !bash || !allOnPath(["redis-cli", "redis-benchmark", "openssl"]),
  async fn() {
    const fake = await fakePath(["redis-cli", "redis-benchmark", "openssl"], {
      ...FAILING_INSTALLERS,
      // Stands in for Ubuntu 22.04's redis-server (an old Redis is not installed here).
      "redis-server": `echo "Redis server v=6.0.16 sha=00000000:0 malloc=jemalloc-5.2.1 bits=64"`,
    });
    try {
      const out = await run(`${ROOT}script/bootstrap`, [], fake.path);
      assert.equal(out.code, 1);
      assert.deepEqual((await fake.calls()).filter((call) => !call.startsWith("redis")), []);
      assert.deepEqual(lines(out.stderr), [
        "error: redis-server 6.0.16 is too old (need 7.0 or newer); install Redis 7 from " +
        "https://redis.io/downloads (macOS: brew install redis)",
      ]);
    } finally {
      await fake.remove();
    }
  },
});

for (const script of ["script/demo", "script/test"]) {
  Deno.test({
    name: `${script}: runs bootstrap first; its one-line hint stops it before the deno task`,
    ignore: !isPosix || !bash || !allOnPath(["openssl"]),
    async fn() {
      const fake = await fakePath(["openssl"]);
      try {
        const out = await run(`${ROOT}${script}`, [], fake.path);
        assert.equal(out.code, 1);
        assert.equal(lines(out.stderr).length, 1, out.stderr);
        assert.match(out.stderr, /^error: redis-server, .*apt-get install -y redis-server/);
        assert.doesNotMatch(out.stderr, /Task /);
      } finally {
        await fake.remove();
      }
    },
  });
}

for (const task of ["demo", "test"]) {
  Deno.test({
    name: `deno task ${task}: without redis-server on PATH, one line naming script/bootstrap`,
    ignore: !isPosix || !bash,
    async fn() {
      const fake = await fakePath([]);
      try {
        // `--filter` keeps a broken preflight from running the whole suite inside this test.
        const args = task === "test" ? ["task", "test", "--filter", "^no test matches this$"] : [
          "task",
          "demo",
        ];
        const out = await run(Deno.execPath(), args, fake.path);
        assert.equal(out.code, 1);
        assert.equal(out.stdout, "");
        const errors = lines(out.stderr).filter((line) => !line.startsWith("Task "));
        const missing = task === "test"
          ? ["redis-server", "redis-cli", "redis-benchmark", "openssl"]
          : ["redis-server"];
        assert.deepEqual(errors, [preflightHint(missing)]);
        assert.match(errors[0]!, /^error: redis-server.* not found on PATH; run script\/bootstrap/);
      } finally {
        await fake.remove();
      }
    },
  });
}

Deno.test("preflight: findOnPath finds executables only, in PATH order", async () => {
  const dir = await Deno.makeTempDir({ prefix: "backfill-path-" });
  try {
    await Deno.mkdir(`${dir}/a`);
    await Deno.mkdir(`${dir}/b`);
    await Deno.writeTextFile(`${dir}/a/tool`, "", { mode: 0o644 }); // not executable
    await Deno.writeTextFile(`${dir}/b/tool`, "", { mode: 0o755 });
    assert.equal(findOnPath("tool", `${dir}/a:${dir}/b`), `${dir}/b/tool`);
    assert.equal(findOnPath("tool", `${dir}/a`), isPosix ? undefined : `${dir}/a/tool`);
    assert.equal(findOnPath("tool", ""), undefined);
    assert.equal(preflightHint([]), "");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
