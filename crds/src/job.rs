//! `ComputeJob`: the workload a platform team submits on the hub, and (in status) where it went,
//! why it waits, what it used and what it cost.
//!
//! Everything that decides where and how a job runs is immutable after creation (CEL transition
//! rules): changing it in place would make running attempts and escrow locks disagree with the
//! spec. Only `priority` and `priorityClassName` may change, to reorder pending jobs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::member::MODEL_PATTERN;
use crate::placement::ContainerExit;
use crate::serving::{Endpoint, ServingSpec};
use crate::units::{EvmAddress, KubeDuration, TokenAmount};
use crate::workload::{DNS_LABEL_PATTERN, WorkloadTemplate};

/// Most replicas of one gang.
pub const MAX_REPLICAS: u32 = 64;
/// Most GPUs of one replica (all on one node).
pub const MAX_GPUS_PER_REPLICA: u32 = 16;
/// Most GPUs of one job.
pub const MAX_GPUS_PER_JOB: u32 = 512;
/// Most attempts of one job.
pub const MAX_ATTEMPTS: u32 = 10;

/// A GPU job placed by the hub onto the best-fitting member cluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gpufed.io",
    version = "v1alpha1",
    kind = "ComputeJob",
    plural = "computejobs",
    shortname = "cjob",
    shortname = "gjob",
    category = "gpufed",
    namespaced,
    status = "ComputeJobStatus",
    derive = "PartialEq",
    doc = "A GPU job submitted to the federation. The hub places it on one member cluster (all replicas together), runs it there, and pays the provider for the GPU-seconds it used.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".status.placement.cluster"
    ),
    printcolumn(name = "GPUs", type_ = "integer", json_path = ".status.gpus"),
    printcolumn(
        name = "Model",
        type_ = "string",
        json_path = ".status.placement.model"
    ),
    printcolumn(
        name = "Price",
        type_ = "string",
        json_path = ".status.placement.pricePerGpuHour"
    ),
    printcolumn(name = "Attempt", type_ = "integer", json_path = ".status.attempt"),
    printcolumn(
        name = "GPU-Seconds",
        type_ = "integer",
        json_path = ".status.usage.gpuSeconds",
        priority = 1
    ),
    printcolumn(
        name = "Cost",
        type_ = "string",
        json_path = ".status.cost",
        priority = 1
    ),
    printcolumn(
        name = "URL",
        type_ = "string",
        json_path = ".status.endpoint.url",
        priority = 1
    ),
    printcolumn(
        name = "Result",
        type_ = "string",
        json_path = ".status.resultCheck.phase",
        priority = 1
    ),
    printcolumn(
        name = "Explanation",
        type_ = "string",
        json_path = ".status.explanation",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = kube::core::Rule::new("self.replicas * self.gpusPerReplica <= 512").message("spec.replicas × spec.gpusPerReplica must be at most 512 GPUs"),
    validation = kube::core::Rule::new("has(self.maxPricePerGpuHour) == has(oldSelf.maxPricePerGpuHour)").message("spec.maxPricePerGpuHour is immutable after creation; delete and re-create the job"),
    validation = kube::core::Rule::new("has(self.regions) == has(oldSelf.regions)").message("spec.regions is immutable after creation; delete and re-create the job"),
    validation = kube::core::Rule::new("has(self.excludeClusters) == has(oldSelf.excludeClusters)").message("spec.excludeClusters is immutable after creation; delete and re-create the job"),
    validation = kube::core::Rule::new("has(self.serving) == has(oldSelf.serving)").message("spec.serving is immutable after creation; delete and re-create the job"),
    validation = kube::core::Rule::new("has(self.resultCheck) == has(oldSelf.resultCheck)").message("spec.resultCheck is immutable after creation; delete and re-create the job"),
    validation = kube::core::Rule::new("!has(self.resultCheck) || !has(self.serving)").message("spec.resultCheck compares the results of batch jobs; a serving job (spec.serving) has none: remove one of them")
)]
#[serde(rename_all = "camelCase")]
pub struct ComputeJobSpec {
    /// The GpuPool to run in. Default `default`.
    #[serde(default = "default_pool")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec.pool is immutable after creation; delete and re-create the job"))]
    pub pool: String,
    /// Number of replicas, run as a gang: all on one cluster at once, or not at all. 1 to 64.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 64))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec.replicas is immutable after creation; delete and re-create the job"))]
    pub replicas: u32,
    /// GPUs per replica, all on one node. 1 to 16.
    #[schemars(range(min = 1, max = 16))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec.gpusPerReplica is immutable after creation; delete and re-create the job"))]
    pub gpus_per_replica: u32,
    /// Which GPUs are acceptable.
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec.gpu is immutable after creation; delete and re-create the job"))]
    pub gpu: GpuRequirements,
    /// Highest price per GPU-hour the job accepts, in tokens (e.g. `"2.50"`). Clusters asking more are
    /// skipped. In pools with a chain, the escrow locks this price × GPUs × maxDuration up front.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec.maxPricePerGpuHour is immutable after creation; delete and re-create the job"))]
    pub max_price_per_gpu_hour: Option<TokenAmount>,
    /// Longest run of one attempt (a Kubernetes duration, 1s to 168h). The member stops the job after it,
    /// and the escrow lock is sized by it. Default 1h.
    #[serde(default = "default_max_duration")]
    #[x_kube(
        validation = kube::core::Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('168h')").message("spec.maxDuration must be between 1s and 168h"),
        validation = kube::core::Rule::new("self == oldSelf").message("spec.maxDuration is immutable after creation; delete and re-create the job")
    )]
    pub max_duration: KubeDuration,
    /// Acceptable regions (any when empty), e.g. `[eu-west, eu-central]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 32),
        inner(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))
    )]
    #[x_kube(
        merge_strategy = kube::core::ListMerge::Set,
        validation = kube::core::Rule::new("self == oldSelf").message("spec.regions is immutable after creation; delete and re-create the job")
    )]
    pub regions: Option<Vec<String>>,
    /// Member clusters never to use for this job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 49), pattern(DNS_LABEL_PATTERN))
    )]
    #[x_kube(
        merge_strategy = kube::core::ListMerge::Set,
        validation = kube::core::Rule::new("self == oldSelf").message("spec.excludeClusters is immutable after creation; delete and re-create the job")
    )]
    pub exclude_clusters: Option<Vec<String>>,
    /// What to do when an attempt fails or its cluster is lost.
    #[serde(default)]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec.retry is immutable after creation; delete and re-create the job"))]
    pub retry: RetryPolicy,
    /// Pending jobs are placed in priority order (higher first), then by creation time. -1000 to 1000,
    /// and at most the highest priority class the pool grants this namespace (0 when none). May
    /// change after creation, like `priorityClassName`.
    #[serde(default)]
    #[schemars(range(min = -1000, max = 1000))]
    pub priority: i32,
    /// A priority class of the pool (`GpuPool.spec.priorityClasses`) granted to this namespace:
    /// the job is queued at its value. Set either this or `priority`. May change after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub priority_class_name: Option<String>,
    /// What each replica runs.
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec.template is immutable after creation; delete and re-create the job"))]
    pub template: WorkloadTemplate,
    /// Makes this a serving job (docs/adr/0030-serving-jobs.md): its replicas are kept running
    /// (restarted when they crash) as HTTP servers on `port`, and the member reports where they
    /// answer in `status.endpoint`. Absent: a batch job that runs to completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec.serving is immutable after creation; delete and re-create the job"))]
    pub serving: Option<Box<ServingSpec>>,
    /// Accept members whose GPUs are not verified yet (ADR 0031): a provider on probation after
    /// joining by stake, or a member whose GPUs changed since its last passed challenge. Cheap,
    /// untrusted capacity: the GPUs may not be what the member claims. Members whose challenge
    /// failed stay out. Only where the pool allows it (`GpuPool.spec.verification.allowUnverifiedJobs`,
    /// default true); each attempt placed on such a member records `unverifiedMember: true`.
    /// Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unverified: bool,
    /// Checks the job's result by replication (docs/adr/0034-result-checks-by-replication.md):
    /// once the job succeeds, the hub runs it again as `<name>-replica` on another member
    /// (another provider's wallet) and compares the two results: every workload container's
    /// termination message per replica (write the result's digest to `/dev/termination-log`),
    /// and the outputs' sha256 unless `includeOutputs: false`. When they differ, a third run,
    /// `<name>-referee`, on a member that ran neither decides; the member it contradicts lost the
    /// dispute (and, where the pool says `verification.lostDisputes: Fail`, fails verification and
    /// is slashed like a failed challenge). Each run is a ComputeJob of this namespace, paid like
    /// any job: a check costs up to three runs. Only for batch jobs whose result is deterministic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec.resultCheck is immutable after creation; delete and re-create the job"))]
    pub result_check: Option<crate::result_check::ResultCheck>,
}

