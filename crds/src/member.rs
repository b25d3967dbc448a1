//! `MemberCluster`: a provider's cluster in a pool. The admin writes the spec (pool, wallet, region,
//! prices, cordon); the member's agent writes the inventory; the hub writes heartbeat and conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::units::{EvmAddress, KubeDuration, TokenAmount};
use crate::workload::DNS_LABEL_PATTERN;

/// Pattern of a normalised GPU model name such as `H100`, `A100`, `RTX4090`.
pub const MODEL_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9._-]*$";

/// A provider's GPU cluster that has joined (or is joining) a pool.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gpufed.io",
    version = "v1alpha1",
    kind = "MemberCluster",
    plural = "memberclusters",
    shortname = "mc",
    shortname = "member",
    category = "gpufed",
    status = "MemberClusterStatus",
    derive = "PartialEq",
    doc = "A provider's GPU cluster in a pool: where it is, what it charges, and (in status) what it has free and whether it is healthy.",
    validation = kube::core::Rule::new("size(self.metadata.name) <= 49 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name must be a DNS label of at most 49 characters, so that the member namespace gpufed-member-<name> is valid"),
    printcolumn(name = "Pool", type_ = "string", json_path = ".spec.pool"),
    printcolumn(name = "Region", type_ = "string", json_path = ".spec.region"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Models", type_ = "string", json_path = ".status.modelSummary"),
    printcolumn(name = "GPUs", type_ = "integer", json_path = ".status.totalGpus"),
    printcolumn(name = "Free", type_ = "integer", json_path = ".status.freeGpus"),
    printcolumn(name = "Cordoned", type_ = "boolean", json_path = ".spec.cordoned", priority = 1),
    printcolumn(name = "Heartbeat", type_ = "date", json_path = ".status.lastHeartbeatTime", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MemberClusterSpec {
    /// Name of the GpuPool this cluster joins. Immutable: leave and re-join to change pools.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec.pool is immutable; delete the MemberCluster and create it in the other pool"))]
    pub pool: String,
    /// Region of the cluster, e.g. `eu-west`; jobs can require regions.
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub region: String,
    /// The provider's account: receives payments and holds the bond. Required in pools with a chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet: Option<EvmAddress>,
    /// Human-readable provider name shown in tables and explanations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub display_name: Option<String>,
    /// Price per GPU-hour for each GPU model offered. GPUs of a model without a price are not offered.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["model".into()]))]
    pub prices: Vec<ModelPrice>,
    /// When true, no new jobs are placed here; running jobs continue (like `kubectl cordon`).
    #[serde(default)]
    pub cordoned: bool,
}

/// The price of one GPU model, and optionally how many of its GPUs are offered and for which job
/// durations.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.minDuration) || !has(self.maxDuration) || duration(self.minDuration) <= duration(self.maxDuration)").message("prices[].minDuration must not be above prices[].maxDuration"))]
pub struct ModelPrice {
    /// Normalised GPU model, e.g. `H100`, `A100`, `L4`, `RTX4090` (as gpu-probe labels nodes).
    #[schemars(length(min = 1, max = 64), pattern(MODEL_PATTERN))]
    pub model: String,
    /// Price per GPU-hour in tokens, e.g. `"2.40"`.
    pub price_per_gpu_hour: TokenAmount,
    /// At most this many GPUs of the model are offered to the pool at once: GPUs held by the
    /// pool's attempts of this model on the cluster count against it, and no more are placed
    /// beyond it. Absent: every free GPU of the model. 1 to 100000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000))]
    pub gpus: Option<u32>,
    /// The shortest job (its `maxDuration`) the model's GPUs take, e.g. `10m`. Absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_duration: Option<KubeDuration>,
    /// The longest job (its `maxDuration`) the model's GPUs take, e.g. `24h`. Absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<KubeDuration>,
}

impl ModelPrice {
    /// `model` at `price`, with no GPU count or duration limits.
    pub fn new(model: impl Into<String>, price: TokenAmount) -> ModelPrice {
        ModelPrice {
            model: model.into(),
            price_per_gpu_hour: price,
            gpus: None,
            min_duration: None,
            max_duration: None,
        }
    }

    /// Whether a job of `max_duration_secs` is within the offer's duration limits.
    pub fn takes_duration(&self, max_duration_secs: u64) -> bool {
        self.min_duration
            .is_none_or(|d| d.as_secs_ceil() <= max_duration_secs)
            && self
                .max_duration
                .is_none_or(|d| max_duration_secs <= d.as_secs_ceil())
    }
}

/// The EIP-712 domain and fields of a member's signed Offer, as the hub checks them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OfferSigning {
    /// The pool name that is signed.
    pub pool: String,
    /// The domain's chain id.
    pub chain_id: u64,
    /// The domain's verifying contract: the pool's ProviderBond (its JobEscrow without one).
    pub verifying_contract: EvmAddress,
    /// The wallet that must sign (`spec.wallet`).
    pub wallet: EvmAddress,
}

impl std::str::FromStr for ModelPrice {
    type Err = String;

    /// `MODEL=PRICE[,gpus=N][,minDuration=D][,maxDuration=D]`, e.g. `H100=2.40` or
    /// `H100=2.40,gpus=8,maxDuration=24h` (the agent's `--offer`, the plugin's `--price`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.split(',');
        let head = parts.next().unwrap_or_default();
        let (model, price) = head.split_once('=').ok_or_else(|| {
            format!(
                "{text:?}: expected MODEL=PRICE[,gpus=N][,minDuration=D][,maxDuration=D], e.g. H100=2.40"
            )
        })?;
        let valid_model = !model.is_empty()
            && model.len() <= 64
            && model
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            && model.starts_with(|c: char| c.is_ascii_alphanumeric());
        if !valid_model {
            return Err(format!(
                "{text:?}: {model:?} is not a GPU model name such as H100"
            ));
        }
        let price = price
            .parse()
            .map_err(|e| format!("{text:?}: price per GPU-hour: {e}"))?;
        let mut offer = ModelPrice::new(model, price);
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{text:?}: {part:?} is not KEY=VALUE"))?;
            let duration = || {
                value
                    .parse::<KubeDuration>()
                    .map_err(|e| format!("{text:?}: {key}: {e}"))
            };
            match key {
                "gpus" => {
                    let n: u32 = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=100_000).contains(n))
                        .ok_or_else(|| {
                            format!("{text:?}: gpus must be a whole number from 1 to 100000")
                        })?;
                    offer.gpus = Some(n);
                }
                "minDuration" => offer.min_duration = Some(duration()?),
                "maxDuration" => offer.max_duration = Some(duration()?),
                other => {
                    return Err(format!(
                        "{text:?}: unknown {other:?}; use gpus, minDuration or maxDuration"
                    ));
                }
            }
        }
        if let (Some(min), Some(max)) = (offer.min_duration, offer.max_duration)
            && min.as_secs_ceil() > max.as_secs_ceil()
        {
            return Err(format!("{text:?}: minDuration is above maxDuration"));
        }
        Ok(offer)
    }
}

