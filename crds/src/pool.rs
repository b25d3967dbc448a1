//! `GpuPool`: a market of member clusters with one policy (scheduling strategy, heartbeat timeout,
//! minimum bond, optional chain for payment, and which payer account each tenant namespace spends).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::units::{EvmAddress, KubeDuration, TokenAmount};
use crate::workload::DNS_LABEL_PATTERN;

/// How the scheduler ranks the clusters that fit a job.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum Strategy {
    /// Lowest price per GPU-hour first; ties go to the cluster with more free GPUs of the model.
    #[default]
    CheapestFit,
    /// Fullest cluster first (fewest free GPUs left after placing), keeping big holes for big jobs.
    BinPack,
    /// Emptiest cluster first (most free GPUs), spreading load and risk across providers.
    Spread,
    /// A reverse auction per job (ADR 0024): the lowest ask among the clusters that fit wins, as
    /// with `CheapestFit`, and the job pays the next-lowest ask of another fitting cluster (its
    /// own ask when no other fits), never above the job's `maxPricePerGpuHour`.
    Auction,
}

/// Who may add member clusters to a pool (ADR 0031).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum Admission {
    /// Only the pool admin creates MemberClusters (and hands each its credential).
    #[default]
    Approved,
    /// Any provider whose wallet has at least `minBond` staked in the pool's ProviderBond joins
    /// through the hub's registration endpoint with a signed join request, and is on probation
    /// (challenges only) until verified.
    Open,
}

/// A pool of GPU clusters that jobs are placed into, and its policy.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gpufed.io",
    version = "v1alpha1",
    kind = "GpuPool",
    plural = "gpupools",
    shortname = "gpool",
    category = "gpufed",
    status = "GpuPoolStatus",
    derive = "PartialEq",
    doc = "A pool of member GPU clusters and its policy: scheduling strategy, heartbeat timeout, minimum provider bond, payment chain and payer bindings.",
    validation = kube::core::Rule::new("!has(self.spec.admission) || self.spec.admission != 'Open' || (has(self.spec.chain) && has(self.spec.chain.bond))").message("spec.admission Open needs spec.chain.bond: open members join by stake, which the hub reads from that ProviderBond contract"),
    validation = kube::core::Rule::new("!has(self.spec.admission) || self.spec.admission != 'Open' || has(self.spec.minBond)").message("spec.admission Open needs spec.minBond: the stake each open member must hold"),
    validation = kube::core::Rule::new("!has(self.spec.admission) || self.spec.admission != 'Open' || (has(self.spec.verification) && has(self.spec.verification.required) && self.spec.verification.required)").message("spec.admission Open needs spec.verification.required: true, so members that joined by stake get only challenges until they pass one"),
    printcolumn(name = "Strategy", type_ = "string", json_path = ".spec.strategy"),
    printcolumn(name = "Members", type_ = "integer", json_path = ".status.members"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyMembers"),
    printcolumn(name = "GPUs", type_ = "integer", json_path = ".status.totalGpus"),
    printcolumn(name = "Free", type_ = "integer", json_path = ".status.freeGpus"),
    printcolumn(
        name = "Chain",
        type_ = "string",
        json_path = ".spec.chain.chainId",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = kube::core::Rule::new("has(self.chain) || !has(self.quotas) || self.quotas.all(q, q.groups.all(g, !has(g.spend)))").message("spec.quotas[].groups[].spend needs spec.chain: spend is counted from escrow locks and settlements, which only pools with a chain have; set spec.chain or remove spend"),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.reclaimWithinCohort) || self.reclaimWithinCohort == 'Never' || (has(self.quotas) && self.quotas.exists(q, has(q.cohort)))").message("spec.reclaimWithinCohort needs spec.quotas with a cohort: only a namespace of a cohort lends quota it can reclaim; add cohort to spec.quotas[] or set reclaimWithinCohort to Never"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.verification) || !has(self.verification.slash) || (has(self.chain) && has(self.chain.bond))").message("spec.verification.slash needs spec.chain with spec.chain.bond: a failed verdict is slashed from the provider's bond in that ProviderBond contract; set both or remove slash"))]
