//! The workload a `ComputeJob` runs, copied into each `Placement` and turned into pods by the agent.
//!
//! This is deliberately a small, safe subset of a pod template (containers with image, command,
//! environment and CPU/memory), not a full `PodTemplateSpec`: the pods run on clusters owned by
//! other people, so volumes, host access, privileges, service accounts and node selection are not
//! the tenant's to choose. Secrets come only from the tenant's own namespace on the hub, sealed by
//! the hub to the one member that runs the attempt (`docs/adr/0020-sealed-secrets.md`). The agent adds GPUs, the node selector for the model, a restricted
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
    /// Files from Secrets of the job's namespace on the hub, mounted read-only into every
    /// container. The hub seals them to the member that runs the attempt; the member gets them
    /// for that attempt only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub secret_files: Vec<SecretFiles>,
    /// Secrets of the job's namespace on the hub (type `kubernetes.io/dockerconfigjson`) used to
    /// pull the images from private registries; sealed like other secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub image_pull_secrets: Vec<SecretReference>,
    /// Objects fetched from S3-compatible storage into each replica before its containers start
    /// (size and sha256 checked when given), mounted read-only (docs/adr/0029-job-data-on-s3.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    #[x_kube(validation = kube::core::Rule::new("self.all(i, self.filter(j, j.mountPath == i.mountPath).size() == 1)").message("inputs[].mountPath must be unique: give each input its own directory"))]
    pub inputs: Vec<crate::data::DataInput>,
    /// Directories of each replica uploaded to S3-compatible storage once its containers have
    /// exited; what was stored is listed in `status.outputs`, and a failed upload fails the
    /// attempt (docs/adr/0029-job-data-on-s3.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    #[x_kube(validation = kube::core::Rule::new("self.all(o, self.filter(p, p.path == o.path).size() == 1)").message("outputs[].path must be unique: give each output its own directory"))]
    pub outputs: Vec<crate::data::DataOutput>,
}

impl WorkloadTemplate {
    /// Names of the hub Secrets the template refers to, each once, sorted.
    pub fn secret_names(&self) -> std::collections::BTreeSet<&str> {
        let mut out = std::collections::BTreeSet::new();
        for c in &self.containers {
            for e in &c.env {
                if let Some(r) = e.value_from.as_ref().map(|v| &v.secret_key_ref) {
                    out.insert(r.name.as_str());
                }
            }
            for e in &c.env_from {
                out.insert(e.secret_ref.name.as_str());
            }
        }
        out.extend(self.secret_files.iter().map(|f| f.secret_name.as_str()));
        out.extend(self.image_pull_secrets.iter().map(|r| r.name.as_str()));
        out.extend(
            self.inputs
                .iter()
                .filter_map(|i| i.credentials_secret.as_deref()),
        );
        out.extend(
            self.outputs
                .iter()
                .filter_map(|o| o.credentials_secret.as_deref()),
        );
        out
    }

    /// Whether the template refers to any hub Secret.
    pub fn uses_secrets(&self) -> bool {
        !self.secret_names().is_empty()
    }
}

/// Pattern of a Secret name (a DNS subdomain, at most 253 characters).
pub const SECRET_NAME_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// Pattern of a key in a Secret's data.
pub const SECRET_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";

/// A Secret in the job's namespace on the hub.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret, e.g. `registry-creds`.
    #[schemars(length(min = 1, max = 253), pattern(SECRET_NAME_PATTERN))]
    pub name: String,
}

/// One key of a Secret in the job's namespace on the hub.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Name of the Secret, e.g. `hf-token`.
    #[schemars(length(min = 1, max = 253), pattern(SECRET_NAME_PATTERN))]
    pub name: String,
    /// Key in the Secret's data, e.g. `token`.
    #[schemars(length(min = 1, max = 253), pattern(SECRET_KEY_PATTERN))]
    pub key: String,
}

