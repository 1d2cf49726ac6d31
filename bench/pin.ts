/**
 * CPU pinning. On this 2-core VM a round trip between two processes on the same core takes ~20 us
 * and one between cores ~55-90 us, and the scheduler moves processes between the two at will, so
 * an unpinned naive loop swung 2x between runs. The bench therefore pins redis-server to core 0 and
 * itself (and so every client it spawns: the CLI inherits the affinity) to core 1: Redis gets a core
 * of its own, as it would on its own host, and every client talks to it across cores.
 *
 * @module
 */

/** Core for redis-server (and the concurrent-latency client, which models another host). */
export const REDIS_CPU = 0;
/** Core for the bench itself and every CLI run. */
export const CLIENT_CPU = 1;

/** True when pinning is possible here (`taskset` installed, at least 2 cores). */
export async function canPin(): Promise<boolean> {
  if (navigator.hardwareConcurrency < 2) return false;
  try {
    const { success } = await new Deno.Command("taskset", { args: ["-V"], stdout: "null" })
      .output();
    return success;
  } catch {
    return false;
  }
}

/** Pins every thread of process `pid` to core `cpu`. */
export async function pinProcess(pid: number, cpu: number): Promise<void> {
  const { success, stderr } = await new Deno.Command("taskset", {
    args: ["-a", "-p", "-c", String(cpu), String(pid)],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!success) {
    throw new Error(`taskset -p ${cpu} ${pid} failed: ${new TextDecoder().decode(stderr)}`);
  }
}