pub struct GpuPoolSpec {
    /// How clusters that fit a job are ranked and priced: `CheapestFit` (default), `BinPack`,
    /// `Spread` (each job pays the chosen cluster's price) or `Auction` (the lowest ask wins and
    /// the job pays the next-lowest ask, ADR 0024).
    #[serde(default)]
    pub strategy: Strategy,
    /// A member whose heartbeat Lease is older than this is NotReady and its running attempts are
    /// re-placed elsewhere. Between 15s and 1h; default 40s. Agents stop their own jobs earlier
    /// (fencing at two thirds of it), with a few seconds of grace for their pods to stop.
    #[serde(default = "default_heartbeat_timeout")]
    #[x_kube(validation = kube::core::Rule::new("duration(self) >= duration('15s') && duration(self) <= duration('1h')").message("spec.heartbeatTimeout must be between 15s and 1h"))]
    pub heartbeat_timeout: KubeDuration,
    /// An attempt whose pods are not running this long after it was placed (image pulls, a full
    /// member, a member that accepted and went quiet) is failed with reason `StartTimeout` and
    /// tried elsewhere. Between 30s and 24h; default 10m.
    #[serde(default = "default_start_timeout")]
    #[x_kube(validation = kube::core::Rule::new("duration(self) >= duration('30s') && duration(self) <= duration('24h')").message("spec.startTimeout must be between 30s and 24h"))]
    pub start_timeout: KubeDuration,
    /// Minimum on-chain bond, in tokens, a provider must hold to receive jobs. Ignored without `chain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_bond: Option<TokenAmount>,
    /// Payment settings. Without it, jobs run without escrow and nothing is paid on chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainSpec>,
    /// Which payer account each tenant namespace spends. Set by the pool admin, so a tenant can
    /// never spend another namespace's deposit. A namespace without a binding cannot run jobs in a
    /// pool with a chain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["namespace".into()]))]
    pub payers: Vec<PayerBinding>,
    /// Priority classes the pool admin grants. A job names one (`spec.priorityClassName`) to be
    /// queued at its value; a raw `spec.priority` may not exceed the highest class its namespace
    /// may use (0 when none), so no tenant can jump the queue on its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub priority_classes: Vec<PriorityClass>,
    /// GPUs each tenant namespace may hold at once, per group of GPU models, and the cohorts whose
    /// members lend each other idle quota (ADR 0019). A namespace not listed is not limited; a
    /// listed namespace may use only the models its groups count. At most 256 namespaces (the
    /// apiserver's CEL cost budget bounds the rules on groups).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["namespace".into()]))]
    #[x_kube(validation = kube::core::Rule::new("self.all(q, has(q.cohort) || q.groups.all(g, !has(g.borrowingLimit)))").message("spec.quotas[].groups[].borrowingLimit needs spec.quotas[].cohort: a namespace borrows only from its cohort; set cohort or remove borrowingLimit"))]
    pub quotas: Vec<NamespaceQuota>,
    /// Fair share between tenant namespaces (ADR 0025). Present, even empty, it turns fair share
    /// on: among pending jobs of one priority, the namespace with the lowest weighted dominant
    /// share (the largest fraction it holds of any GPU model's capacity, divided by its weight) is
    /// served first, and the oldest job of the top priority that fits no free node holds the nodes
    /// it needs while they empty, so large gangs are not starved. Absent: priority, then age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fair_sharing: Option<FairSharing>,
    /// Whether a pending job may take GPUs back from running attempts of strictly lower priority
    /// (ADR 0025): `Never` (default) or `LowerPriority`. With `LowerPriority`, a job whose
    /// priority class allows it (`priorityClasses[].preemptionPolicy`) and that fits no cluster
    /// may evict whole gangs of lower priority on one cluster; they are stopped with
    /// `preemptionGracePeriod`, paid for what they ran, and re-queued, not failed.
    #[serde(default, skip_serializing_if = "Preemption::is_never")]
    pub preemption: Preemption,
    /// Whether a namespace of a cohort may take back GPUs it lent (ADR 0025, Kueue's
    /// `reclaimWithinCohort`): `Never` (default: lent GPUs come back only as the borrower's jobs
    /// end), `LowerPriority` (evict borrowers' attempts of lower priority) or `Any` (of any
    /// priority). Only a pending job that fits its namespace's nominal quota reclaims, only
    /// attempts of namespaces of its cohort holding more than their nominal quota are evicted,
    /// lowest priority then youngest first, whole gangs, and never so many that the borrower falls
    /// below its nominal quota. Victims are stopped like preempted ones and re-queued.
    #[serde(default, skip_serializing_if = "ReclaimWithinCohort::is_never")]
    pub reclaim_within_cohort: ReclaimWithinCohort,
    /// How long an evicted attempt's pods get to stop after it is preempted. 0s to 1h; default
    /// 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("duration(self) >= duration('0s') && duration(self) <= duration('1h')").message("spec.preemptionGracePeriod must be between 0s and 1h"))]
    pub preemption_grace_period: Option<KubeDuration>,
    /// Challenges that prove the members' GPUs (ADR 0022, ADR 0027): the hub sends each member a
    /// seeded computation at join, after its GPU inventory changes and at random times, and
    /// records the verdict in `MemberCluster.status.verification`. Absent: no challenges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// The window over which each member's reputation (`MemberCluster.status.reputation`:
    /// challenge verdicts, attempts ended by its fault, uptime) is counted. 1h to 90 days;
    /// default 168h (7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("duration(self) >= duration('1h') && duration(self) <= duration('2160h')").message("spec.reputationWindow must be between 1h and 2160h (90 days)"))]
    pub reputation_window: Option<KubeDuration>,
    /// Members below any of these figures over `reputationWindow` (their
    /// `MemberCluster.status.reputation`) get no tenant jobs; challenges still go to them, so a
    /// member can earn its way back. Absent: no floor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reputation_floor: Option<ReputationFloor>,
    /// Pay each attempt only for the GPU-seconds its member's own gpu-probe telemetry supports
    /// (docs/contracts.md, "Usage checked against telemetry"): members record the readings of the
    /// nodes each attempt runs on, the hub flags claimed GPU-seconds the readings do not support
    /// (an Event `UsageUnsupported` and the job's `UsageSupported` condition) and settles for the
    /// supported part only. Serving jobs are not checked (a server waiting for requests is idle
    /// by design). Absent: usage is paid as reported, within the hub's cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_check: Option<crate::usage::UsageCheck>,
    /// Who adds members: `Approved` (default; the pool admin creates each MemberCluster) or
    /// `Open` (providers with at least `minBond` staked join through the hub's registration
    /// endpoint with a request signed by their wallet, ADR 0031). `Open` needs `chain.bond`,
    /// `minBond` and `verification.required: true`.
    #[serde(default)]
    pub admission: Admission,
}

