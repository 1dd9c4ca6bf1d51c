# Build with the same command as CI, run as a non-root user on a minimal base.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/egressd /usr/local/bin/egressd
COPY config/egressd.yaml /etc/egressd/egressd.yaml
USER 65532:65532
EXPOSE 3128
ENTRYPOINT ["/usr/local/bin/egressd"]
CMD ["run", "--config", "/etc/egressd/egressd.yaml"]
