# syntax=docker/dockerfile:1
# The gpufed operator (`gpufed-operator hub` on the hub, `gpufed-operator agent` on members).
# Build from the repository root:
#   docker build -f deploy/docker/operator.Dockerfile -t ghcr.io/gpufed/gpufed-operator:0.1.0 .
# The builder's Rust matches rust-toolchain.toml; the runtime image has only the binary, glibc and
# CA certificates, and runs as the distroless `nonroot` user.

FROM docker.io/library/rust:1.95.0-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gpufed-operator --bin gpufed-operator \
    && install -D -m 0755 target/release/gpufed-operator /out/gpufed-operator

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=builder /out/gpufed-operator /usr/local/bin/gpufed-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/gpufed-operator"]