/// The least reputation a member needs over the pool's window to get tenant jobs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReputationFloor {
    /// Least share of the window the member was Ready, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub min_uptime_percent: Option<u32>,
    /// Least share of tenant attempts that succeeded of those that succeeded or ended through
    /// the member's fault, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub min_attempt_success_percent: Option<u32>,
    /// Least share of challenge verdicts that passed, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub min_challenge_pass_percent: Option<u32>,
    /// The attempt and challenge shares count only once the window holds at least this many
    /// attempts (verdicts), so one early failure does not shut a new member out. 1 to 1000;
    /// default 5.
    #[serde(default = "default_min_samples")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_samples: u32,
}

fn default_min_samples() -> u32 {
    5
}

/// How a pool verifies its members' GPUs with challenges.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// Tenant jobs go only to members whose latest challenge passed for their current GPU
    /// inventory; the others wait with reason `Unverified` (challenges still run there).
    #[serde(default)]
    pub required: bool,
    /// Whether jobs may opt in to members that are not verified yet (`ComputeJob.spec.allowUnverified`,
    /// ADR 0031): members on probation after joining by stake, or whose GPUs changed since their
    /// last passed challenge. Default true: the tenant chooses the risk for its own job, and the
    /// member's bond still answers for a failed challenge. false: every tenant job waits for a
    /// passed challenge, whatever it asks.
    #[serde(default = "default_true")]
    pub allow_unverified_jobs: bool,
    /// The container image with the `gpu-probe` binary that runs challenges on the member.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// Backend `gpu-probe challenge` computes with: `Cuda` (real GPUs, default) or `Cpu` (tests
    /// and development; its time band is the CPU profile, and it proves nothing about GPUs).
    /// The CUDA backend has not yet run on a GPU in gpufed's tests and no GPU model's time band is
    /// measured (ADR 0022): until one is, a `Cuda` answer is bounded by `deadline` alone.
    #[serde(default)]
    pub backend: ChallengeBackend,
    /// Matrix size `n` of the challenge product: a multiple of 8 from 8 to 16384. Default 4096.
    #[serde(default = "default_matrix_size")]
    #[schemars(range(min = 8, max = 16384))]
    #[x_kube(validation = kube::core::Rule::new("self % 8 == 0").message("spec.verification.matrixSize must be a multiple of 8"))]
    pub matrix_size: u32,
    /// The member must answer within this time from the challenge's Placement being created,
    /// by the hub's clock, or it fails. Between 10s and 1h; default 5m.
    #[serde(default = "default_challenge_deadline")]
    #[x_kube(validation = kube::core::Rule::new("duration(self) >= duration('10s') && duration(self) <= duration('1h')").message("spec.verification.deadline must be between 10s and 1h"))]
    pub deadline: KubeDuration,
    /// How long a challenge may wait to be placed on the member (it needs every GPU of a node
    /// free, so tenant jobs can keep it out) before the hub abandons it: no verdict, nothing
    /// slashed, a `ChallengeNotPlaced` Event, and the next challenge is sent. Between 1m and 24h;
    /// default 30m.
    #[serde(default = "default_placement_deadline")]
    #[x_kube(validation = kube::core::Rule::new("duration(self) >= duration('1m') && duration(self) <= duration('24h')").message("spec.verification.placementDeadline must be between 1m and 24h"))]
    pub placement_deadline: KubeDuration,
    /// Mean time between random challenges of a member (drawn uniformly from half to one and a
    /// half of it, so a member cannot predict them). At least 1m. Absent: challenges only at
    /// join and after inventory changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("duration(self) >= duration('1m')").message("spec.verification.every must be at least 1m"))]
    pub every: Option<KubeDuration>,
    /// Slash a member's bond automatically when a challenge proves it cheated (ADR 0023, ADR
    /// 0027): the hub proposes a slash keyed by the evidence's sha256, paying the tenants whose
    /// attempts ran on the member since its last passed challenge, and executes it after the bond
    /// contract's appeal window unless the provider appealed. Needs `spec.chain.bond`. Absent:
    /// verdicts are recorded, nothing is slashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slash: Option<SlashPolicy>,
    /// What a member that loses a dispute over a tenant job's result (`ComputeJob.spec.resultCheck`,
    /// ADR 0034) suffers: `Record` (default) keeps the verdict on the job and a warning Event on
    /// the member; `Fail` also fails the member's verification with reason `WrongTenantResult`
    /// (so a pool with `required: true` sends it no tenant job until it passes a challenge again:
    /// its next random one, with `every`, or after its inventory changes),
    /// and with `slash` set, slashes it like a failed challenge. The program compared is the
    /// tenant's: choose `Fail` where tenants are trusted to submit deterministic programs.
    #[serde(default)]
    pub lost_disputes: LostDisputes,
}