fn default_pool() -> String {
    "default".to_string()
}

fn default_replicas() -> u32 {
    1
}

fn default_max_duration() -> KubeDuration {
    KubeDuration::from_secs(3600)
}

/// GPU requirements of a job.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GpuRequirements {
    /// Acceptable GPU models, e.g. `[H100, A100]` (normalised names as in `kubectl get membercluster`).
    #[schemars(
        length(min = 1, max = 16),
        inner(length(min = 1, max = 64), pattern(MODEL_PATTERN))
    )]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub models: Vec<String>,
    /// Minimum memory per GPU in GiB as advertised (e.g. 80 for H100 80GB or A100 80GB, which
    /// excludes 40 GB A100s). Drivers report a little less than the advertised size (an H100 80GB
    /// reports 81,559 MiB), so GPUs within 7% of the figure qualify. 0 to 1024; default 0.
    #[serde(default)]
    #[schemars(range(max = 1024))]
    #[serde(rename = "minMemoryGiB")]
    pub min_memory_gib: u32,
}

impl GpuRequirements {
    /// Share of the advertised memory a GPU must report to qualify, in percent (the scheduler core
    /// uses the same figure; a test in the operator checks they agree).
    pub const MEMORY_TOLERANCE_PERCENT: u64 = 93;

