/**
 * deploy/k8s/backfill-job.yaml as far as a machine without Kubernetes can check it: yamllint, the
 * Job schema of the Kubernetes API (kubernetes-models' generated validators), the CLI accepting
 * every runner's arguments, and the operational settings docs/operations.md promises.
 */
import assert from "node:assert/strict";
import { Job } from "kubernetes-models/batch/v1";
import { parse } from "yaml";
import { parseCommand } from "../src/cli/args.ts";
import { toolsAvailable } from "./support/prometheus.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const MANIFEST = `${ROOT}deploy/k8s/backfill-job.yaml`;

/** The manifest as plain data, parsed with a YAML 1.2 parser. */
function manifest(): Record<string, unknown> {
  return parse(Deno.readTextFileSync(MANIFEST));
}

/** A Job model of `data` (its validate() checks it against the API schema). */
function jobOf(data: unknown): Job {
  return new Job(data as ConstructorParameters<typeof Job>[0]);
}

Deno.test({
  name: "k8s manifest: yamllint-clean",
  ignore: !toolsAvailable("yamllint"),
  async fn() {
    const lint = await new Deno.Command("yamllint", {
      args: ["-s", "-c", ".yamllint.yml", MANIFEST],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(lint.code, 0, new TextDecoder().decode(lint.stdout));
  },
});

Deno.test("k8s manifest: a valid batch/v1 Job by the API schema; a broken one is refused", () => {
  const job = jobOf(manifest());
  job.validate();
  const broken = manifest() as { spec: Record<string, unknown> };
  broken.spec.completions = "three";
  assert.throws(() => jobOf(broken).validate());
  const noName = manifest() as {
    spec: { template: { spec: { containers: Record<string, unknown>[] } } };
  };
  delete noName.spec.template.spec.containers[0]!.name;
  assert.throws(() => jobOf(noName).validate());
});

Deno.test("k8s manifest: an Indexed Job of N runners, each a valid --shard I/N command line", () => {
  const job = jobOf(manifest());
  const spec = job.spec!;
  const pod = spec.template.spec!;
  const container = pod.containers[0]!;
  assert.equal(spec.completionMode, "Indexed");
  const args = container.args!;
  const shard = args[args.indexOf("--shard") + 1]!;
  const n = Number(/^\$\(JOB_COMPLETION_INDEX\)\/(\d+)$/.exec(shard)?.[1]);
  assert.ok(n >= 1, `--shard takes the completion index: ${shard}`);
  assert.equal(spec.completions, n);
  assert.equal(spec.parallelism, n);
  const env = new Map(container.env!.map((e) => [e.name, e]));
  assert.equal(
    env.get("JOB_COMPLETION_INDEX")?.valueFrom?.fieldRef?.fieldPath,
    "metadata.annotations['batch.kubernetes.io/job-completion-index']",
  );
  assert.ok(env.get("REDIS_URL")?.valueFrom?.secretKeyRef?.key, "REDIS_URL from a Secret");
  assert.equal(env.get("REDIS_URL")?.value, undefined, "no URL (password) in the manifest");
  // What Kubernetes runs for each index parses as this runner's shard (no unknown flag, no typo).
  for (let i = 0; i < n; i++) {
    const argv = args.map((a) => a.replace("$(JOB_COMPLETION_INDEX)", String(i)));
    const command = parseCommand(argv, { REDIS_URL: "redis://10.0.0.1:6379" });
    assert.ok(command.kind === "run");
    assert.deepEqual(command.options.shard, { index: i, count: n });
    assert.equal(command.options.mode, "execute");
    const port = command.options.metricsPort;
    assert.equal(job.spec!.template.metadata!.annotations!["prometheus.io/port"], String(port));
    assert.equal(container.ports![0]!.containerPort, port);
  }
  assert.equal(job.spec!.template.metadata!.annotations!["prometheus.io/scrape"], "true");
});

Deno.test("k8s manifest: restarts resume, SIGTERM has time, least privilege, sized from the RSS", () => {
  const job = jobOf(manifest());
  const spec = job.spec!;
  const pod = spec.template.spec!;
  const container = pod.containers[0]!;
  assert.equal(container.image, "backfill");
  // A replacement pod waits out the dead runner's 30 s locks within --wait-lock's 45 s.
  assert.equal(pod.restartPolicy, "Never");
  assert.ok((spec.backoffLimit ?? 0) >= 1);
  // An operator's stop (exit 5) and a usage error (exit 2) end the Job: a replacement would
  // start over the stop, which never reaches a later run.
  const final = spec.podFailurePolicy!.rules.find((rule) => rule.action === "FailJob");
  assert.deepEqual(final?.onExitCodes, {
    containerName: "backfill",
    operator: "In",
    values: [2, 5],
  });
  const drain = spec.podFailurePolicy!.rules.find((rule) => rule.action === "Ignore");
  assert.equal(drain?.onPodConditions?.[0]?.type, "DisruptionTarget");
  assert.ok(!container.args!.includes("--wait-lock"), "the 45 s default wait is kept");
  // Longer than a push's 10 s timeout plus a batch.
  assert.ok((pod.terminationGracePeriodSeconds ?? 30) >= 30);
  assert.equal(pod.securityContext?.runAsNonRoot, true);
  assert.equal(container.securityContext?.readOnlyRootFilesystem, true);
  assert.equal(container.securityContext?.allowPrivilegeEscalation, false);
  assert.deepEqual(container.securityContext?.capabilities?.drop, ["ALL"]);
  // The benchmark's peak RSS is 106–113 MB: the request covers it, the limit leaves room.
  const mib = (q: unknown) => Number(/^(\d+)Mi$/.exec(String(q))?.[1]);
  assert.ok(mib(container.resources?.requests?.memory) * 1.048576 >= 113);
  assert.ok(
    mib(container.resources?.limits?.memory) >= 2 * mib(container.resources?.requests?.memory),
  );
});
