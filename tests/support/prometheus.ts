/**
 * Real Prometheus and Pushgateway processes for the telemetry tests, each on a free loopback port
 * with its data under a temporary directory, stopped (and the directory removed) by `stop()`.
 *
 * Under `CI=true` a missing binary fails the test that needs it; locally such tests are skipped
 * with a message naming the Debian package to install.
 *
 * @module
 */
import { freePort } from "./redis_server.ts";

/** True when `name` is an executable on PATH. */
function onPath(name: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

/**
 * Whether tests needing `binaries` should run: yes when all are installed, and also under CI=true
 * (where the missing one then fails the test instead of skipping it).
 */
export function toolsAvailable(...binaries: string[]): boolean {
  const missing = binaries.filter((name) => !onPath(name));
  if (missing.length === 0 || Deno.env.get("CI") === "true") return true;
  Deno.stderr.writeSync(
    new TextEncoder().encode(
      `skipping: ${missing.join(", ")} not installed (Debian: apt-get install prometheus ` +
        `prometheus-pushgateway)\n`,
    ),
  );
  return false;
}

/** A process started by a test, with its output kept for failure messages. */
interface Owned {
  child: Deno.ChildProcess;
  output(): string;
  dir: string;
}

function spawn(binary: string, args: string[], dir: string): Owned {
  if (!onPath(binary)) throw new Error(`${binary} is not installed (required under CI=true)`);
  const child = new Deno.Command(binary, { args, stdin: "null", stdout: "piped", stderr: "piped" })
    .spawn();
  let output = "";
  const decoder = new TextDecoder();
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) output = (output + decoder.decode(chunk)).slice(-20_000);
  };
  void drain(child.stdout);
  void drain(child.stderr);
  return { child, output: () => output, dir };
}

async function stopOwned(owned: Owned): Promise<void> {
  try {
    owned.child.kill("SIGTERM");
  } catch {
    // already gone
  }
  await owned.child.status;
  await Deno.remove(owned.dir, { recursive: true }).catch(() => {});
}

async function waitReady(url: string, owned: Owned, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      const response = await fetch(url);
      await response.body?.cancel();
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stopOwned(owned);
      throw new Error(`${what} did not become ready:\n${owned.output()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** A running Pushgateway. */
export interface Pushgateway {
  url: string;
  port: number;
  /** Its own /metrics (pushed groups included). */
  scrape(): Promise<string>;
  stop(): Promise<void>;
}

/** Starts `prometheus-pushgateway` with a persistence file under a temporary directory. */
export async function startPushgateway(): Promise<Pushgateway> {
  const port = freePort();
  const dir = await Deno.makeTempDir({ prefix: "backfill-pgw-" });
  const owned = spawn("prometheus-pushgateway", [
    `--web.listen-address=127.0.0.1:${port}`,
    `--persistence.file=${dir}/pg.db`,
  ], dir);
  const url = `http://127.0.0.1:${port}`;
  await waitReady(`${url}/-/ready`, owned, "the Pushgateway");
  return {
    url,
    port,
    async scrape() {
      const response = await fetch(`${url}/metrics`);
      return await response.text();
    },
    stop: () => stopOwned(owned),
  };
}

/** A scrape job of the test Prometheus. */
export interface ScrapeJob {
  job: string;
  target: string;
  honorLabels?: boolean;
}

/** One sample of an instant query. */
export interface QuerySample {
  metric: Record<string, string>;
  value: number;
}

/** A running Prometheus. */
export interface Prometheus {
  url: string;
  /** Evaluates an instant query; throws with Prometheus's message when it is invalid. */
  query(expr: string): Promise<QuerySample[]>;
  /** The loaded alerting rules: name and expression. */
  alertRules(): Promise<{ name: string; query: string }[]>;
  /** Alerts currently pending or firing. */
  alerts(): Promise<{ name: string; state: string; labels: Record<string, string> }[]>;
  stop(): Promise<void>;
}

/** Starts `prometheus` scraping `jobs` every second, evaluating `ruleFiles` every second. */
export async function startPrometheus(
  options: { jobs: ScrapeJob[]; ruleFiles?: string[] },
): Promise<Prometheus> {
  const port = freePort();
  const dir = await Deno.makeTempDir({ prefix: "backfill-prom-" });
  const config = [
    "global:",
    "  scrape_interval: 1s",
    "  evaluation_interval: 1s",
    ...(options.ruleFiles?.length
      ? ["rule_files:", ...options.ruleFiles.map((f) => `  - ${JSON.stringify(f)}`)]
      : []),
    "scrape_configs:",
    ...options.jobs.flatMap((job) => [
      `  - job_name: ${JSON.stringify(job.job)}`,
      `    honor_labels: ${job.honorLabels === true}`,
      "    static_configs:",
      `      - targets: [${JSON.stringify(job.target)}]`,
    ]),
  ].join("\n");
  await Deno.writeTextFile(`${dir}/prometheus.yml`, config + "\n");
  const owned = spawn("prometheus", [
    `--config.file=${dir}/prometheus.yml`,
    `--storage.tsdb.path=${dir}/data`,
    `--web.listen-address=127.0.0.1:${port}`,
  ], dir);
  const url = `http://127.0.0.1:${port}`;
  await waitReady(`${url}/-/ready`, owned, "Prometheus");
  const api = async (path: string) => {
    const response = await fetch(`${url}${path}`);
    const body = await response.json();
    if (body.status !== "success") throw new Error(`${path}: ${body.error ?? response.status}`);
    return body.data;
  };
  return {
    url,
    async query(expr) {
      const data = await api(`/api/v1/query?query=${encodeURIComponent(expr)}`);
      if (data.resultType === "scalar") return [{ metric: {}, value: Number(data.result[1]) }];
      return (data.result as { metric: Record<string, string>; value: [number, string] }[])
        .map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
    },
    async alertRules() {
      const data = await api("/api/v1/rules?type=alert");
      return (data.groups as { rules: { name: string; query: string }[] }[])
        .flatMap((g) => g.rules.map((r) => ({ name: r.name, query: r.query })));
    },
    async alerts() {
      const data = await api("/api/v1/alerts");
      return (data.alerts as { labels: Record<string, string>; state: string }[])
        .map((a) => ({ name: a.labels.alertname ?? "", state: a.state, labels: a.labels }));
    },
    stop: () => stopOwned(owned),
  };
}