    /// The least memory per GPU, in MiB as drivers report it, that satisfies `minMemoryGiB`.
    pub fn min_gpu_memory_mib(&self) -> u64 {
        u64::from(self.min_memory_gib) * 1024 * Self::MEMORY_TOLERANCE_PERCENT / 100
    }
}

/// Retry policy of a job.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Most attempts in total, counting the first (1 to 10, default 3). An attempt lost with its
    /// cluster or failed by the workload uses one up.
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1, max = 10))]
    pub max_attempts: u32,
    /// Whether an attempt whose pods failed is retried (on another cluster). Attempts lost with their
    /// cluster are always retried. Default false: a failing workload usually fails everywhere.
    #[serde(default)]
    pub retry_on_failure: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: default_max_attempts(),
            retry_on_failure: false,
        }
    }
}

fn default_max_attempts() -> u32 {
    3
}

/// Lifecycle phase of a ComputeJob.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum JobPhase {
    /// Waiting for a cluster that fits (see `status.explanation`).
    #[default]
    Pending,
    /// A cluster was chosen; waiting for the escrow lock (see `status.explanation`).
    Funding,
    /// The Placement is written; waiting for the member to start the pods.
    Placed,
    /// The member reports the pods running.
    Running,
    /// All replicas completed.
    Succeeded,
    /// The job failed and will not be retried (see `status.reason` and `status.message`).
    Failed,
}

impl JobPhase {
    /// Whether the job has ended.
    pub fn is_finished(self) -> bool {
        matches!(self, JobPhase::Succeeded | JobPhase::Failed)
    }
}

