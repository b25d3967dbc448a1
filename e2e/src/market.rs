//! A paying pool for payment tests: a hub cluster, a real anvil with the gpufed contracts, the
//! hub's key Secret, and a GpuPool `market` whose jobs are paid through the escrow. The test
//! stands in for member agents (heartbeats, inventory, Placement status).

use std::time::Duration;

use gpufed_crds::{
    ComputeJob, ContainerExit, PlacementPhase, PlacementStatus, Settlement, SettlementState,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::chain::{Chain, Contracts, accounts};
use crate::hubctl::{
    apply, keep_heartbeating, node, placements, report_inventory, report_placement,
};
use crate::{Cluster, Error, Tools, wait_until};

/// How long the helpers here wait for one step.
pub const STEP: Duration = Duration::from_secs(90);

/// A hub cluster with a chain and a paying pool.
pub struct Market {
    /// Located tools.
    pub tools: Tools,
    /// The hub's control plane (the hub process is started by the test).
    pub hub: Cluster,
    /// anvil.
    pub chain: Chain,
    /// Deployed contracts.
    pub contracts: Contracts,
}

impl Market {
    /// Token balance of `who`.
    pub async fn balance(&self, who: &str) -> Result<alloy::primitives::U256, Error> {
        self.chain.balance_of(&self.contracts, who).await
    }

    /// Free escrow deposit of `who`.
    pub async fn deposit(&self, who: &str) -> Result<alloy::primitives::U256, Error> {
        self.chain.deposit_of(&self.contracts, who).await
    }

    /// State of the lock under `job_id` (0 none, 1 locked, 2 settled, 3 expired).
    pub async fn lock_state(&self, job_id: &str) -> Result<u8, Error> {
        Ok(self.chain.lock_state(&self.contracts, job_id).await?.0)
    }
}

/// A hub cluster `name`, anvil with the contracts (5 % fee), payers with `deposit` tokens in
/// escrow who authorised the hub's account, providers staked 200, the hub key Secret, and a pool
/// `market` (minimum bond 100) with team-a and team-b bound to their payers. `chain_extra` is
/// merged into the pool's `spec.chain` (e.g. `{"txTimeout": "5s"}`).
pub async fn market(
    name: &str,
    deposit: u64,
    chain_extra: serde_json::Value,
) -> Result<Market, Error> {
    market_with_token(name, deposit, chain_extra, "GpuFedToken", 18).await
}

/// [`market`] paying in `token_contract` (a forge-built ERC-20 with `decimals` decimals).
pub async fn market_with_token(
    name: &str,
    deposit: u64,
    chain_extra: serde_json::Value,
    token_contract: &str,
    decimals: u8,
) -> Result<Market, Error> {
    let tools = Tools::locate()?;
    let hub = crate::hubctl::hub_cluster(&tools, name, &["gpufed-system"]).await?;
    let chain = Chain::start(&tools, hub.dir()?).await?;
    let contracts = chain
        .deploy_all_with_token(&tools, token_contract, decimals, 500, 10_000, deposit, 200)
        .await?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "hub-chain-key", "namespace": "gpufed-system"},
        "stringData": {"privateKey": accounts::HUB.0}
    }))
    .map_err(|e| Error::Other(e.to_string()))?;
    Api::<Secret>::namespaced(hub.client(), "gpufed-system")
        .create(&PostParams::default(), &secret)
        .await
        .map_err(|source| Error::Kube {
            what: "creating the hub key Secret",
            source: Box::new(source),
        })?;
    let mut chain_spec = json!({
        "rpcUrl": chain.url, "chainId": 31337,
        "token": contracts.token.to_string(), "escrow": contracts.escrow.to_string(),
        "bond": contracts.bond.to_string(),
        "hubKeySecretRef": {"namespace": "gpufed-system", "name": "hub-chain-key", "key": "privateKey"}
    });
    if let (Some(spec), Some(extra)) = (chain_spec.as_object_mut(), chain_extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    let pool = json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuPool", "metadata": {"name": "market"},
        "spec": {
            "heartbeatTimeout": "20s", "minBond": "100",
            "chain": chain_spec,
            "payers": [{"namespace": "team-a", "account": accounts::PAYER_A.1},
                       {"namespace": "team-b", "account": accounts::PAYER_B.1}]
        }
    });
    apply::<gpufed_crds::GpuPool>(&hub.client(), &pool).await?;
    Ok(Market {
        tools,
        hub,
        chain,
        contracts,
    })
}

/// A MemberCluster `name` of pool `market` paid into `wallet`, with one node of 8 `model` GPUs
/// at `price`, heartbeating for the rest of the test.
pub async fn member(
    c: &Client,
    name: &str,
    wallet: &str,
    model: &str,
    price: &str,
) -> Result<(), Error> {
    let m = json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "MemberCluster", "metadata": {"name": name},
                   "spec": {"pool": "market", "region": "eu-west", "wallet": wallet,
                            "prices": [{"model": model, "pricePerGpuHour": price}]}});
    apply::<gpufed_crds::MemberCluster>(c, &m).await?;
    std::mem::forget(keep_heartbeating(c.clone(), name));
    report_inventory(
        c,
        name,
        vec![node(&format!("{name}-0"), model, 81559, 8, 8)],
    )
    .await
}

