//! gpu-probe: per-node GPU telemetry for gpufed member clusters.
//!
//! Each member cluster runs the probe to tell the agent (and so the hub's scheduler) what GPUs its
//! nodes have and how they are doing. The probe reads GPUs through a [`GpuBackend`] — NVML on real
//! GPU nodes (one probe per node, as a DaemonSet) or the simulator for kwok fake nodes (one probe
//! for all of them) — and every tick:
//!
//! 1. builds the `GpuNode` status and Node labels from the readings ([`status`], pure);
//! 2. server-side applies them ([`writer`]), each node on its own backoff ([`backoff`]);
//! 3. exports DCGM-style Prometheus metrics ([`metrics`], served by [`server`]).
//!
//! [`run`] is the entry point for the binary and for the e2e harness, which can run it in-process.

pub mod backend;
pub mod backoff;
pub mod challenge;
pub mod config;
pub mod error;
pub mod metrics;
pub mod model;
pub mod nodes;
pub mod print;
pub mod probe;
pub mod reading;
pub mod server;
pub mod sim;
pub mod status;
pub mod writer;

pub use backend::GpuBackend;
pub use backend::nvml::NvmlBackend;
pub use config::{ProbeConfig, SimOptions, Target};
pub use error::{ProbeError, error_chain};
pub use model::normalize_model;
pub use nodes::SimOverrides;
pub use probe::{run, run_with_state};
pub use reading::{GpuReading, Health, NodeReading};
pub use server::ProbeState;
pub use sim::{SimBackend, SimGpu, SimProfile};