/// What a member that loses a result dispute suffers (`GpuPool.spec.verification.lostDisputes`).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum LostDisputes {
    /// The verdict is kept on the job and in a warning Event on the member.
    #[default]
    Record,
    /// The member also fails verification (`WrongTenantResult`), and is slashed where the pool
    /// slashes failed challenges.
    Fail,
}

/// How much a failed challenge costs a provider.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SlashPolicy {
    /// Tokens slashed per failed verdict that proves cheating (`WrongResult`, `TooSlow`,
    /// `TooFewGpus`, `TooManyGpus`, `DuplicateGpu`, `WrongChallenge`, `UnknownGpu`, and a lost
    /// result dispute, `WrongTenantResult`, where `lostDisputes: Fail`); a late, missing or
    /// unreadable answer (`DeadlineExceeded`, `NoAnswer`, `Malformed`, `Oversize`,
    /// `UnsupportedVersion`) is never slashed. Capped by what the provider has bonded and
    /// unbonding. More than 0.
    #[x_kube(validation = kube::core::Rule::new("!self.matches('^0*(\\\\.0*)?$')").message("spec.verification.slash.amount must be more than 0"))]
    pub amount: TokenAmount,
}

/// The compute backend of `gpu-probe challenge`.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum ChallengeBackend {
    /// The GPUs, through CUDA.
    #[default]
    Cuda,
    /// The CPU (tests and development).
    Cpu,
}

fn default_matrix_size() -> u32 {
    4096
}

fn default_challenge_deadline() -> KubeDuration {
    KubeDuration::from_secs(300)
}

fn default_placement_deadline() -> KubeDuration {
    KubeDuration::from_secs(30 * 60)
}

/// Whether a pool lets higher-priority jobs evict lower-priority attempts.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum Preemption {
    /// Running attempts are never evicted for another job.
    #[default]
    Never,
    /// A job may evict running attempts of strictly lower priority when it fits nowhere else.
    LowerPriority,
}

impl Preemption {
    /// Whether this is the default, `Never` (kept out of serialised specs).
    pub fn is_never(&self) -> bool {
        *self == Preemption::Never
    }
}

/// Whether a namespace of a cohort may evict borrowers' attempts to get its nominal quota back
/// (Kueue's `reclaimWithinCohort`).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum ReclaimWithinCohort {
    /// Lent GPUs come back only as the borrower's jobs end.
    #[default]
    Never,
    /// Borrowers' attempts of strictly lower priority than the reclaiming job may be evicted.
    LowerPriority,
    /// Borrowers' attempts of any priority may be evicted.
    Any,
}

impl ReclaimWithinCohort {
    /// Whether this is the default, `Never` (kept out of serialised specs).
    pub fn is_never(&self) -> bool {
        *self == ReclaimWithinCohort::Never
    }
}

/// Whether jobs of a priority class may evict lower-priority attempts (like Kubernetes'
/// `PriorityClass.preemptionPolicy`).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum PreemptionPolicy {
    /// Jobs of the class wait for GPUs to free; they never evict anyone.
    Never,
    /// Jobs of the class may evict attempts of strictly lower priority, if the pool allows it.
    #[default]
    PreemptLowerPriority,
}

impl PreemptionPolicy {
    /// Whether this is the default, `PreemptLowerPriority` (kept out of serialised specs).
    pub fn is_default(&self) -> bool {
        *self == PreemptionPolicy::PreemptLowerPriority
    }
}

/// Grace period of a preempted attempt when the pool does not set one.
pub const DEFAULT_PREEMPTION_GRACE_PERIOD: KubeDuration = KubeDuration::from_secs(30);

/// Fair-share settings of a pool.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FairSharing {
    /// Weight per namespace; a namespace not listed weighs 1. A namespace of weight 2 is entitled
    /// to twice the share of one of weight 1 while both are backlogged. At most 256 namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["namespace".into()]))]
    pub weights: Vec<NamespaceWeight>,
}

/// The fair-share weight of one namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceWeight {
    /// The tenant namespace on the hub.
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub namespace: String,
    /// Its weight, 1 to 1000.
    #[schemars(range(min = 1, max = 1000))]
    pub weight: u32,
}

/// The quota of one tenant namespace in a pool.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceQuota {
    /// The tenant namespace on the hub.
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub namespace: String,
    /// Namespaces naming the same cohort lend each other their idle quota, group by group (groups
    /// of the same name). Without it the namespace never holds more than its nominal quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub cohort: Option<String>,
    /// GPUs the namespace may hold, per group of models. A model no group counts may not be used.
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    #[x_kube(validation = kube::core::Rule::new("self.filter(g, !has(g.models) || size(g.models) == 0).size() <= 1").message("spec.quotas[].groups: at most one group may leave models empty (it counts every model the others do not name); list the models of the others"))]
    #[x_kube(validation = kube::core::Rule::new("self.all(g, self.all(h, g.name == h.name || !has(g.models) || !has(h.models) || g.models.all(m, !(m in h.models))))").message("spec.quotas[].groups: a model may be counted by one group only; remove it from all but one"))]
    pub groups: Vec<QuotaGroup>,
}

