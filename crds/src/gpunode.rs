//! `GpuNode`: per-node GPU telemetry written by gpu-probe on a member cluster (NVML on real GPUs,
//! the simulator on kwok nodes). The agent rolls these into its MemberCluster inventory.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Where a GpuNode's figures come from.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum ProbeBackend {
    /// NVIDIA Management Library on a real GPU node.
    #[default]
    Nvml,
    /// Simulated figures for a fake (kwok) node.
    Sim,
}

/// GPU telemetry of one node.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gpufed.io",
    version = "v1alpha1",
    kind = "GpuNode",
    plural = "gpunodes",
    shortname = "gn",
    category = "gpufed",
    status = "GpuNodeStatus",
    derive = "PartialEq",
    doc = "Per-node GPU telemetry (model, memory, utilisation, temperature, power, ECC errors, health), written by gpu-probe.",
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.nodeName"),
    printcolumn(name = "Model", type_ = "string", json_path = ".status.model"),
    printcolumn(name = "GPUs", type_ = "integer", json_path = ".status.gpuCount"),
    printcolumn(name = "Healthy", type_ = "integer", json_path = ".status.healthyGpus"),
    printcolumn(
        name = "Util%",
        type_ = "integer",
        json_path = ".status.utilizationPercent"
    ),
    printcolumn(
        name = "Backend",
        type_ = "string",
        json_path = ".spec.backend",
        priority = 1
    ),
    printcolumn(name = "Updated", type_ = "date", json_path = ".status.lastUpdateTime"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct GpuNodeSpec {
    /// The Node these GPUs belong to.
    #[schemars(length(min = 1, max = 253))]
    pub node_name: String,
    /// Source of the figures: `Nvml` or `Sim`.
    #[serde(default)]
    pub backend: ProbeBackend,
}

/// GPU telemetry of one node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GpuNodeStatus {
    /// Normalised model of the node's GPUs (of the first GPU if they differ), e.g. `H100`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Number of GPUs.
    #[serde(default)]
    pub gpu_count: u32,
    /// GPUs reported healthy.
    #[serde(default)]
    pub healthy_gpus: u32,
    /// Mean utilisation across the node's GPUs, percent.
    #[serde(default)]
    pub utilization_percent: u32,
    /// NVIDIA driver version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    /// CUDA driver API version, e.g. `12.4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_version: Option<String>,
    /// Each GPU.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["uuid".into()]))]
    pub gpus: Vec<GpuDevice>,
    /// When the probe last read the GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    /// Version of gpu-probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_version: Option<String>,
}

/// Telemetry of one GPU.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GpuDevice {
    /// Index on the node (as `nvidia-smi` numbers them).
    pub index: u32,
    /// GPU UUID, e.g. `GPU-5f1d…`.
    pub uuid: String,
    /// Product name as the driver reports it, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Normalised model, e.g. `H100`.
    pub model: String,
    /// Total memory in MiB.
    #[serde(rename = "memoryTotalMiB")]
    pub memory_total_mib: u64,
    /// Used memory in MiB.
    #[serde(default)]
    #[serde(rename = "memoryUsedMiB")]
    pub memory_used_mib: u64,
    /// Utilisation of the compute engines, percent.
    #[serde(default)]
    pub utilization_percent: u32,
    /// Core temperature, °C.
    #[serde(default)]
    pub temperature_celsius: u32,
    /// Power draw, milliwatts.
    #[serde(default)]
    pub power_milliwatts: u64,
    /// Power limit, milliwatts.
    #[serde(default)]
    pub power_limit_milliwatts: u64,
    /// Corrected ECC errors since boot (volatile count).
    #[serde(default)]
    pub ecc_corrected: u64,
    /// Uncorrected ECC errors since boot (volatile count).
    #[serde(default)]
    pub ecc_uncorrected: u64,
    /// Whether MIG mode is enabled.
    #[serde(default)]
    pub mig_enabled: bool,
    /// Whether the GPU is fit for work (no uncorrected ECC errors, not over its slowdown temperature,
    /// answering NVML).
    pub healthy: bool,
    /// Why it is unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_reason: Option<String>,
}
