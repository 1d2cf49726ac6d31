# backfill: a compiled, least-privilege binary in a distroless image.
#
#   docker build -t backfill .
#   docker run --rm backfill --dry-run --redis-url redis://redis.internal:6379
#
# Pinning: both base images are pinned by tag here. For reproducible production builds, pin them by
# digest as well (FROM image:tag@sha256:...; `docker buildx imagetools inspect <image:tag>` prints it).

ARG DENO_VERSION=2.9.6

# ---- build: resolve dependencies from the lockfile, then compile ----------------------------------
FROM denoland/deno:debian-${DENO_VERSION} AS build
WORKDIR /app

# Dependencies first, so this layer is reused until deno.json or deno.lock change.
# --frozen: fail instead of resolving anything the lockfile does not already pin.
COPY deno.json deno.lock ./
RUN deno install --frozen

# Only what the binary is built from (see .dockerignore).
COPY main.ts ./
COPY src/ ./src/

# `deno cache --frozen` fails if main.ts reaches anything the lockfile does not pin; then the
# `compile` task from deno.json builds ./backfill with the SAME permission set the tests run under
# (`deno compile -P=backfill ...`, never -A). The permissions are baked into the binary.
# `deno compile` downloads the matching `denort` runtime from dl.deno.land; for an offline build,
# provide it and point DENORT_BIN at it.
RUN deno cache --frozen main.ts && deno task compile

# ---- runtime: glibc + libgcc only, no shell, non-root ---------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=build /app/backfill /backfill

# nonroot = uid/gid 65532 in distroless; numeric so `runAsNonRoot` admission checks can verify it.
USER 65532:65532

# Prometheus /metrics when started with `--metrics-port 9464`.
EXPOSE 9464

# No init process (tini, --init) is needed: /backfill is PID 1, installs its own SIGINT/SIGTERM
# handlers (a signal with a handler is delivered to PID 1 normally), finishes the current batch,
# writes its checkpoint and exits 143 on SIGTERM (130 on SIGINT). It starts no child processes,
# so there are no zombies to reap. Give it time to stop: `docker stop -t 30`, compose
# `stop_grace_period`, Kubernetes `terminationGracePeriodSeconds`.
STOPSIGNAL SIGTERM

ENTRYPOINT ["/backfill"]
CMD ["--help"]
