//! The workload a `ComputeJob` runs, copied into each `Placement` and turned into pods by the agent.
//!
//! This is deliberately a small, safe subset of a pod template (containers with image, command,
//! environment and CPU/memory), not a full `PodTemplateSpec`: the pods run on clusters owned by
//! other people, so volumes, host access, privileges, service accounts and node selection are not
//! the tenant's to choose. The agent adds GPUs, the node selector for the model, a restricted
//! security context and a deadline. See `docs/adr/0003-restricted-workload-template.md`.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Pattern of a DNS label (RFC 1123), used for container names, regions and cluster names.
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// Pattern of an environment variable name.
pub const ENV_NAME_PATTERN: &str = r"^[A-Za-z_][A-Za-z0-9_]*$";
/// Pattern of a Kubernetes resource quantity (CPU or memory), e.g. `500m`, `4`, `16Gi`.
pub const QUANTITY_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$";

/// What each replica of the job runs: one or more containers. GPUs are attached to the first container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadTemplate {
    /// Containers of each replica's pod. The first one gets the replica's GPUs. Names must be unique.
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub containers: Vec<Container>,
    /// Size of `/dev/shm`, shared by the replica's containers: memory-backed, so it counts against
    /// the pod's memory. PyTorch data loaders and NCCL want several GiB. Unset: the container
    /// runtime's default (64 MiB). Between 1Mi and 1Ti.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(QUANTITY_PATTERN))]
    #[x_kube(validation = kube::core::Rule::new("quantity(self).compareTo(quantity('1Mi')) >= 0 && quantity(self).compareTo(quantity('1Ti')) <= 0").message("shmSize must be between 1Mi and 1Ti, e.g. 8Gi"))]
    pub shm_size: Option<String>,
    /// Size limit of `/tmp`, each replica's writable scratch space (the root filesystem is
    /// read-only); the member evicts a replica that writes more. Unset: no limit beyond the node's
    /// disk. Between 1Mi and 64Ti.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(QUANTITY_PATTERN))]
    #[x_kube(validation = kube::core::Rule::new("quantity(self).compareTo(quantity('1Mi')) >= 0 && quantity(self).compareTo(quantity('64Ti')) <= 0").message("scratchSize must be between 1Mi and 64Ti, e.g. 100Gi"))]
    pub scratch_size: Option<String>,
}

/// One container of a replica's pod.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// Container name, a DNS label such as `trainer`.
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub name: String,
    /// Container image reference, e.g. `ghcr.io/acme/train:1.4` (pin by digest for reproducible runs).
    #[schemars(length(min = 1, max = 512), pattern(r"^\S+$"))]
    pub image: String,
    /// Entrypoint array; the image's ENTRYPOINT when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 4096)))]
    pub command: Vec<String>,
    /// Arguments to the entrypoint; the image's CMD when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 4096)))]
    pub args: Vec<String>,
    /// Environment variables as plain name/value pairs (no references to the member's Secrets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub env: Vec<EnvVar>,
    /// Working directory inside the container; the image's WORKDIR when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub working_dir: Option<String>,
    /// CPU and memory for this container (requests equal limits). GPUs are set by `gpusPerReplica`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ContainerResources>,
}

/// A plain environment variable.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Variable name, e.g. `EPOCHS`.
    #[schemars(length(min = 1, max = 128), pattern(ENV_NAME_PATTERN))]
    pub name: String,
    /// Variable value.
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub value: String,
}

/// CPU and memory of a container, as Kubernetes quantities. Requests and limits are set to these values.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerResources {
    /// CPU, e.g. `8` or `500m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(QUANTITY_PATTERN))]
    pub cpu: Option<String>,
    /// Memory, e.g. `64Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(QUANTITY_PATTERN))]
    pub memory: Option<String>,
}