/// Where an environment variable's value comes from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    /// A key of a Secret in the job's namespace on the hub, sealed to the member of the attempt.
    pub secret_key_ref: SecretKeySelector,
}

/// Every key of a Secret as environment variables.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvFromSource {
    /// The Secret in the job's namespace on the hub; keys that are not valid variable names are
    /// skipped by the kubelet.
    pub secret_ref: SecretReference,
    /// Prefix put before each key, e.g. `AWS_`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), pattern(ENV_NAME_PATTERN))]
    pub prefix: Option<String>,
}

/// Files from one Secret of the job's namespace on the hub, mounted read-only.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.items.all(i, self.items.filter(j, j.path == i.path).size() == 1)").message("secretFiles[].items[].path must be unique within one entry"))]
pub struct SecretFiles {
    /// Name of this set of files (a DNS label, unique in the template), e.g. `gcs-key`.
    #[schemars(length(min = 1, max = 40), pattern(DNS_LABEL_PATTERN))]
    pub name: String,
    /// Name of the Secret in the job's namespace on the hub.
    #[schemars(length(min = 1, max = 253), pattern(SECRET_NAME_PATTERN))]
    pub secret_name: String,
    /// Absolute directory the files appear in, e.g. `/var/run/secrets/gcs`. Not `/`, not under
    /// `/tmp`, `/dev`, `/proc` or `/sys`, no `..`, and not inside another entry's directory.
    #[schemars(
        length(min = 2, max = 256),
        pattern(r"^/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$")
    )]
    #[x_kube(validation = kube::core::Rule::new("!self.contains('/../') && !self.endsWith('/..') && !self.contains('//') && !['/tmp', '/dev', '/proc', '/sys'].exists(p, self == p || self.startsWith(p + '/'))").message("secretFiles[].mountPath must be an absolute directory such as /var/run/secrets/app: not /, not under /tmp, /dev, /proc or /sys, without .. or //"))]
    pub mount_path: String,
    /// Which keys become which files (relative paths). Empty: every key, as a file named after it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub items: Vec<SecretFileItem>,
    /// Permission bits of the files, 0 to 0777 (decimal 0 to 511); the kubelet's default 0644
    /// when unset. The workload runs as user 65534, which owns nothing: keep them readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 511))]
    pub default_mode: Option<i32>,
}

/// One key of a Secret as one file.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretFileItem {
    /// Key in the Secret's data.
    #[schemars(length(min = 1, max = 253), pattern(SECRET_KEY_PATTERN))]
    pub key: String,
    /// Relative file path under `mountPath`, e.g. `key.json`; no `..`, no leading `/`.
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
    )]
    #[x_kube(validation = kube::core::Rule::new("!self.split('/').exists(s, s == '..' || s == '.')").message("secretFiles[].items[].path must be a relative path without . or .. segments, e.g. key.json"))]
    pub path: String,
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
    /// Environment variables: plain values, or keys of Secrets in the job's namespace on the hub
    /// (never the member's Secrets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub env: Vec<EnvVar>,
    /// Every key of Secrets in the job's namespace on the hub, as environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub env_from: Vec<EnvFromSource>,
    /// Working directory inside the container; the image's WORKDIR when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub working_dir: Option<String>,
    /// CPU and memory for this container (requests equal limits). GPUs are set by `gpusPerReplica`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ContainerResources>,
}

/// An environment variable: a plain value, or a key of a Secret of the job's namespace on the hub.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.valueFrom) || !has(self.value) || self.value == ''").message("env[].value and env[].valueFrom exclude each other: keep one"))]
pub struct EnvVar {
    /// Variable name, e.g. `EPOCHS`.
    #[schemars(length(min = 1, max = 128), pattern(ENV_NAME_PATTERN))]
    pub name: String,
    /// Variable value.
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub value: String,
    /// Where the value comes from instead: `secretKeyRef` to a Secret in the job's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
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
