/**
 * Help texts, next to nothing else so they are easy to keep true.
 *
 * @module
 */

/** `backfill --help`. */
export const RUN_HELP =
  `backfill — copy jobs from ai:jobs:<job_id> to ai:job:<workspace_id>:<job_id>, live

Usage:
  backfill (--dry-run | --execute) [options]
  backfill verify [--sample N] [--min-parity PCT] [options]     (backfill verify --help)
  backfill pause | resume | set-rps N | stop | status [--json]  (backfill status --help)
  backfill --help | --version

Mode (exactly one):
  --dry-run                 classify every old key and count; write nothing at all
  --execute                 copy what only exists in the old schema (old keys are never touched)

Scope and pace:
  --rps N                   at most N jobs in any 1-second window; 0 = unlimited   [100]
  --batch N                 largest SCAN COUNT (sized to --max-call-ms) (>= 1)      [500]
  --max-keys N              process at most N old keys in this run
  --workspace W             migrate only jobs of workspace W (others: filtered)
  --workspace-pattern RE    what counts as a valid workspace id
                            [^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$]
  --shard I/N               cluster: take only masters I, I+N, I+2N, … (in slot order) of N
                            runners; each holds its own per-master locks and checkpoints

Checkpoints:
  --progress-key P          prefix of the checkpoint and lock keys                  [ai:backfill]
  --cursor C                start from this SCAN cursor instead of the stored one
  --reset-progress          clear the stored checkpoint and start from cursor 0

Connection:
  --redis-url URL           redis://, rediss:// (TLS), redis+sentinel://host:port[,host:port]/master;
                            a cluster is detected by itself; repeat or comma-separate cluster seeds
                                                             [$REDIS_URL, else redis://127.0.0.1:6379]
  --tls-ca FILE             CA bundle for rediss:// (the TLS flags apply to every node)
  --tls-cert FILE           client certificate (with --tls-key)
  --tls-key FILE            client private key
  --tls-servername NAME     TLS SNI name                                            [URL host]
  --max-outage S            wait up to S seconds for a lost Redis, then exit 3      [60]

Throttle (the run adapts its rate under --rps to the store's health):
  --max-latency MS          cut the rate when a probe's p99 round trip rises more than MS
                            above its pre-run baseline; 0 = off                     [0.5]
  --max-replica-lag L       pause while a replica is more than L behind: bytes (512k, 16M,
                            1G) or seconds (10s); 0 = off                           [16M]
  --max-call-ms MS          size each script call to hold Redis at most MS (> 0)    [0.25]
  --call-clock C            time calls by the script's clock where the server lets
                            time pass in a script, else on the client (auto); or
                            always on the client (client)                           [auto]

Safety:
  --max-memory-pct P        refuse / pause when Redis memory would pass P% of maxmemory   [90]
  --wait-lock S             wait up to S seconds for another run's lock to expire
                            (a crashed run's lock lasts 30 s); then exit 4          [45]

Output and telemetry:
  --json                    print the summary as one JSON object on stdout
  --quiet, -q               summary only (no progress, no info logs)
  --log-format F            text | json (one object per line on stderr)             [text]
  --progress-interval S     seconds between progress lines when stderr is not a TTY [10]
  --metrics-port N          serve Prometheus /metrics and /healthz on port N
  --metrics-host H          address the metrics server binds  [0.0.0.0]
  --metrics-linger S        keep /metrics up S seconds after the end for a last scrape  [15]
  --metrics-workspace-label B   true | false: false collapses workspace_id to "_all"  [true]
  --pushgateway URL         push the metrics to a Prometheus Pushgateway (start, interval, end)
  --push-interval S         seconds between pushes while running; 0 = start and end only  [30]
  --health-timeout S        /healthz answers 503 when Redis has not answered for S seconds  [30]

Environment: REDIS_URL, TELEMETRY_ENABLED (false: no metrics server, no push).
Exit codes: 0 done · 1 per-key errors · 2 usage · 3 Redis unreachable · 4 refused by a safety
check · 5 stopped by backfill stop · 130 SIGINT · 143 SIGTERM.
`;

/** `backfill verify --help`. */
export const VERIFY_HELP =
  `backfill verify — read-only parity check between the old and the new schema

Usage:
  backfill verify [--sample N] [--min-parity PCT] [options]
  backfill verify --full [--orphans] [--report FILE] [--min-parity PCT] [options]

Options:
  --sample N                old keys to check, uniformly at random; N >= all checks each once [1000]
  --min-parity PCT          exit 1 when parity is below PCT percent                 [100]
  --ttl-tolerance S         TTLs may differ by up to S seconds                      [5]
  --recheck N               re-check a mismatch up to N times before counting it    [3]
  --recheck-delay MS        pause before each recheck, in milliseconds              [100]
  --full                    compare EVERY old key with its new key, inside Redis (exact; resumable)
  --orphans                 with --full: also scan every new key for orphans
  --report FILE             with --full: one NDJSON line per finding (ids and field names only)
  --progress-key P          with --full: checkpoint and lock under P:verify:*       [ai:backfill]
  --reset-progress          with --full: ignore a stored full-verify checkpoint
  --wait-lock S             with --full: wait up to S seconds for P:verify:lock, then exit 4 [45]
  --max-call-ms MS          with --full: size each script call to hold Redis at most MS (> 0) [0.25]
  --call-clock C            with --full: auto or client, as a run's --call-clock    [auto]
  --workspace W             only jobs of workspace W
  --workspace-pattern RE    what counts as a valid workspace id
  --rps N                   at most N keys checked per second; 0 = unlimited        [0]
  --redis-url URL, --tls-ca FILE, --tls-cert FILE, --tls-key FILE, --tls-servername NAME
  --json                    print the report as one JSON object on stdout
  --quiet, -q; --log-format text|json
  --metrics-port N, --metrics-host H, --metrics-linger S, --pushgateway URL, --push-interval S
                            relay_backfill_verify_* as for a run (push grouping mode=verify)

Writes nothing to Redis (--full writes only P:verify:lock and P:verify:state). Exit codes: 0 parity reached and no orphans · 1 below --min-parity or
orphans found · 2 usage · 3 Redis unreachable.
`;

/** `backfill status --help` (and the other control subcommands). */
export const CONTROL_HELP =
  `backfill pause | resume | set-rps N | stop | status — control a running backfill

Usage:
  backfill pause            the run stops admitting work within ~1 s (it keeps its lock)
  backfill resume           the run goes on
  backfill set-rps N        cap the run's rate at N jobs/s (0 = no cap) within ~1 s
  backfill stop             graceful stop, like SIGTERM: checkpoint, summary, exit
  backfill status [--json]  what the run publishes every second: mode, holder, rate and
                            throttle reason, counts, estimate and ETA, cursors, last update;
                            with --shard runners, one block per shard and a total line

Options:
  --progress-key P          the run's progress key                                 [ai:backfill]
  --redis-url URL, --tls-ca FILE, --tls-cert FILE, --tls-key FILE, --tls-servername NAME

The commands append to the stream <P>:control; every live runner of P (every --shard) obeys each
command once, in order. A command reaches only the runs alive when it is issued: a later run
ignores it, so its cap is --rps until a set-rps of its own (a run that replaces one that died
paused starts paused). status writes nothing, and says when no run is active or when the last
update is stale (the holder died).
Exit codes: 0 written / printed · 2 usage (nothing written) · 3 Redis unreachable.
`;
