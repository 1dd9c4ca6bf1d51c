# egressd container image: README "Container image".
# The build stage runs the same `cargo build --locked --release` as CI (.ci/run); the runtime stage is distroless
# (glibc, CA certificates, no shell) and runs as a non-root numeric UID, so it works under runAsNonRoot and a
# read-only root filesystem: egressd writes nothing but stdout.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --locked --release

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="egressd" \
      org.opencontainers.image.description="Egress allowlisting forward proxy" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /src/target/release/egressd /usr/local/bin/egressd
# A container config: listeners on all interfaces, the admin endpoints on, CAST AI US profile. Kubernetes mounts
# its ConfigMap over /etc/egressd instead.
COPY deploy/container/egressd.yaml /etc/egressd/egressd.yaml
USER 65532:65532
# proxy, TLS proxy (when listen_tls is set), admin (/metrics, /healthz, /readyz)
EXPOSE 3128 3129 9090
STOPSIGNAL SIGTERM
# checkov:skip=CKV_DOCKER_2: distroless has no shell or HTTP client for a HEALTHCHECK; Kubernetes probes GET /healthz and /readyz on the admin port
ENTRYPOINT ["/usr/local/bin/egressd"]
CMD ["run", "--config", "/etc/egressd/egressd.yaml"]