/// Observed state of a member cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MemberClusterStatus {
    /// The member's namespace on the hub, where its Placements and heartbeat Lease live (hub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Hub Secret with the kubeconfig to pass to the member chart (hub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// Last renewal of the member's heartbeat Lease as seen by the hub, refreshed every 5 minutes
    /// while the member stays Ready and exact once it is not (the Lease has every renewal) (hub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<Time>,
    /// The pool's heartbeat timeout, copied here so the agent can fence itself before it runs out (hub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout: Option<KubeDuration>,
    /// Where the member's wallet signs its Offer (pools with a chain, ADR 0024): the agent reads
    /// it here before signing (hub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_signing: Option<OfferSigning>,
    /// The agent's public X25519 key (base64, 32 bytes), to which the hub seals the tenant
    /// Secrets of the Placements it sends this member. A new one at each agent start (agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), pattern(r"^[A-Za-z0-9+/]{43}=$"))]
    pub sealing_key: Option<String>,
    /// Version of the member's agent (agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// GPUs allocatable on healthy nodes (agent).
    #[serde(default)]
    pub total_gpus: u32,
    /// GPUs not requested by running pods (agent).
    #[serde(default)]
    pub free_gpus: u32,
    /// Short summary of models for tables, e.g. `H100x16,L4x8` (agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_summary: Option<String>,
    /// Per-node GPU inventory, the scheduler's input (agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Inventory>,
    /// Placements of this member not yet finished, counted when the status was last written:
    /// refreshed with `lastHeartbeatTime`, or at once with any other change (hub).
    #[serde(default)]
    pub active_placements: u32,
    /// The generation of the spec this status reflects (hub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The latest verdict of the pool's GPU challenges on this member (hub, ADR 0027).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<MemberVerification>,
    /// The latest slash the hub proposed or decided on a failed verdict of this member (hub,
    /// pools with `spec.verification.slash`, ADR 0023).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slash: Option<MemberSlash>,
    /// How the member has done over the pool's reputation window: challenge verdicts, tenant
    /// attempts that ended on it and whose fault it was, and its uptime (hub, recomputed every
    /// minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reputation: Option<MemberReputation>,
    /// Times the member was not Ready within its pool's reputation window, oldest first, as the
    /// hub's member controller declared them (at most 50, the newest; an open one has no `end`)
    /// (hub).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub outages: Vec<Outage>,
    /// Conditions: Joined, Ready, Bonded, Schedulable, Verified (hub).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// A member's record over the pool's reputation window (`GpuPool.spec.reputationWindow`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemberReputation {
    /// The window the figures cover, ending at `updated` (from when the member joined, if later).
    pub window: KubeDuration,
    /// When the hub computed these figures.
    pub updated: Time,
    /// Challenge verdicts in the window that passed.
    #[serde(default)]
    pub challenges_passed: u32,
    /// Challenge verdicts in the window that failed (wrong, late, too few GPUs, no answer, ...).
    #[serde(default)]
    pub challenges_failed: u32,
    /// Tenant attempts that ended in the window on this member and succeeded (of the jobs still
    /// on the hub).
    #[serde(default)]
    pub attempts_succeeded: u32,
    /// Tenant attempts that ended in the window through the member's fault: lost with it, fenced,
    /// their lease or local Job gone, a gang it could not schedule, Secrets it could not open.
    #[serde(default)]
    pub attempts_failed_by_member: u32,
    /// Tenant attempts that failed in the window for their own reasons (the workload's exit code,
    /// its inputs or outputs, a start timeout): not held against the member.
    #[serde(default)]
    pub attempts_failed_otherwise: u32,
    /// Share of the window the member was Ready, in percent (rounded down), from `outages`.
    pub uptime_percent: u32,
}