/// GPUs of some models one namespace may hold at once, and optionally the GPU-hours and tokens
/// it may use per calendar period.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = kube::core::Rule::new("has(self.period) || (!has(self.gpuHours) && !has(self.spend))").message("spec.quotas[].groups[]: gpuHours and spend count per period; set period (Day, Week or Month)"),
    validation = kube::core::Rule::new("!has(self.period) || has(self.gpuHours) || has(self.spend)").message("spec.quotas[].groups[].period limits nothing alone; set gpuHours or spend, or remove period"),
)]
#[serde(rename_all = "camelCase")]
pub struct QuotaGroup {
    /// Name of the group; groups of the same name lend to each other within a cohort.
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub name: String,
    /// Normalised GPU models the group counts (`H100`, `A100`, ...). Empty: every model no other
    /// group of the namespace names. At most 8.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub models: Vec<String>,
    /// GPUs the namespace may always hold in this group (its nominal quota). 0 to 100000.
    #[schemars(range(max = 100000))]
    pub gpus: u32,
    /// At most this many GPUs beyond `gpus` borrowed from idle quota of the cohort; without it,
    /// as many as the cohort has idle. Needs `cohort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100000))]
    pub borrowing_limit: Option<u32>,
    /// The calendar period `gpuHours` and `spend` count over, in UTC on the hub's clock: `Day`
    /// (from 00:00), `Week` (from Monday 00:00) or `Month` (from the 1st). Needs `gpuHours` or
    /// `spend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<QuotaPeriod>,
    /// GPU-hours the namespace may use per `period` in this group: attempts' GPU-seconds inside
    /// the period, counting placed and running attempts at their worst case (GPUs × maxDuration,
    /// cut at the period's end). A job whose worst case exceeds what is left waits `OverQuota`.
    /// Lent within the cohort like `gpus`. 0 to 10000000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 10000000))]
    pub gpu_hours: Option<u32>,
    /// Tokens the namespace may spend per `period` in this group (pools with a chain): settled
    /// amounts plus the locks of attempts not settled yet, of attempts placed in the period. A
    /// job whose escrow lock exceeds what is left waits `OverQuota`. Never borrowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend: Option<TokenAmount>,
}

/// The calendar period a quota's `gpuHours` and `spend` count over, in UTC on the hub's clock:
/// `Day` (from 00:00), `Week` (from Monday 00:00) or `Month` (from the 1st 00:00).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum QuotaPeriod {
    /// From 00:00 UTC to the next 00:00 UTC.
    Day,
    /// From Monday 00:00 UTC to the next Monday.
    Week,
    /// From the 1st of the month 00:00 UTC to the 1st of the next.
    Month,
}

/// A queueing priority the pool admin grants to some or all tenant namespaces.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PriorityClass {
    /// Name jobs use in `spec.priorityClassName`.
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub name: String,
    /// Pending jobs of higher value are placed first. -1000 to 1000.
    #[schemars(range(min = -1000, max = 1000))]
    pub value: i32,
    /// Tenant namespaces that may use it; empty: every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub namespaces: Vec<String>,
    /// Whether its jobs may evict running attempts of strictly lower priority when the pool's
    /// `spec.preemption` is `LowerPriority`: `PreemptLowerPriority` (default) or `Never`.
    #[serde(default, skip_serializing_if = "PreemptionPolicy::is_default")]
    pub preemption_policy: PreemptionPolicy,
}

impl GpuPoolSpec {
    /// Whether a job asking for priority class `class` (or none, for a raw `spec.priority`) may
    /// evict lower-priority attempts: the pool must allow preemption, and the class must not
    /// forbid it. A job without a class preempts when the pool allows it (Kubernetes' default).
    pub fn may_preempt(&self, class: Option<&str>) -> bool {
        if self.preemption.is_never() {
            return false;
        }
        match class {
            None => true,
            Some(name) => self
                .priority_classes
                .iter()
                .find(|c| c.name == name)
                .is_some_and(|c| c.preemption_policy == PreemptionPolicy::PreemptLowerPriority),
        }
    }

    /// How long a preempted attempt's pods get to stop: `spec.preemptionGracePeriod`, default 30s.
    pub fn preemption_grace_period(&self) -> KubeDuration {
        self.preemption_grace_period
            .unwrap_or(DEFAULT_PREEMPTION_GRACE_PERIOD)
    }