/// A market with a hub (`hub-0`) running and member alpha (8 H100 at 3.60, paid into
/// [`accounts::ALPHA`]) schedulable.
pub async fn started(
    name: &str,
    deposit: u64,
    chain_extra: serde_json::Value,
) -> Result<Market, Error> {
    started_with_token(name, deposit, chain_extra, "GpuFedToken", 18).await
}

/// [`started`] paying in `token` (`decimals` decimals).
pub async fn started_with_token(
    name: &str,
    deposit: u64,
    chain_extra: serde_json::Value,
    token: &str,
    decimals: u8,
) -> Result<Market, Error> {
    let mut m = market_with_token(name, deposit, chain_extra, token, decimals).await?;
    crate::hubctl::start_hub(&m.tools, &mut m.hub, "hub-0", &[])?;
    let c = m.hub.client();
    member(&c, "alpha", accounts::ALPHA.1, "H100", "3.60").await?;
    wait_condition(&c, "alpha", "Schedulable", true).await?;
    Ok(m)
}

/// Waits until `member`'s condition `cond` is `want`.
pub async fn wait_condition(c: &Client, member: &str, cond: &str, want: bool) -> Result<(), Error> {
    crate::hubctl::wait_member_condition(c, &[member], cond, want, STEP)
        .await
        .map(|_| ())
}

/// Submits a one-hour ComputeJob of `gpus` `model` GPUs at most `max_price` per GPU-hour.
pub async fn submit(
    c: &Client,
    ns: &str,
    name: &str,
    model: &str,
    gpus: u32,
    max_price: &str,
) -> Result<(), Error> {
    submit_with(c, ns, name, model, gpus, max_price, json!({})).await
}

/// [`submit`] with `extra` merged into the spec (e.g. `{"priorityClassName": "urgent"}`).
pub async fn submit_with(
    c: &Client,
    ns: &str,
    name: &str,
    model: &str,
    gpus: u32,
    max_price: &str,
    extra: serde_json::Value,
) -> Result<(), Error> {
    let mut j = json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                   "metadata": {"name": name, "namespace": ns},
                   "spec": {"pool": "market", "gpusPerReplica": gpus, "gpu": {"models": [model]},
                            "maxPricePerGpuHour": max_price, "maxDuration": "1h",
                            "template": {"containers": [{"name": "main", "image": "busybox"}]}}});
    if let (Some(spec), Some(extra)) = (j["spec"].as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    apply::<ComputeJob>(c, &j).await.map(|_| ())
}

/// The escrow record of `attempt` of `j`.
pub fn settlement(j: &ComputeJob, attempt: u32) -> Option<Settlement> {
    j.status
        .as_ref()?
        .attempts
        .iter()
        .find(|a| a.attempt == attempt)?
        .settlement
        .as_deref()
        .cloned()
}

/// Whether attempt 1 of `j` is recorded as settled.
pub fn settled(j: &ComputeJob) -> bool {
    settlement(j, 1).is_some_and(|s| s.state == SettlementState::Settled)
}

/// Waits for a Placement on `cluster` named for `job` (any job when empty) and reports it
/// finished with `gpu_seconds`.
pub async fn finish(c: &Client, cluster: &str, job: &str, gpu_seconds: u64) -> Result<(), Error> {
    finish_with(c, cluster, job, gpu_seconds, None).await
}

/// [`finish`], container `main` of replica 0 ending with termination message `message`.
pub async fn finish_with(
    c: &Client,
    cluster: &str,
    job: &str,
    gpu_seconds: u64,
    message: Option<&str>,
) -> Result<(), Error> {
    // A Placement names its job by UID only (ADR 0037): the UIDs of the jobs named `job`.
    let uids = crate::placements::job_uids_named(c, job).await?;
    let p = wait_until(STEP, "the placement", || async {
        placements(c, cluster)
            .await
            .ok()?
            .into_iter()
            .find(|p| job.is_empty() || uids.contains(&p.spec.job.uid))
    })
    .await?;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    report_placement(
        c,
        &p,
        PlacementStatus {
            phase: Some(PlacementPhase::Succeeded),
            gpu_seconds,
            start_time: Some(now.clone()),
            finish_time: Some(now.clone()),
            exits: message
                .map(|m| ContainerExit {
                    replica: 0,
                    container: "main".into(),
                    exit_code: 0,
                    reason: Some("Completed".into()),
                    message: Some(m.into()),
                    started_at: Some(now.clone()),
                    finished_at: Some(now),
                })
                .into_iter()
                .collect(),
            ..Default::default()
        },
    )
    .await
}
