//! `--print`: read this machine's GPUs (or simulate a node) and print what would be written, as one
//! JSON document per line, without an apiserver. This is how the NVML path is checked by hand on
//! a GPU machine: `gpu-probe --backend nvml --print --once`.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;

use gpufed_crds::{GpuNodeStatus, ProbeBackend};
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use tokio::time::MissedTickBehavior;

use crate::backend::GpuBackend;
use crate::backend::nvml::NvmlBackend;
use crate::config::{ProbeConfig, Target};
use crate::error::ProbeError;
use crate::reading::GpuReading;
use crate::sim::{SimBackend, profile};
use crate::status::{build_status, node_labels};

/// What `--print` prints for one pass.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The node the figures are for.
    pub node_name: String,
    /// The backend that read them.
    pub backend: ProbeBackend,
    /// The Node labels the probe would apply.
    pub labels: BTreeMap<String, String>,
    /// The GpuNode status the probe would apply.
    pub status: GpuNodeStatus,
    /// The raw readings (with what the status leaves out: slowdown threshold, ECC support).
    pub readings: Vec<GpuReading>,
}

/// The backend for `--print`: NVML, or the simulator with `--sim-profile` (and `--sim-gpus`, else
/// the profile's default count), since there is no Node to read them from.
pub fn local_backend(config: &ProbeConfig) -> Result<Box<dyn GpuBackend>, ProbeError> {
    match config.backend {
        ProbeBackend::Nvml => Ok(Box::new(NvmlBackend::open(config.nvml_library.as_deref())?)),
        ProbeBackend::Sim => {
            let name = config.sim.overrides.profile.as_deref().ok_or_else(|| {
                ProbeError::Config("--print with --backend sim needs --sim-profile".into())
            })?;
            let p = profile(name)?;
            let gpus = config.sim.overrides.gpus.unwrap_or(p.default_gpus);
            Ok(Box::new(SimBackend::new(
                p,
                gpus,
                config.sim.seed,
                &node_name(config),
                config.sim.fail_rate,
            )))
        }
    }
}

fn node_name(config: &ProbeConfig) -> String {
    match &config.target {
        Target::Node(n) if !n.is_empty() => n.clone(),
        _ => "local".to_string(),
    }
}

/// One pass of `backend` as a [`Snapshot`].
pub fn snapshot(backend: &mut dyn GpuBackend, node_name: &str) -> Result<Snapshot, ProbeError> {
    let reading = backend.read_node()?;
    Ok(Snapshot {
        node_name: node_name.to_string(),
        backend: backend.kind(),
        labels: node_labels(&reading),
        status: build_status(&reading, Timestamp::now()),
        readings: reading.gpus,
    })
}

/// Print a snapshot as a JSON line every `config.interval` (once with `config.once`) until
/// `shutdown` completes.
pub async fn print_loop(
    config: &ProbeConfig,
    mut out: impl Write,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProbeError> {
    if matches!(config.target, Target::AllNodes { .. }) {
        return Err(ProbeError::Config(
            "--print reads one node; use --node-name, not --all-nodes".into(),
        ));
    }
    let mut backend = local_backend(config)?;
    let name = node_name(config);
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            _ = ticker.tick() => {}
        }
        let snap = snapshot(backend.as_mut(), &name)?;
        let line = serde_json::to_string(&snap).map_err(|source| ProbeError::Json {
            what: "snapshot",
            source,
        })?;
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(ProbeError::Output)?;
        if config.once {
            return Ok(());
        }
    }
}