    /// The queueing priority of a job of namespace `ns` asking for class `class` (or a raw
    /// `priority`), or why it may not have it: (reason, message naming the fix).
    pub fn priority_for(
        &self,
        ns: &str,
        class: Option<&str>,
        priority: i32,
    ) -> Result<i32, (&'static str, String)> {
        let usable =
            |c: &&PriorityClass| c.namespaces.is_empty() || c.namespaces.iter().any(|n| n == ns);
        match class {
            Some(name) => {
                let Some(c) = self.priority_classes.iter().find(|c| c.name == name) else {
                    let known: Vec<&str> = self
                        .priority_classes
                        .iter()
                        .filter(usable)
                        .map(|c| c.name.as_str())
                        .collect();
                    return Err((
                        "PriorityClassNotFound",
                        format!(
                            "spec.priorityClassName {name:?} is not a priority class of the pool \
                             (classes namespace {ns:?} may use: {})",
                            if known.is_empty() {
                                "none".into()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                };
                if !usable(&c) {
                    return Err((
                        "PriorityClassNotAllowed",
                        format!(
                            "namespace {ns:?} may not use priority class {name:?}: ask the pool \
                             admin to add it to the class's namespaces, or use another class"
                        ),
                    ));
                }
                if priority != 0 {
                    return Err((
                        "PriorityConflict",
                        format!(
                            "spec.priority {priority} and spec.priorityClassName {name:?} are both \
                             set: keep only the class"
                        ),
                    ));
                }
                Ok(c.value)
            }
            None => {
                let ceiling = self
                    .priority_classes
                    .iter()
                    .filter(usable)
                    .map(|c| c.value)
                    .max()
                    .unwrap_or(0)
                    .max(0);
                if priority > ceiling {
                    return Err((
                        "PriorityAboveCeiling",
                        format!(
                            "spec.priority {priority} is above {ceiling}, the highest priority \
                             namespace {ns:?} may use in this pool: lower it, or name a priority \
                             class the pool admin granted (spec.priorityClassName)"
                        ),
                    ));
                }
                Ok(priority)
            }
        }
    }
}

fn default_start_timeout() -> KubeDuration {
    KubeDuration::from_secs(600)
}

fn default_heartbeat_timeout() -> KubeDuration {
    KubeDuration::from_secs(40)
}

/// The EVM chain and contracts a pool pays through.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChainSpec {
    /// JSON-RPC endpoint, `http://` or `https://`.
    #[schemars(length(min = 8, max = 2048), pattern(r"^https?://\S+$"))]
    pub rpc_url: String,
    /// EVM chain id (e.g. 31337 for a local anvil). Transactions are signed for this chain only.
    #[schemars(range(min = 1))]
    pub chain_id: u64,
    /// The ERC-20 token jobs are paid in.
    pub token: EvmAddress,
    /// The JobEscrow contract (per-job locks and settlement).
    pub escrow: EvmAddress,
    /// The ProviderBond contract. Without it, bonds are not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bond: Option<EvmAddress>,
    /// Secret holding the hub's settlement key (hex private key). Never logged or shown in status.
    pub hub_key_secret_ref: SecretKeyRef,
    /// Extra time after a job's maxDuration before its payer may expire an unsettled lock (the
    /// escrow adds its claim window on top). Default 1h, at most 24h.
    #[serde(default = "default_lock_grace")]
    #[x_kube(validation = kube::core::Rule::new("duration(self) >= duration('0s') && duration(self) <= duration('24h')").message("spec.chain.lockGrace must be between 0s and 24h"))]
    pub lock_grace: KubeDuration,
    /// How long a transaction may wait to be mined before the hub replaces it (same nonce,
    /// higher fees). Default 60s.
    #[serde(default = "default_tx_timeout")]
    #[x_kube(validation = kube::core::Rule::new("duration(self) >= duration('5s') && duration(self) <= duration('1h')").message("spec.chain.txTimeout must be between 5s and 1h"))]
    pub tx_timeout: KubeDuration,
    /// Blocks (counting the one that includes it) a settlement needs before the hub records it as
    /// Settled; a settlement that a reorganisation removes before then is sent again. Default 1.
    #[serde(default = "default_confirmations")]
    #[schemars(range(min = 1, max = 128))]
    pub confirmations: u32,
    /// Most blocks one event query (`eth_getLogs`) spans; public RPCs refuse large ranges.
    /// Default 5000.
    #[serde(default = "default_log_block_range")]
    #[schemars(range(min = 1, max = 1000000))]
    pub log_block_range: u32,
}

fn default_lock_grace() -> KubeDuration {
    KubeDuration::from_secs(3600)
}

fn default_tx_timeout() -> KubeDuration {
    KubeDuration::from_secs(60)
}

fn default_confirmations() -> u32 {
    1
}

fn default_log_block_range() -> u32 {
    5000
}

/// A key in a Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Namespace of the Secret. For `hubKeySecretRef`: the hub's own namespace (where the hub chart
    /// is installed), the only one where the hub may read Secrets; the hub refuses any other.
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Binds a tenant namespace to the payer account its jobs spend.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PayerBinding {
    /// The tenant namespace on the hub.
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub namespace: String,
    /// The payer's account in the JobEscrow contract.
    pub account: EvmAddress,
}

/// Observed state of a pool, rolled up from its members.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GpuPoolStatus {
    /// Number of MemberClusters in this pool.
    #[serde(default)]
    pub members: u32,
    /// Number of members that are Ready.
    #[serde(default)]
    pub ready_members: u32,
    /// GPUs allocatable across Ready members.
    #[serde(default)]
    pub total_gpus: u32,
    /// GPUs free across Ready members.
    #[serde(default)]
    pub free_gpus: u32,
    /// Capacity and prices per GPU model across Ready members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["model".into()]))]
    pub capacity: Vec<ModelCapacity>,
    /// ComputeJobs of this pool waiting for a cluster.
    #[serde(default)]
    pub pending_jobs: u32,
    /// ComputeJobs of this pool placed or running.
    #[serde(default)]
    pub running_jobs: u32,
    /// When the roll-up was computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    /// The generation of the spec this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The hub's settlement account on the pool's chain: the account payers authorise to lock
    /// their deposits (`kubectl gpufed authorise`), and the signer of usage receipts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_account: Option<String>,
    /// GPUs each namespace with a quota holds per group, as of the last scheduling pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quota_usage: Vec<QuotaUsage>,
    /// What deleted jobs used in the current periods, per namespace, GPU model and period: kept
    /// by the hub when it releases a deleted job, so deleting finished jobs does not reset a
    /// GPU-hours or spend quota (ADR 0019). Entries of ended periods are dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quota_ledger: Vec<QuotaLedgerEntry>,
    /// Pool GPU-hours allocated ÷ available over a recent window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization: Option<Utilization>,
    /// With fair sharing: each namespace's weight, GPUs held and dominant share, from the last
    /// scheduling pass that had pending jobs or the last roll-up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<NamespaceShare>,
    /// The clearing-price index: per GPU model, the prices the pool's latest placements were
    /// made at (what each job pays per GPU-hour, frozen in its attempt), oldest first, at most
    /// [`CLEARING_HISTORY`] per model (ADR 0024). `kubectl gpufed market` prints it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["model".into()]))]
    pub clearing_prices: Vec<ModelClearing>,
    /// Conditions: ChainReady.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// One namespace's fair share of a pool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceShare {
    /// The namespace.
    pub namespace: String,
    /// Its weight (`spec.fairSharing.weights`, default 1).
    pub weight: u32,
    /// GPUs it holds (placed, starting or running attempts), all models.
    pub gpus: u64,
    /// The GPU model of its dominant share, if it holds any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dominant_model: Option<String>,
    /// Its dominant share in thousandths of that model's capacity in the pool, before weight.
    pub dominant_per_mille: u64,
}

/// Placements kept per model in `status.clearingPrices`.
pub const CLEARING_HISTORY: usize = 20;

/// The clearing prices of one GPU model.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ModelClearing {
    /// Normalised GPU model, e.g. `H100`.
    pub model: String,
    /// Price per GPU-hour of the latest placement.
    pub last: TokenAmount,
    /// Mean price per GPU-hour over `history`, weighted by the GPUs each placement took.
    pub mean: TokenAmount,
    /// The latest placements, oldest first.
    #[schemars(length(max = 20))]
    pub history: Vec<ClearingPoint>,
}

/// One placement in the clearing-price index.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClearingPoint {
    /// When the attempt was placed.
    pub time: Time,
    /// Price per GPU-hour the job pays (the attempt's frozen `pricePerGpuHour`).
    pub price_per_gpu_hour: TokenAmount,
    /// GPUs the attempt took.
    pub gpus: u32,
    /// The member cluster that won it.
    pub cluster: String,
    /// The job, `namespace/name`.
    pub job: String,
    /// The job's attempt number.
    pub attempt: u32,
}

