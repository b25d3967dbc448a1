//! `kubectl gpufed claim`: a provider submits the usage receipts the hub signed for its member's
//! ended attempts (annotation `gpufed.io/usage-receipt` on each Placement) to the escrow itself,
//! with `JobEscrow.claim(jobId, paid, signer, signature)`. The escrow pays the lock's provider
//! exactly as a settlement would, once: a lock the hub settled in the meantime is skipped.

use std::str::FromStr;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::ProviderBuilder;
use alloy::signers::local::PrivateKeySigner;
use gpufed_crds::ClaimableReceipt;
use gpufed_crds::naming::ANNOTATION_USAGE_RECEIPT;
use kube::ResourceExt;

use crate::cli::ClaimArgs;
use crate::connect::Hub;
use crate::error::{Error, Result};
use crate::fetch;

alloy::sol! {
    #[sol(rpc)]
    interface IClaimEscrow {
        function getLock(bytes32 jobId) external view
            returns (address payer, address provider, uint128 amount, uint64 deadline, uint8 state);
        function claim(bytes32 jobId, uint256 paid, address signer, bytes signature) external;
    }
}

fn chain_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Chain(format!("{what}: {e}"))
}

/// The receipts on `placements`: (placement name, receipt), skipping malformed annotations.
pub fn receipts(placements: &[gpufed_crds::Placement]) -> Vec<(String, ClaimableReceipt)> {
    placements
        .iter()
        .filter_map(|p| {
            let raw = p.annotations().get(ANNOTATION_USAGE_RECEIPT)?;
            let r = serde_json::from_str::<ClaimableReceipt>(raw).ok()?;
            Some((p.name_any(), r))
        })
        .collect()
}

/// The receipts the agent kept in its ConfigMap: (lock id, receipt), skipping malformed entries.
pub fn kept(cm: &k8s_openapi::api::core::v1::ConfigMap) -> Vec<(String, ClaimableReceipt)> {
    cm.data
        .iter()
        .flatten()
        .filter_map(|(k, raw)| Some((k.clone(), serde_json::from_str(raw).ok()?)))
        .collect()
}

/// Name of the ConfigMap in which the member agent keeps the receipts.
pub const RECEIPTS_CONFIGMAP: &str = "gpufed-usage-receipts";

