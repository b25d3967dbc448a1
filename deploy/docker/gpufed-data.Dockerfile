# syntax=docker/dockerfile:1
# gpufed-data: fetches a job's inputs from and uploads its outputs to S3-compatible storage, run by
# the member's agent in the pods of jobs with `inputs` or `outputs` (docs/adr/0029-job-data-on-s3.md;
# member chart value `jobs.dataImage`). The agent runs `/usr/local/bin/gpufed-data` by that path.
# Build from the repository root:
#   docker build -f deploy/docker/gpufed-data.Dockerfile -t ghcr.io/gpufed/gpufed-data:0.1.0 .
# The runtime is distroless `cc` (glibc and CA certificates for https endpoints); the pod runs it as
# the workload's user (65534), whatever the image says.

FROM docker.io/library/rust:1.95.0-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gpufed-data --bin gpufed-data \
    && install -D -m 0755 target/release/gpufed-data /out/gpufed-data

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=builder /out/gpufed-data /usr/local/bin/gpufed-data
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/gpufed-data"]
