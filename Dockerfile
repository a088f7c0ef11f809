# syntax=docker/dockerfile:1
#
# The metrics-bridge image: docker build -t ghcr.io/metrics-bridge/metrics-bridge:v0.1.0 .
# (the tag is set for the manifests in deploy/base/kustomization.yaml).
#
# Runtime base: distroless "cc" (glibc, libgcc, CA certificates, tzdata; no shell, no package
# manager), with a dynamically linked glibc binary. A static binary on scratch was the other
# choice, and was rejected: static means musl, whose allocator is several times slower than
# glibc's under the multi-threaded, allocation-heavy load of scraping thousands of kubelets
# and serving the API (CPU per node is a headline figure); and a static glibc binary cannot
# load NSS for name resolution. The builder and the runtime are both Debian 12 (glibc 2.36),
# so the binary never needs a newer glibc than the image has.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the build directory between builds; the binary is copied
# out within the same step because the target directory is not part of the image.
# Stripped: no symbols or debug info (the release profile's line tables are for profiling).
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --bin metrics-bridge \
 && install -D -m 0755 target/release/metrics-bridge /out/usr/local/bin/metrics-bridge
# The user the Deployment runs as (runAsUser/runAsGroup 1000) gets a name and a group; the
# other entries are distroless' own.
RUN install -d /out/etc \
 && printf '%s\n' \
      'root:x:0:0:root:/root:/sbin/nologin' \
      'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
      'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' \
      'metrics-bridge:x:1000:1000:metrics-bridge:/nonexistent:/sbin/nologin' \
      > /out/etc/passwd \
 && printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' 'metrics-bridge:x:1000:' \
      > /out/etc/group

FROM gcr.io/distroless/cc-debian12
LABEL org.opencontainers.image.title="metrics-bridge" \
      org.opencontainers.image.description="A drop-in replacement for Kubernetes metrics-server that is also the cluster's Prometheus target for resource metrics" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/etc/passwd /out/etc/group /etc/
COPY --from=builder /out/usr/local/bin/metrics-bridge /usr/local/bin/metrics-bridge
# Numeric, so that the kubelet can check runAsNonRoot against the image itself.
USER 1000:1000
ENTRYPOINT ["/usr/local/bin/metrics-bridge"]
