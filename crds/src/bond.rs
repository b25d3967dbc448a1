//! `ProviderBond`: the hub's mirror of a provider's on-chain stake in the ProviderBond contract.
//! The hub creates one per member of a pool with a chain and keeps its status in step with the
//! chain; the scheduler's bond filter reads `status.eligible`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::units::{EvmAddress, TokenAmount};

/// A provider's on-chain bond, mirrored from the chain.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gpufed.io",
    version = "v1alpha1",
    kind = "ProviderBond",
    plural = "providerbonds",
    shortname = "pbond",
    category = "gpufed",
    status = "ProviderBondStatus",
    derive = "PartialEq",
    doc = "Mirror of a provider's stake in the ProviderBond contract: bonded and required amounts, eligibility, slashes.",
    printcolumn(name = "Member", type_ = "string", json_path = ".spec.memberCluster"),
    printcolumn(name = "Bonded", type_ = "string", json_path = ".status.bonded"),
    printcolumn(name = "Required", type_ = "string", json_path = ".status.required"),
    printcolumn(name = "Eligible", type_ = "boolean", json_path = ".status.eligible"),
    printcolumn(
        name = "Slashed",
        type_ = "string",
        json_path = ".status.slashedTotal",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ProviderBondSpec {
    /// The MemberCluster whose provider this bond belongs to.
    #[schemars(length(min = 1, max = 49))]
    pub member_cluster: String,
    /// The GpuPool whose minimum bond applies.
    #[schemars(length(min = 1, max = 253))]
    pub pool: String,
    /// The provider's account (the MemberCluster's wallet).
    pub provider: EvmAddress,
}

/// On-chain bond state as last read by the hub.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProviderBondStatus {
    /// Tokens staked and not unbonding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bonded: Option<TokenAmount>,
    /// Tokens waiting out the unbonding delay (still slashable, not counted for eligibility).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unbonding: Option<TokenAmount>,
    /// When the unbonding tokens can be withdrawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unbonding_release_time: Option<Time>,
    /// The pool's minimum bond.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<TokenAmount>,
    /// Bonded ≥ required: the provider may receive jobs.
    #[serde(default)]
    pub eligible: bool,
    /// Total slashed so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slashed_total: Option<TokenAmount>,
    /// Slashes seen on chain, newest last (at most 50 kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub slashes: Vec<SlashRecord>,
    /// Last successful read of the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// Block number of that read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_block: Option<u64>,
    /// Conditions: Eligible.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// One slash of a provider's bond.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SlashRecord {
    /// Tokens slashed.
    pub amount: TokenAmount,
    /// Hash of the evidence the arbiter gave (0x-hex).
    pub evidence_hash: String,
    /// Transaction that slashed.
    pub tx_hash: String,
    /// Block of that transaction.
    pub block_number: u64,
}