/// Runs `claim` and returns what to print: one line per receipt.
pub async fn run(hub: &Hub, args: &ClaimArgs) -> Result<String> {
    let (found, source) = match &args.member {
        Some(member) => (
            receipts(&fetch::placements(hub, member).await?),
            format!("the Placements of member {member}"),
        ),
        None => {
            let cm = fetch::configmap(hub, &hub.namespace, RECEIPTS_CONFIGMAP).await?;
            (
                kept(&cm),
                format!("ConfigMap {}/{RECEIPTS_CONFIGMAP}", hub.namespace),
            )
        }
    };
    if found.is_empty() {
        return Ok(format!("no usage receipts in {source}: nothing to claim\n"));
    }
    let key = std::fs::read_to_string(&args.key_file).map_err(|e| {
        Error::Chain(format!(
            "cannot read --key-file {}: {e}",
            args.key_file.display()
        ))
    })?;
    let signer = PrivateKeySigner::from_str(key.trim()).map_err(|_| {
        Error::Chain(format!(
            "--key-file {} does not hold a hex private key",
            args.key_file.display()
        ))
    })?;
    let mut out = String::new();
    for (placement, r) in found {
        let url = args.rpc_url.clone().unwrap_or_else(|| r.rpc_url.clone());
        let url = url
            .parse()
            .map_err(|e| chain_err(&format!("RPC URL {url:?}"), e))?;
        let mut wallet_signer = signer.clone();
        alloy::signers::Signer::set_chain_id(&mut wallet_signer, Some(r.chain_id));
        let provider = ProviderBuilder::new()
            .wallet(EthereumWallet::from(wallet_signer))
            .connect_http(url);
        let escrow = Address::from_str(&r.escrow).map_err(|e| chain_err("receipt escrow", e))?;
        let id = B256::from_str(&r.job_id).map_err(|e| chain_err("receipt jobId", e))?;
        let paid = U256::from_str_radix(&r.receipt.paid_base_units, 10)
            .map_err(|e| chain_err("receipt paidBaseUnits", e))?;
        let hub_signer =
            Address::from_str(&r.receipt.signer).map_err(|e| chain_err("receipt signer", e))?;
        let sig = alloy::hex::decode(&r.receipt.signature)
            .map_err(|e| chain_err("receipt signature", e))?;
        let c = IClaimEscrow::new(escrow, &provider);
        let lock = c
            .getLock(id)
            .call()
            .await
            .map_err(|e| chain_err("reading the lock", e))?;
        let state = match lock.state {
            1 => None,
            2 => Some("already settled"),
            3 => Some("expired by its payer"),
            _ => Some("no lock on chain"),
        };
        if let Some(why) = state {
            out.push_str(&format!("{placement}: {} {why}: skipped\n", r.job_id));
            continue;
        }
        if args.dry_run {
            out.push_str(&format!(
                "{placement}: {} claimable: {paid} base units to {}\n",
                r.job_id, lock.provider
            ));
            continue;
        }
        let call = c.claim(id, paid, hub_signer, Bytes::from(sig));
        let pending = call
            .send()
            .await
            .map_err(|e| chain_err(&format!("claiming {}", r.job_id), e))?;
        let receipt = pending
            .get_receipt()
            .await
            .map_err(|e| chain_err(&format!("claiming {}", r.job_id), e))?;
        if !receipt.status() {
            return Err(Error::Chain(format!(
                "claim of {} reverted (tx {})",
                r.job_id, receipt.transaction_hash
            )));
        }
        out.push_str(&format!(
            "{placement}: {} claimed: {paid} base units to {} (tx {})\n",
            r.job_id, lock.provider, receipt.transaction_hash
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(name: &str, annotation: Option<&str>) -> gpufed_crds::Placement {
        let mut p: gpufed_crds::Placement = serde_json::from_value(serde_json::json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "Placement",
            "metadata": {"name": name, "namespace": "gpufed-member-alpha"},
            "spec": {"job": {"uid": "u"}, "attempt": 1,
                     "cluster": "alpha", "replicas": 1, "gpusPerReplica": 1, "totalGpus": 1,
                     "model": "H100", "pricePerGpuHour": "1", "maxDuration": "1h",
                     "template": {"containers": [{"name": "main", "image": "busybox"}]}}
        }))
        .unwrap();
        if let Some(a) = annotation {
            p.metadata.annotations = Some(
                [(ANNOTATION_USAGE_RECEIPT.to_string(), a.to_string())]
                    .into_iter()
                    .collect(),
            );
        }
        p
    }

    #[test]
    fn receipts_are_read_from_the_placements_annotation_and_bad_ones_skipped() {
        let good = r#"{"chainId":31337,"rpcUrl":"http://127.0.0.1:8545","escrow":"0xe7f1725e7734ce288f8367e1bb143e90bb3f0512","jobId":"0x01","paidBaseUnits":"42","signer":"0x976EA74026E726554dB657fA54763abd0C3a0aa9","signature":"0xab"}"#;
        let found = receipts(&[
            placement("a", Some(good)),
            placement("b", None),
            placement("c", Some("not json")),
        ]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "a");
        assert_eq!(found[0].1.receipt.paid_base_units, "42");
        assert_eq!(found[0].1.chain_id, 31337);
    }
}

#[cfg(test)]
mod kept_tests {
    use super::*;

    #[test]
    fn receipts_kept_by_the_agent_are_read_and_bad_entries_skipped() {
        let good = r#"{"chainId":1,"rpcUrl":"http://rpc","escrow":"0xe7f1725e7734ce288f8367e1bb143e90bb3f0512","jobId":"0x02","paidBaseUnits":"7","signer":"0x976EA74026E726554dB657fA54763abd0C3a0aa9","signature":"0xab"}"#;
        let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": RECEIPTS_CONFIGMAP},
            "data": {"0x02": good, "0x03": "garbage"}
        }))
        .unwrap();
        let found = kept(&cm);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "0x02");
        assert_eq!(found[0].1.receipt.paid_base_units, "7");
    }
}
