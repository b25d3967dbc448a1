//! `Offer`: a provider's prices, written by the provider's own agent credential into its member
//! namespace on the hub (`gpufed-member-<name>`), so the provider sets and changes its prices
//! without the pool admin (ADR 0024). One per member, named `offer`. When present it replaces the
//! admin-written `MemberCluster.spec.prices` for placements from then on; an attempt already
//! placed keeps the price it was placed at.
//!
//! In a pool that pays on a chain the Offer must be signed by the member's wallet (EIP-712 typed
//! data, [`typed`]): the hub checks the signature, the nonce and the expiry, records its verdict in
//! `status` (condition `Accepted`, and the offer it accepted last), prices the member by the last
//! accepted offer until that expires, and copies the proof into each attempt it places there, so
//! anyone can later show which price the provider offered. In a pool without a chain there is no
//! wallet to sign with: the hub accepts what the member's own credential wrote.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::member::ModelPrice;
use crate::units::EvmAddress;

/// Condition type on an Offer: the hub uses it (signed by the member's wallet, not expired, nonce
/// above the last accepted; or, in a pool without a chain, as written).
pub const ACCEPTED: &str = "Accepted";
/// Pattern of a 65-byte secp256k1 signature in hex (r, s, v).
pub const SIGNATURE_PATTERN: &str = "^0x[0-9a-fA-F]{130}$";

/// The only name the hub reads an Offer under, one per member namespace.
pub const OFFER_NAME: &str = "offer";

/// A provider's offer: its price per GPU-hour for each GPU model it offers.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gpufed.io",
    version = "v1alpha1",
    kind = "Offer",
    plural = "offers",
    namespaced,
    shortname = "gpuoffer",
    category = "gpufed",
    derive = "PartialEq",
    doc = "A provider's prices per GPU model, written by its own agent credential into its member namespace on the hub; replaces MemberCluster.spec.prices for new placements.",
    status = "OfferStatus",
    validation = kube::core::Rule::new("self.metadata.name == 'offer'").message("metadata.name must be 'offer': the hub reads one Offer per member namespace, named offer"),
    printcolumn(name = "Models", type_ = "string", json_path = ".spec.prices[*].model"),
    printcolumn(name = "Prices", type_ = "string", json_path = ".spec.prices[*].pricePerGpuHour"),
    printcolumn(name = "Accepted", type_ = "string", json_path = ".status.conditions[?(@.type==\"Accepted\")].status"),
    printcolumn(name = "Nonce", type_ = "integer", json_path = ".spec.nonce", priority = 1),
    printcolumn(name = "Expires", type_ = "string", json_path = ".spec.expires", priority = 1),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Accepted\")].reason", priority = 1),
    printcolumn(name = "Generation", type_ = "integer", json_path = ".metadata.generation", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.signature) || (has(self.nonce) && has(self.expires))").message("spec.signature needs spec.nonce and spec.expires: they are signed with the prices"))]
pub struct OfferSpec {
    /// Price per GPU-hour for each GPU model offered. GPUs of a model without a price are not
    /// offered. 1 to 32 models. The order is part of what is signed.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["model".into()]))]
    pub prices: Vec<ModelPrice>,
    /// A number the signer raises with every new signed offer; the hub accepts an offer only if
    /// its nonce is above the last accepted one, so an older signed offer cannot be replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<u64>,
    /// When the signed offer stops being valid; the hub prices the member by it until then
    /// (whole seconds are signed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Time>,
    /// The member wallet's 65-byte secp256k1 signature of the offer's EIP-712 digest (hex with
    /// `0x`). Required in pools that pay on a chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(SIGNATURE_PATTERN))]
    pub signature: Option<String>,
}

/// What the hub made of an Offer (written by the hub only; the member's credential cannot).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct OfferStatus {
    /// `Accepted`: whether the hub uses the current spec, with the reason (`Accepted`,
    /// `Unsigned`, `BadSignature`, `WrongSigner`, `Expired`, `NonceReused`, `NoWallet`) and what
    /// to do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The offer the hub accepted last: the member is priced by it until it expires, also while
    /// a later spec is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<SignedOffer>,
}

/// An offer as accepted, with what proves it: enough to recompute its EIP-712 digest and recover
/// the wallet that signed it. Also copied into each attempt placed at its prices.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SignedOffer {
    /// The prices offered, in the signed order.
    pub prices: Vec<ModelPrice>,
    /// The signed nonce (absent for an unsigned offer in a pool without a chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<u64>,
    /// The signed expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Time>,
    /// The EIP-712 digest the wallet signed (hex with `0x`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The wallet the signature recovers to (the member's `spec.wallet` when it was accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<EvmAddress>,
    /// The Offer's `metadata.generation` that was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

/// Whether an offer that `expires` is past its expiry at `now_secs` (Unix seconds): at its expiry
/// second it no longer counts; an offer without one never expires.
pub fn expired(expires: Option<&Time>, now_secs: i64) -> bool {
    expires.is_some_and(|t| t.0.as_second() <= now_secs)
}

impl SignedOffer {
    /// Whether it is past its expiry at `now_secs` (Unix seconds); see [`expired`].
    pub fn expired_at(&self, now_secs: i64) -> bool {
        expired(self.expires.as_ref(), now_secs)
    }
}

/// The EIP-712 typed data of an offer, shared by the agent (which signs) and the hub (which
/// checks), in the same domain as join and leave requests ([`crate::join::typed::domain`]): chain
/// id and the pool's ProviderBond contract (its JobEscrow in a pool without a bond contract).
#[cfg(feature = "eip712")]
pub mod typed {
    use alloy::primitives::{Address, B256};
    use alloy::sol_types::SolStruct as _;

    use crate::join::typed::{ModelPrice, domain, model_price, recover};

    alloy::sol! {
        /// What a member's wallet signs to offer its GPUs at these prices.
        struct Offer {
            string pool;
            string cluster;
            ModelPrice[] prices;
            uint64 nonce;
            uint64 expires;
        }
    }

    /// The fields of an offer that are signed.
    #[derive(Clone, Debug, PartialEq)]
    pub struct OfferFields<'a> {
        /// The member's pool.
        pub pool: &'a str,
        /// The member.
        pub cluster: &'a str,
        /// Prices, in their order.
        pub prices: &'a [crate::member::ModelPrice],
        /// Nonce.
        pub nonce: u64,
        /// Expiry, Unix seconds.
        pub expires: u64,
    }

    /// The EIP-712 digest the wallet signs.
    pub fn signing_hash(fields: &OfferFields<'_>, chain_id: u64, verifying: Address) -> B256 {
        Offer {
            pool: fields.pool.to_string(),
            cluster: fields.cluster.to_string(),
            prices: fields.prices.iter().map(model_price).collect(),
            nonce: fields.nonce,
            expires: fields.expires,
        }
        .eip712_signing_hash(&domain(chain_id, verifying))
    }

    /// Who signed the offer `fields` with `signature`, and the digest; or why that cannot be
    /// told (a malformed signature).
    pub fn signer(
        fields: &OfferFields<'_>,
        signature: &str,
        chain_id: u64,
        verifying: Address,
    ) -> Result<(Address, B256), String> {
        let digest = signing_hash(fields, chain_id, verifying);
        recover(signature, &digest).map(|a| (a, digest))
    }
}