/// Observed state of a ComputeJob.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ComputeJobStatus {
    /// Lifecycle phase.
    #[serde(default)]
    pub phase: JobPhase,
    /// Current attempt, starting at 1 when first placed (0 before).
    #[serde(default)]
    pub attempt: u32,
    /// Total GPUs of the job (replicas × gpusPerReplica).
    #[serde(default)]
    pub gpus: u32,
    /// Where the current attempt runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Box<PlacementRef>>,
    /// Why the job waits, or where and why it was placed, e.g.
    /// `0/3 clusters fit: alpha: no H100 (has L4); beta: 4 free GPUs, needs 8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
    /// Machine-readable reason of the last failure or of being Pending/Funding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail for `reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The payer account bound to the job's namespace in the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<EvmAddress>,
    /// The priority the job is queued at: its priority class's value, or `spec.priority`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// GPU usage over all attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Total paid to providers over all attempts, in tokens (pool fee included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<TokenAmount>,
    /// Every attempt so far, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["attempt".into()]))]
    pub attempts: Vec<AttemptRecord>,
    /// When the job first entered Pending (for placement latency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_time: Option<Time>,
    /// When the job ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The generation of the spec this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Serving jobs: where the current attempt answers and whether it is ready (cleared of URLs
    /// when the attempt ends; a new attempt reports a new URL).
    // Boxed, like `result_check`: rare, and the hub caches every job (88 bytes inline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Box<Endpoint>>,
    /// Conditions: Admitted, Scheduled, Funded, Running, Finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// What the template's `outputs` stored (keys, sizes, sha256), one record per output and
    /// replica, from the attempt that succeeded; empty unless the job Succeeded, since a failed
    /// upload fails the attempt (docs/adr/0029-job-data-on-s3.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub outputs: Vec<crate::data::OutputRecord>,
    /// Jobs with `spec.resultCheck`: the runs compared and the verdict (ADR 0034).
    // Boxed: only jobs with a result check have it, and inline it is 152 of a status's bytes in
    // every cached job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_check: Option<Box<crate::result_check::ResultCheckStatus>>,
}

/// Where an attempt runs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlacementRef {
    /// Member cluster.
    pub cluster: String,
    /// Namespace of the Placement on the hub (`gpufed-member-<cluster>`).
    pub namespace: String,
    /// Name of the Placement.
    pub name: String,
    /// GPU model chosen.
    pub model: String,
    /// Price per GPU-hour agreed for this attempt.
    pub price_per_gpu_hour: TokenAmount,
}

/// GPU usage.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// GPU-seconds used (GPUs × seconds the pods ran).
    pub gpu_seconds: u64,
    /// When the first attempt's pods started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the last attempt's pods finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<Time>,
}

/// Phase of one attempt.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum AttemptPhase {
    /// The Placement is written; the member has not reported yet.
    #[default]
    Placed,
    /// The member accepted the placement and created its local Job.
    Accepted,
    /// Pods are running.
    Running,
    /// All replicas completed.
    Succeeded,
    /// The pods failed, the member rejected the placement, or the deadline passed.
    Failed,
    /// The member stopped heartbeating; the attempt is fenced off and paid only for reported usage.
    Lost,
    /// The job was deleted while this attempt ran.
    Cancelled,
    /// A job of higher priority took its GPUs (ADR 0025): the member stopped it with the pool's
    /// grace period and the job was re-queued. Paid for the usage reported until it stopped; it
    /// does not count against `retry.maxAttempts` and does not keep the job off that cluster.
    Preempted,
}

impl AttemptPhase {
    /// Whether the attempt has ended.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            AttemptPhase::Succeeded
                | AttemptPhase::Failed
                | AttemptPhase::Lost
                | AttemptPhase::Cancelled
                | AttemptPhase::Preempted
        )
    }
}

/// One attempt of a job.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRecord {
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Member cluster of this attempt.
    pub cluster: String,
    /// Placement name on the hub.
    pub placement: String,
    /// GPU model.
    pub model: String,
    /// Price per GPU-hour agreed for this attempt.
    pub price_per_gpu_hour: TokenAmount,
    /// The provider account this attempt pays (the member's wallet when it was chosen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<EvmAddress>,
    /// Phase of this attempt.
    pub phase: AttemptPhase,
    /// Why it ended, e.g. `Completed`, `BackoffLimitExceeded`, `HeartbeatExpired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Detail for `reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the placement was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placed_time: Option<Time>,
    /// When the pods started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the attempt ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<Time>,
    /// GPU-seconds reported by the member for this attempt.
    #[serde(default)]
    pub gpu_seconds: u64,
    /// How the containers ended, as the member reported (non-zero exits first; at most 16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub exits: Vec<ContainerExit>,
    /// Nodes the hub planned for the replicas when it chose the cluster (`node=replicas`); the
    /// member's own scheduler makes the final choice. Used to account for GPUs in flight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub planned_nodes: Vec<PlannedNode>,
    /// Escrow state of this attempt (pools with a chain).
    // Boxed, like `offer`: the hub caches every job's attempts, and inline these two would be 472
    // of an attempt's 832 bytes in memory even where they are absent (a pool without a chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement: Option<Box<Settlement>>,
    /// The member's GPUs were not verified when this attempt was placed (the job set
    /// `spec.allowUnverified`, ADR 0031).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unverified_member: bool,
    /// Pools with `spec.usageCheck`: the hub's check of the claimed GPU-seconds against the
    /// member's telemetry; settlement pays `supportedGpuSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_check: Option<Box<crate::usage::UsageCheckRecord>>,
    /// The member's signed offer this attempt was priced by (pools with a chain, ADR 0024): its
    /// prices, nonce, expiry, EIP-712 digest, signature and signer, so anyone can recompute the
    /// digest and recover the wallet that asked the price. Absent where the member was priced by
    /// the admin's `spec.prices`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<Box<crate::offer::SignedOffer>>,
}

