//! Usage checked against telemetry (docs/contracts.md, "Usage checked against telemetry";
//! docs/adr/0033-usage-checked-against-telemetry.md): the pool's rule, what the hub asks a member
//! to record, what the member reports per attempt, and the hub's verdict.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::units::KubeDuration;

/// `GpuPool.spec.usageCheck`: pay each attempt only for the GPU-seconds its member's own
/// gpu-probe telemetry supports.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UsageCheck {
    /// A GPU below this utilisation (percent) is idle. 1 to 100; default 5.
    #[serde(default = "default_idle_below_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub idle_below_percent: u32,
    /// The longest stretch in which the attempt's GPUs all sit idle that is still paid in full
    /// (start-up, loading data, checkpointing); of a longer stretch only this much is paid.
    /// Between 0s and 24h; default 10m.
    #[serde(default = "default_idle_grace")]
    #[x_kube(validation = kube::core::Rule::new("duration(self) >= duration('0s') && duration(self) <= duration('24h')").message("spec.usageCheck.idleGrace must be between 0s and 24h"))]
    pub idle_grace: KubeDuration,
    /// How long one gpu-probe reading describes its GPUs when no newer one follows: a few of the
    /// probe's intervals (10 s by default). Between 10s and 10m; default 60s.
    #[serde(default = "default_max_sample_age")]
    #[x_kube(validation = kube::core::Rule::new("duration(self) >= duration('10s') && duration(self) <= duration('10m')").message("spec.usageCheck.maxSampleAge must be between 10s and 10m"))]
    pub max_sample_age: KubeDuration,
    /// Pay seconds for which the member reported no current reading (and none busy). Default
    /// false: a provider can stop its own probe, so silence is not paid.
    #[serde(default)]
    pub pay_unobserved: bool,
}

fn default_idle_below_percent() -> u32 {
    5
}

fn default_idle_grace() -> KubeDuration {
    KubeDuration::from_secs(600)
}

fn default_max_sample_age() -> KubeDuration {
    KubeDuration::from_secs(60)
}

impl Default for UsageCheck {
    fn default() -> Self {
        UsageCheck {
            idle_below_percent: default_idle_below_percent(),
            idle_grace: default_idle_grace(),
            max_sample_age: default_max_sample_age(),
            pay_unobserved: false,
        }
    }
}

impl UsageCheck {
    /// What the hub asks the member to record with (`Placement.spec.usageRecording`).
    pub fn recording(&self) -> UsageRecording {
        UsageRecording {
            idle_below_percent: self.idle_below_percent,
            idle_grace_seconds: self.idle_grace.as_secs_ceil(),
            max_sample_age_seconds: self.max_sample_age.as_secs_ceil(),
        }
    }
}

/// `Placement.spec.usageRecording`: the member records its gpu-probe's readings of the nodes the
/// attempt's pods run on as busy and idle spans (`status.telemetry`) with these parameters of
/// the pool's `usageCheck`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UsageRecording {
    /// A reading whose busiest GPU is below this utilisation (percent) is idle.
    #[schemars(range(min = 1, max = 100))]
    pub idle_below_percent: u32,
    /// An idle span at most this long between busy ones is recorded as busy (it is paid either
    /// way), so a job that pauses often still fits its spans.
    #[schemars(range(max = 86400))]
    pub idle_grace_seconds: u64,
    /// How long one reading describes its node when no newer one follows.
    #[schemars(range(min = 1, max = 600))]
    pub max_sample_age_seconds: u64,
}

/// Most nodes one attempt's telemetry lists.
pub const MAX_TELEMETRY_NODES: usize = 64;
/// Most spans recorded per node: readings that would open a span beyond it are not recorded
/// (that time reads as unobserved).
pub const MAX_SPANS_PER_NODE: usize = 256;

/// `Placement.status.telemetry`: the member's gpu-probe readings of the nodes the attempt's pods
/// ran on, as spans.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UsageTelemetry {
    /// One entry per node an attempt's pod ran on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub nodes: Vec<NodeTelemetry>,
}

/// The readings of one node over an attempt.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeTelemetry {
    /// Node name on the member.
    #[schemars(length(min = 1, max = 253))]
    pub node: String,
    /// UUIDs of the node's GPUs as gpu-probe reports them (the agent cannot see which of them
    /// the device plugin gave each pod: a reading counts the node's busiest GPU).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub gpu_uuids: Vec<String>,
    /// Unix seconds of the newest reading recorded.
    #[serde(default)]
    pub last_reading: i64,
    /// Busy and idle spans in time order; time outside every span had no current reading.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub spans: Vec<TelemetrySpan>,
}

/// A stretch of time in which a node's readings were all busy or all idle.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TelemetrySpan {
    /// Unix seconds, inclusive.
    pub from: i64,
    /// Unix seconds, exclusive.
    pub to: i64,
    /// Whether the node's busiest GPU was at or above `idleBelowPercent`.
    pub busy: bool,
}

/// `ComputeJob.status.attempts[].usageCheck`: the hub's verdict on an attempt's claimed
/// GPU-seconds against its telemetry; settlement pays `supportedGpuSeconds`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UsageCheckRecord {
    /// GPU-seconds the member claimed (after the hub's cap).
    pub claimed_gpu_seconds: u64,
    /// GPU-seconds its telemetry supports: what is paid.
    pub supported_gpu_seconds: u64,
    /// `claimed − supported`: flagged, not paid.
    pub unsupported_gpu_seconds: u64,
    /// Seconds in which every node sat idle beyond the pool's `idleGrace`.
    #[serde(default)]
    pub idle_seconds: u64,
    /// Seconds without a current reading of some node (and none busy).
    #[serde(default)]
    pub unobserved_seconds: u64,
}