impl MemberReputation {
    /// Passed ÷ judged challenges in percent, `None` when none was judged.
    pub fn challenge_pass_percent(&self) -> Option<u32> {
        percent(
            self.challenges_passed,
            self.challenges_passed + self.challenges_failed,
        )
    }

    /// Succeeded ÷ (succeeded + failed by the member) attempts in percent, `None` when none.
    pub fn attempt_success_percent(&self) -> Option<u32> {
        percent(
            self.attempts_succeeded,
            self.attempts_succeeded + self.attempts_failed_by_member,
        )
    }
}

fn percent(part: u32, whole: u32) -> Option<u32> {
    (whole > 0).then(|| u32::try_from(u64::from(part) * 100 / u64::from(whole)).unwrap_or(100))
}

/// A time a member was not Ready.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Outage {
    /// When the hub declared it not Ready.
    pub start: Time,
    /// When the hub declared it Ready again; absent while it lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Time>,
}

/// Outcome of a challenge.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum VerificationVerdict {
    /// The answer was checked and within the deadline and time band.
    Passed,
    /// The answer was wrong, late, for too few GPUs, malformed, or missing.
    Failed,
}

/// The latest challenge verdict of a member.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemberVerification {
    /// `Passed` or `Failed`.
    pub verdict: VerificationVerdict,
    /// Why, in one word: `Verified`, `WrongResult`, `TooSlow`, `DeadlineExceeded`, `TooFewGpus`,
    /// `DuplicateGpu`, `WrongChallenge`, `Malformed`, `NoAnswer`, ...
    pub reason: String,
    /// Why, in a sentence.
    #[schemars(length(max = 1024))]
    pub message: String,
    /// When the hub reached the verdict.
    pub time: Time,
    /// Name of the challenge (the hub's ComputeJob).
    pub challenge: String,
    /// sha256 (hex) of the canonical evidence record, kept in the ConfigMap `evidence`.
    pub evidence_sha256: String,
    /// ConfigMap in the hub's challenge namespace holding the evidence record.
    pub evidence: String,
    /// Fingerprint (sha256 hex, 16 digits) of the GPU inventory the challenge was sent for:
    /// a verdict counts only while the member's inventory still has it.
    pub inventory: String,
    /// GPUs the challenge was given.
    pub gpus: u32,
    /// Normalised GPU model the challenge was given.
    pub model: String,
    /// Seconds from the challenge's Placement being created to its answer, by the hub's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_seconds: Option<u64>,
    /// When the member last passed a challenge (this verdict's time if it passed): the harm of a
    /// failed verdict is counted from there (ADR 0023).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_passed_time: Option<Time>,
}