/// Replicas the hub planned on one node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlannedNode {
    /// Node name on the member.
    pub node: String,
    /// Replicas planned there.
    pub replicas: u32,
}

/// Escrow state of one attempt.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum SettlementState {
    /// Waiting for the payer's deposit to cover the lock.
    #[default]
    Unfunded,
    /// The lock transaction was sent.
    Locking,
    /// Funds are locked for the attempt.
    Locked,
    /// The settlement transaction was sent.
    Settling,
    /// The provider was paid and the rest refunded.
    Settled,
    /// The lock was expired by the payer and refunded in full.
    Expired,
    /// Nothing was locked for the attempt and nothing is owed (the lock was refused, or the
    /// attempt ended before its lock was made).
    Closed,
}

/// A usage receipt signed by the hub's settlement key (EIP-712 `UsageReceipt(bytes32 jobId,
/// uint256 paid)`, domain "GpuFed JobEscrow" version 1 of the pool's escrow).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UsageReceipt {
    /// What the attempt owes, in the token's base units (decimal).
    pub paid_base_units: String,
    /// The hub account that signed it.
    pub signer: String,
    /// The signature, 0x-hex (65 bytes).
    pub signature: String,
}

/// A usage receipt with everything needed to submit it without the hub: the chain, the escrow,
/// the lock id and the signed amount. Put on the attempt's Placement as the annotation
/// `gpufed.io/usage-receipt`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClaimableReceipt {
    /// EVM chain id.
    pub chain_id: u64,
    /// The pool's RPC endpoint as the hub uses it.
    pub rpc_url: String,
    /// The JobEscrow contract.
    pub escrow: String,
    /// The lock id (0x-hex).
    pub job_id: String,
    /// The signed receipt.
    #[serde(flatten)]
    pub receipt: UsageReceipt,
}

/// Escrow record of one attempt.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Settlement {
    /// Where the money is.
    pub state: SettlementState,
    /// `keccak256(job UID, attempt)` as 0x-hex, the lock's id in JobEscrow.
    pub job_id: String,
    /// Tokens locked from the payer's deposit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked: Option<TokenAmount>,
    /// Tokens paid for usage (provider share plus pool fee).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid: Option<TokenAmount>,
    /// Tokens returned to the payer's deposit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refunded: Option<TokenAmount>,
    /// Hash of the lock transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_tx: Option<String>,
    /// Block of the lock transaction (event look-ups start there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_block: Option<u64>,
    /// Hash of the settlement transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_tx: Option<String>,
    /// Block of the settlement; it counts once `spec.chain.confirmations` blocks include it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_block: Option<u64>,
    /// The hub's signed usage receipt for this attempt: the provider can submit it to
    /// `JobEscrow.claim` itself if the hub is late or gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<UsageReceipt>,
    /// Serving attempts: periods paid so far while running (`JobEscrow.settlePeriod`); `paid`
    /// then holds what they paid until the attempt is settled.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub periods_paid: u32,
    /// Serving attempts: windows of `maxDuration` the lock has funded once it was renewed
    /// (`JobEscrow.extendLock`, docs/adr/0030-serving-jobs.md section 7); `locked` is then the
    /// total of all windows. Absent: the one window of the first lock.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub windows_funded: u32,
    /// Serving attempts: the lock's deadline (Unix seconds) as the hub last made or renewed it. A
    /// chain lock with another deadline was renewed by a transaction this record missed (a hub
    /// stopped before writing it), and its renewals are read back from the chain's events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_deadline: Option<u64>,
    /// Latest problem, e.g. the RPC being unreachable (cleared when resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
