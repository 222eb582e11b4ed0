# syntax=docker/dockerfile:1.7
#
# agent-supervisor: a static-config sidecar image.
#
#   docker build -t agent-supervisor:dev .
#   docker run --rm -p 9464:9464 -e REDIS_URL=redis://host.docker.internal:6379 agent-supervisor:dev
#
# Builder: the official Rust image (the newest 1.x stable, new enough for
# every dependency). Dependencies are compiled in their own layer from the
# manifests only, so editing src/ rebuilds just this crate; the cargo
# registry is a BuildKit cache mount shared between builds.
ARG RUST_VERSION=1
FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /build

# 1. Dependencies: the manifests, the bench sources Cargo.toml names, and a
#    dummy lib/main.
COPY Cargo.toml Cargo.lock build.rs ./
COPY benches ./benches
RUN mkdir -p src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo fetch --locked \
 && cargo build --release --locked --bin agent-supervisor

# 2. The crate itself. touch: the dummy build is newer than the copied files.
COPY config.schema.json ./
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    touch src/lib.rs src/main.rs \
 && cargo build --release --locked --bin agent-supervisor \
 && install -D -m 0755 target/release/agent-supervisor /out/usr/local/bin/agent-supervisor \
 && install -d -m 0750 /out/var/lib/agent-supervisor

# Runtime: distroless (glibc, libgcc, CA certificates; no shell, no package
# manager), as the numeric non-root user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="agent-supervisor" \
      org.opencontainers.image.description="Sidecar that watches the logical agents inside a service and reports, promptly and truthfully, when one has silently stopped." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

COPY --from=builder /out/usr/local/bin/agent-supervisor /usr/local/bin/agent-supervisor
COPY --from=builder --chown=65532:65532 /out/var/lib/agent-supervisor /var/lib/agent-supervisor
COPY config.yaml /etc/agent-supervisor/config.yaml

# config.yaml reads these (and REDIS_URL, SUPABASE_DB_URL,
# AGENT_SUPERVISOR_PUSH_TOKEN) from the environment.
# The admin listener (pushes, silence writes) stays on the container's own
# loopback, 127.0.0.1:9465: a container sharing its network namespace (a
# Kubernetes pod, `docker run --network container:...`) reaches it; to
# publish it, set AGENT_SUPERVISOR_ADMIN_LISTEN=0.0.0.0:9465 together with
# AGENT_SUPERVISOR_PUSH_TOKEN and AGENT_SUPERVISOR_API_TOKEN (the config is
# rejected without them).
ENV AGENT_SUPERVISOR_CONFIG=/etc/agent-supervisor/config.yaml \
    AGENT_SUPERVISOR_STATE_DIR=/var/lib/agent-supervisor \
    AGENT_SUPERVISOR_LISTEN=0.0.0.0:9464

USER 65532:65532
EXPOSE 9464
# No HEALTHCHECK: the image has no shell or HTTP client; orchestrators probe
# GET /healthz (liveness) and GET /readyz (readiness) on port 9464.
ENTRYPOINT ["/usr/local/bin/agent-supervisor"]
CMD ["run", "--log-format", "json"]