/// One namespace's use of one quota group.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct QuotaUsage {
    /// The tenant namespace.
    pub namespace: String,
    /// The quota group.
    pub group: String,
    /// GPUs held (placed or running jobs).
    pub used: u64,
    /// The group's nominal quota (`spec.quotas[].groups[].gpus`).
    pub limit: u64,
    /// GPUs held beyond `limit`, borrowed from idle quota of the cohort.
    pub borrowed: u64,
    /// The group's period (`spec.quotas[].groups[].period`), when it limits GPU-hours or spend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<QuotaPeriod>,
    /// When the current period started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_start: Option<Time>,
    /// GPU-hours used or committed in the current period (placed and running attempts at their
    /// worst case), two decimals, e.g. `7.50`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_hours_used: Option<String>,
    /// The group's GPU-hours per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_hours_limit: Option<u32>,
    /// Tokens settled or locked in the current period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent: Option<TokenAmount>,
    /// The group's tokens per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend_limit: Option<TokenAmount>,
}

/// What the deleted jobs of one namespace used of one GPU model in the current period.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QuotaLedgerEntry {
    /// The tenant namespace.
    pub namespace: String,
    /// The GPU model the jobs' attempts ran on (counted in the quota group naming it).
    pub model: String,
    /// The period counted.
    pub period: QuotaPeriod,
    /// When the period started; the entry is dropped once it has ended.
    pub period_start: Time,
    /// GPU-seconds the deleted jobs used inside the period.
    #[serde(default)]
    pub gpu_seconds: u64,
    /// Tokens the deleted jobs paid, for attempts placed in the period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent: Option<TokenAmount>,
    /// UIDs of the deleted jobs counted here whose object may still exist (their finalizer not
    /// yet removed): a job is counted once, and its live attempts no longer. Dropped once the job
    /// is gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<String>,
}

/// GPU-hours allocated to jobs ÷ GPU-hours available, over a window ending at the last roll-up.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Utilization {
    /// The window, e.g. `1h` (shorter while the hub has been up less long).
    pub window: String,
    /// GPU-seconds allocated (GPUs of Ready members not free, integrated over the window).
    pub allocated_gpu_seconds: u64,
    /// GPU-seconds available (allocatable GPUs of Ready members, integrated over the window).
    pub available_gpu_seconds: u64,
    /// allocated ÷ available in percent, rounded down; 0 when nothing was available.
    pub percent: u32,
}

/// Capacity and price index of one GPU model in a pool.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ModelCapacity {
    /// Normalised GPU model, e.g. `H100`.
    pub model: String,
    /// Clusters offering this model.
    pub clusters: u32,
    /// Allocatable GPUs of this model.
    pub total_gpus: u32,
    /// Free GPUs of this model.
    pub free_gpus: u32,
    /// Lowest price per GPU-hour asked for this model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_price: Option<TokenAmount>,
    /// Highest price per GPU-hour asked for this model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price: Option<TokenAmount>,
    /// Price index: average price per GPU-hour weighted by free GPUs (by total GPUs when none are free).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_index: Option<TokenAmount>,
}

