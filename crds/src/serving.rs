//! Serving jobs: a `ComputeJob` with `spec.serving` keeps its replicas running as HTTP servers, and
//! the member reports where they answer (`docs/adr/0030-serving-jobs.md`).
//!
//! [`ServingSpec`] is what the tenant asks for (copied unchanged into each attempt's Placement,
//! outside the template, which the agent forgets once it has acted on a Placement);
//! [`Endpoint`] is what the member reports on the Placement and the hub copies into the job.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::units::KubeDuration;

/// Lowest port a serving container may listen on: the workload runs as user 65534 without
/// capabilities, so it cannot bind below 1024.
pub const MIN_PORT: u32 = 1024;
/// Highest TCP port.
pub const MAX_PORT: u32 = 65535;
/// Most URLs an endpoint lists (one per replica).
pub const MAX_URLS: usize = 64;

/// How a serving job is reached: the port its first container listens on, and the path the member
/// probes to tell whether a replica is ready.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServingSpec {
    /// TCP port the first container serves HTTP on, 1024 to 65535 (the workload runs as an
    /// unprivileged user and cannot bind lower ports).
    #[x_kube(validation = kube::core::Rule::new("self >= 1024 && self <= 65535").message("spec.serving.port must be between 1024 and 65535: the workload runs as an unprivileged user and cannot bind lower ports"))]
    pub port: u32,
    /// HTTP path the member's kubelet GETs on `port` every 2 s; a replica is ready while it answers
    /// 2xx or 3xx. An absolute path without spaces, e.g. `/healthz`. Default `/`.
    #[serde(default = "default_readiness_path")]
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^/[!-~]*$')").message("spec.serving.readinessPath must be an absolute HTTP path without spaces, e.g. /healthz"))]
    pub readiness_path: String,
    /// In pools with a chain, how often the provider is paid while the job runs (a Kubernetes
    /// duration, 10s to 24h, default 1h): at the end of each period the hub pays the GPU-seconds
    /// used so far out of the attempt's lock, each period exactly once (`JobEscrow.settlePeriod`);
    /// the rest is settled when the attempt ends.
    #[serde(default = "default_settlement_period")]
    #[x_kube(validation = kube::core::Rule::new("duration(self) >= duration('10s') && duration(self) <= duration('24h')").message("spec.serving.settlementPeriod must be between 10s and 24h"))]
    pub settlement_period: KubeDuration,
}

fn default_readiness_path() -> String {
    "/".to_string()
}

fn default_settlement_period() -> KubeDuration {
    KubeDuration::from_secs(3600)
}

/// Where a serving attempt answers and whether it is ready, as the member reports it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Member cluster the endpoint is on (in the job's status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Attempt the endpoint belongs to (in the job's status); a new attempt has a new URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// URL of the first ready replica (by replica index), e.g. `http://10.244.3.7:8080`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// URLs of every ready replica, by replica index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub urls: Vec<String>,
    /// Replicas passing their readiness probe now.
    #[serde(default)]
    pub ready_replicas: u32,
    /// Whether every replica is ready.
    #[serde(default)]
    pub ready: bool,
}
