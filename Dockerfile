# syntax=docker/dockerfile:1
# tiw-push-exporter: a static (musl) binary in an image FROM scratch, running as nobody.
#
# From source (needs Docker Hub for the Rust image):
#   docker build --build-arg REVISION=$(git rev-parse HEAD) --build-arg VERSION=0.1.0 -t tiw-push-exporter .
# From a binary already built (Prometheus' convention: build the binaries, then copy them in; this
# is how CI builds the image, with no registry at all):
#   scripts/release --binary-only     # .build/linux-amd64/tiw-push-exporter
#   buildah bud --build-arg BINARY=prebuilt --build-arg REVISION=... -t tiw-push-exporter .
ARG BINARY=source

FROM rust:1.95-bookworm AS source
ARG REVISION=""
RUN rustup target add x86_64-unknown-linux-musl \
 && apt-get update && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# .dockerignore drops .git: the revision comes in as a build argument (build.rs reads it).
RUN TIW_BUILD_REVISION="$(printf %.12s "$REVISION")" \
    cargo build --release --locked --target x86_64-unknown-linux-musl --bin tiw-push-exporter \
 && mkdir -p /out/data && cp target/x86_64-unknown-linux-musl/release/tiw-push-exporter /out/

# The layout scripts/release --binary-only writes: the binary and an empty data/ (a scratch image
# cannot mkdir, and the volume's directory must belong to nobody).
FROM scratch AS prebuilt
COPY .build/linux-amd64/ /out/

FROM ${BINARY} AS binary

FROM scratch
ARG VERSION=""
ARG REVISION=""
ARG CREATED=""
LABEL org.opencontainers.image.title="tiw-push-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Tencent Cloud Interactive Whiteboard (TIW) whiteboard-push tasks" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/tiw-push-exporter/tiw-push-exporter" \
      org.opencontainers.image.url="https://github.com/tiw-push-exporter/tiw-push-exporter" \
      org.opencontainers.image.documentation="https://github.com/tiw-push-exporter/tiw-push-exporter#readme" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
# The binary is static and brings its own TLS roots (webpki-roots): nothing else is needed.
COPY --from=binary /out/tiw-push-exporter /bin/tiw-push-exporter
# nobody: the exporter needs no privilege. /data is its volume (state.path) and, as TMPDIR, where
# `demo` keeps its scratch store: a scratch image has no /tmp.
COPY --from=binary --chown=65534:65534 /out/data /data
USER 65534:65534
ENV TMPDIR=/data \
    TIW_CONFIG_FILE=/etc/tiw-push-exporter/config.yaml \
    TIW_WEB_LISTEN_ADDRESS=:9897
# Relative state.path (the default ./data) lands in the volume.
WORKDIR /data
VOLUME /data
EXPOSE 9897
# healthcheck reads TIW_WEB_LISTEN_ADDRESS and TIW_WEB_CONFIG_FILE as serve does: set the address
# and the web config through them (not as flags) and the check follows; a TLS listener is found
# even without the web config.
HEALTHCHECK --interval=30s --timeout=5s CMD ["/bin/tiw-push-exporter", "healthcheck"]
ENTRYPOINT ["/bin/tiw-push-exporter"]
CMD ["serve"]