#[cfg(test)]
mod priority_tests {
    use super::*;

    fn spec(classes: &[(&str, i32, &[&str])]) -> GpuPoolSpec {
        serde_json::from_value(serde_json::json!({
            "priorityClasses": classes.iter().map(|(n, v, ns)| serde_json::json!({
                "name": n, "value": v, "namespaces": ns
            })).collect::<Vec<_>>()
        }))
        .unwrap()
    }

    #[test]
    fn a_class_gives_its_value_to_the_namespaces_it_is_granted_to() {
        let s = spec(&[("batch", -10, &[]), ("urgent", 500, &["team-a"])]);
        assert_eq!(s.priority_for("team-a", Some("urgent"), 0), Ok(500));
        assert_eq!(s.priority_for("team-b", Some("batch"), 0), Ok(-10));
        let (reason, msg) = s.priority_for("team-b", Some("urgent"), 0).unwrap_err();
        assert_eq!(reason, "PriorityClassNotAllowed");
        assert!(msg.contains("team-b"), "{msg}");
        let (reason, msg) = s.priority_for("team-b", Some("gold"), 0).unwrap_err();
        assert_eq!(reason, "PriorityClassNotFound");
        assert!(msg.contains("may use: batch"), "{msg}");
        assert_eq!(
            s.priority_for("team-a", Some("urgent"), 7).unwrap_err().0,
            "PriorityConflict"
        );
    }

    #[test]
    fn a_raw_priority_may_not_exceed_the_namespaces_highest_class_or_zero() {
        let s = spec(&[("urgent", 500, &["team-a"])]);
        assert_eq!(s.priority_for("team-a", None, 500), Ok(500));
        assert_eq!(
            s.priority_for("team-a", None, 501).unwrap_err().0,
            "PriorityAboveCeiling"
        );
        // team-b has no class: nothing above 0; lowering one's own priority is always allowed.
        assert_eq!(
            s.priority_for("team-b", None, 1).unwrap_err().0,
            "PriorityAboveCeiling"
        );
        assert_eq!(s.priority_for("team-b", None, -300), Ok(-300));
        assert_eq!(spec(&[]).priority_for("any", None, 0), Ok(0));
        assert_eq!(
            spec(&[]).priority_for("any", None, 1000).unwrap_err().0,
            "PriorityAboveCeiling"
        );
    }
}

#[cfg(test)]
mod preemption_tests {
    use super::*;

    fn spec(pool: serde_json::Value) -> GpuPoolSpec {
        serde_json::from_value(pool).unwrap()
    }

    #[test]
    fn a_job_preempts_only_if_the_pool_allows_it_and_its_class_does_not_forbid_it() {
        let classes = serde_json::json!([
            {"name": "urgent", "value": 500},
            {"name": "polite", "value": 400, "preemptionPolicy": "Never"},
        ]);
        let off = spec(serde_json::json!({ "priorityClasses": classes }));
        assert_eq!(off.preemption, Preemption::Never);
        assert!(!off.may_preempt(Some("urgent")));
        assert!(!off.may_preempt(None));
        let on = spec(serde_json::json!({
            "priorityClasses": classes, "preemption": "LowerPriority"
        }));
        assert!(on.may_preempt(Some("urgent")));
        assert!(!on.may_preempt(Some("polite")));
        assert!(!on.may_preempt(Some("unknown")));
        assert!(on.may_preempt(None));
    }

    #[test]
    fn reclaim_within_cohort_defaults_to_never_and_stays_out_of_the_serialised_spec() {
        let s = spec(serde_json::json!({}));
        assert_eq!(s.reclaim_within_cohort, ReclaimWithinCohort::Never);
        assert!(
            serde_json::to_value(&s)
                .unwrap()
                .get("reclaimWithinCohort")
                .is_none()
        );
        for (name, want) in [
            ("LowerPriority", ReclaimWithinCohort::LowerPriority),
            ("Any", ReclaimWithinCohort::Any),
        ] {
            let s = spec(serde_json::json!({ "reclaimWithinCohort": name }));
            assert_eq!(s.reclaim_within_cohort, want);
        }
        assert!(
            serde_json::from_value::<GpuPoolSpec>(
                serde_json::json!({"reclaimWithinCohort": "Always"})
            )
            .is_err()
        );
    }

    #[test]
    fn the_grace_period_defaults_to_30s_and_defaults_stay_out_of_the_serialised_spec() {
        let s = spec(serde_json::json!({ "priorityClasses": [{"name": "a", "value": 1}] }));
        assert_eq!(s.preemption_grace_period(), KubeDuration::from_secs(30));
        let json = serde_json::to_value(&s).unwrap();
        assert!(json.get("preemption").is_none(), "{json}");
        assert!(json["priorityClasses"][0].get("preemptionPolicy").is_none());
        let set = spec(serde_json::json!({ "preemptionGracePeriod": "5s" }));
        assert_eq!(set.preemption_grace_period(), KubeDuration::from_secs(5));
    }
}

fn default_true() -> bool {
    true
}