/// Where a slash of a member stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum SlashPhase {
    /// Frozen on chain; executable after the appeal window unless the provider appeals.
    Proposed,
    /// The provider appealed; the bond contract's referee decides.
    Appealed,
    /// The referee upheld the slash; the hub executes it.
    Upheld,
    /// Paid out to the harmed tenants and the treasury.
    Executed,
    /// Withdrawn, dismissed on appeal or lapsed: the tokens went back to the provider.
    Cancelled,
    /// Not proposed: the contract refused it, the provider has no wallet or nothing bonded
    /// (the message says which). The verdict stands.
    NotSlashed,
}

impl SlashPhase {
    /// Whether nothing more will happen to this slash.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            SlashPhase::Executed | SlashPhase::Cancelled | SlashPhase::NotSlashed
        )
    }
}

/// A slash of a member, as the hub last saw it on chain.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemberSlash {
    /// Where it stands.
    pub phase: SlashPhase,
    /// The failed challenge (the hub's ComputeJob name).
    pub challenge: String,
    /// Why the challenge failed (the verdict's reason).
    pub reason: String,
    /// sha256 (hex) of the evidence record, the slash's key in the bond contract.
    pub evidence_sha256: String,
    /// Tokens frozen or slashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<TokenAmount>,
    /// Harmed tenants named and what each receives; the rest goes to the treasury.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub tenants: Vec<SlashShare>,
    /// Unix seconds from which the slash can be executed without an appeal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable_at: Option<u64>,
    /// Hash of the proposal transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propose_tx: Option<String>,
    /// Hash of the execution transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execute_tx: Option<String>,
    /// Why, in a sentence.
    #[schemars(length(max = 1024))]
    pub message: String,
    /// When the hub last changed this record.
    pub time: Time,
}

/// One harmed tenant's part of a slash.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SlashShare {
    /// The payer account.
    pub payer: EvmAddress,
    /// Tokens it receives.
    pub amount: TokenAmount,
}

/// The GPU inventory of a member cluster, reported by its agent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// When the agent took this inventory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<Time>,
    /// GPU nodes of the cluster.
    #[serde(default)]
    #[schemars(length(max = 5000))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub nodes: Vec<NodeInventory>,
}

/// The GPUs of one node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeInventory {
    /// Node name.
    pub name: String,
    /// Normalised GPU model of the node's GPUs, e.g. `H100`.
    pub model: String,
    /// Memory per GPU in MiB.
    #[serde(rename = "gpuMemoryMiB")]
    pub gpu_memory_mib: u64,
    /// GPUs the node offers to pods (`nvidia.com/gpu` allocatable).
    pub allocatable_gpus: u32,
    /// Allocatable GPUs not requested by running or pending pods bound to the node.
    pub free_gpus: u32,
    /// GPUs that NVML (or the simulator) reports unhealthy, or all of them while the node's
    /// telemetry is stale; not counted as free.
    #[serde(default)]
    pub unhealthy_gpus: u32,
    /// gpu-probe has not reported for this node within the agent's `--telemetry-max-age`: its GPUs'
    /// health is unknown, so none of them is offered.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub telemetry_stale: bool,
    /// Mean GPU utilisation of the node in percent.
    #[serde(default)]
    pub utilization_percent: u32,
    /// UUIDs of the node's GPUs as gpu-probe reports them in its `GpuNode` status; the hub checks
    /// a challenge's answer against them (ADR 0027). Empty when gpu-probe has not reported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub gpu_uuids: Vec<String>,
    /// The node is Ready and schedulable.
    #[serde(default = "default_true")]
    pub ready: bool,
}

fn default_true() -> bool {
    true
}
