# syntax=docker/dockerfile:1
# gpu-probe: GPU telemetry for member clusters (NVML on GPU nodes, a simulator for kwok nodes).
# Build from the repository root:
#   docker build -f deploy/docker/gpu-probe.Dockerfile -t ghcr.io/gpufed/gpu-probe:0.1.0 .
# NVML is loaded at run time (dlopen of libnvidia-ml.so.1), which the NVIDIA container runtime
# mounts into the container; the image itself carries no driver. The runtime is distroless `cc`
# (glibc, so dlopen works) and runs as the `nonroot` user.

FROM docker.io/library/rust:1.95.0-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gpu-probe --bin gpu-probe \
    && install -D -m 0755 target/release/gpu-probe /out/gpu-probe

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=builder /out/gpu-probe /usr/local/bin/gpu-probe
USER 65532:65532
EXPOSE 9400
ENTRYPOINT ["/usr/local/bin/gpu-probe"]
