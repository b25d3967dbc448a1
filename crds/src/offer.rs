//! `Offer`: a provider's prices, written by the provider's own agent credential into its member
//! namespace on the hub (`gpufed-member-<name>`), so the provider sets and changes its prices
//! without the pool admin (ADR 0024). One per member, named `offer`. When present it replaces the
//! admin-written `MemberCluster.spec.prices` for placements from then on; an attempt already
//! placed keeps the price it was placed at.
//!
//! Signing by the provider's wallet (EIP-712) is designed in ADR 0024 and not built: today an
//! Offer is authenticated by who may write it (the member's Role), not by a signature.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::member::ModelPrice;

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
    validation = kube::core::Rule::new("self.metadata.name == 'offer'").message("metadata.name must be 'offer': the hub reads one Offer per member namespace, named offer"),
    printcolumn(name = "Models", type_ = "string", json_path = ".spec.prices[*].model"),
    printcolumn(name = "Prices", type_ = "string", json_path = ".spec.prices[*].pricePerGpuHour"),
    printcolumn(name = "Generation", type_ = "integer", json_path = ".metadata.generation", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct OfferSpec {
    /// Price per GPU-hour for each GPU model offered. GPUs of a model without a price are not
    /// offered. 1 to 32 models.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["model".into()]))]
    pub prices: Vec<ModelPrice>,
}
