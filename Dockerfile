# syntax=docker/dockerfile:1
# tiw-push-exporter: build with the Rust toolchain, run on distroless (no shell, no package manager).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked
# The store's directory, owned by the user the exporter runs as.
RUN mkdir -p /out/data

FROM gcr.io/distroless/cc-debian12
LABEL org.opencontainers.image.title="tiw-push-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Tencent Cloud Interactive Whiteboard (TIW) whiteboard-push tasks" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="README.md"
COPY --from=build /src/target/release/tiw-push-exporter /usr/local/bin/tiw-push-exporter
COPY --from=build --chown=65534:65534 /out/data /data
# nobody: the exporter needs no privilege.
USER 65534:65534
# Relative state.path (the default ./data) lands in the volume.
WORKDIR /
VOLUME /data
EXPOSE 9897
HEALTHCHECK --interval=30s --timeout=5s CMD ["/usr/local/bin/tiw-push-exporter", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/tiw-push-exporter"]
CMD ["--config.file=/etc/tiw-push-exporter/config.yaml", "serve"]
