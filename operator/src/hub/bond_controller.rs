//! The ProviderBond mirror: for every member of a pool whose chain names a ProviderBond contract,
//! the hub keeps a `ProviderBond` object in step with the chain (bonded, unbonding, required =
//! the pool's minimum, eligible, slashes). The scheduler's bond filter and the member's `Bonded`
//! condition read it. A poll loop, because the source of truth is the chain, not the apiserver.

use std::sync::Arc;
use std::time::Duration;

use gpufed_crds::conditions::{self, bond as bc};
use gpufed_crds::{
    GpuPool, MemberCluster, ProviderBond, ProviderBondSpec, ProviderBondStatus, SlashRecord,
    TokenAmount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};

use crate::error::{Error, Result};
use crate::hub::chain::{BondInfo, SlashEvent};
use crate::hub::context::{Context, MANAGER, now};

/// How often bonds are read from the chain.
pub const SYNC_EVERY: Duration = Duration::from_secs(5);
/// Most slashes kept in status.
pub const MAX_SLASHES: usize = 50;

/// Runs the loop until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    loop {
        for pool in ctx.stores.pools.state() {
            if pool.spec.chain.as_ref().is_some_and(|c| c.bond.is_some())
                && let Err(e) = sync_pool(&ctx, &pool).await
            {
                tracing::warn!(pool = %pool.name_any(), error = %e, "syncing bonds");
                ctx.metrics.failed("providerbond", e.kind());
            }
        }
        tokio::time::sleep(SYNC_EVERY).await;
    }
}

/// The mirrored status from what the chain says.
pub fn bond_status(
    info: &BondInfo,
    slashes: &[SlashEvent],
    required: TokenAmount,
    block: u64,
    previous: Option<&ProviderBondStatus>,
    at: Time,
) -> ProviderBondStatus {
    let eligible = info.bonded >= required;
    let mut conds = previous.map(|p| p.conditions.clone()).unwrap_or_default();
    let (reason, message) = if eligible {
        (
            "Bonded",
            format!("bonded {} ≥ required {required}", info.bonded),
        )
    } else {
        (
            "InsufficientBond",
            format!(
                "bonded {} < required {required}: stake more in ProviderBond",
                info.bonded
            ),
        )
    };
    conditions::set_condition(
        &mut conds,
        conditions::condition(bc::ELIGIBLE, eligible, reason, message, None, at.clone()),
    );
    let keep_from = slashes.len().saturating_sub(MAX_SLASHES);
    ProviderBondStatus {
        bonded: Some(info.bonded),
        unbonding: Some(info.unbonding),
        unbonding_release_time: (info.unbonding_release_at > 0)
            .then(|| i64::try_from(info.unbonding_release_at).ok())
            .flatten()
            .and_then(|s| k8s_openapi::jiff::Timestamp::from_second(s).ok())
            .map(Time),
        required: Some(required),
        eligible,
        slashed_total: Some(info.slashed_total),
        slashes: slashes[keep_from..]
            .iter()
            .map(|s| SlashRecord {
                amount: s.amount,
                evidence_hash: s.evidence_hash.clone(),
                tx_hash: s.tx.clone(),
                block_number: s.block,
            })
            .collect(),
        last_sync_time: Some(at),
        observed_block: Some(block),
        conditions: conds,
    }
}

/// Whether two statuses differ in what users care about (not just the sync time and block).
fn material_change(a: &ProviderBondStatus, b: &ProviderBondStatus) -> bool {
    a.bonded != b.bonded
        || a.unbonding != b.unbonding
        || a.unbonding_release_time != b.unbonding_release_time
        || a.required != b.required
        || a.eligible != b.eligible
        || a.slashed_total != b.slashed_total
        || a.slashes != b.slashes
}

async fn sync_pool(ctx: &Context, pool: &GpuPool) -> Result<()> {
    let chain = ctx.chain(pool).await?;
    let block = chain.block_number().await?;
    let required = pool.spec.min_bond.unwrap_or(TokenAmount::ZERO);
    let pool_name = pool.name_any();
    let api: Api<ProviderBond> = Api::all(ctx.client.clone());
    let members: Vec<Arc<MemberCluster>> = ctx
        .stores
        .members
        .state_filter(|m| m.spec.pool == pool_name);
    for member in members {
        let Some(wallet) = member.spec.wallet.clone() else {
            continue;
        };
        let name = member.name_any();
        let Some(info) = chain.bond_of(&wallet).await? else {
            continue;
        };
        let slashes = chain.slashes_of(&wallet).await?;
        let existing = ctx.stores.bond(&name);
        let spec = ProviderBondSpec {
            member_cluster: name.clone(),
            pool: pool_name.clone(),
            provider: wallet.clone(),
        };
        if existing.as_ref().is_none_or(|b| b.spec != spec) {
            let body = serde_json::json!({
                "apiVersion": "gpufed.io/v1alpha1", "kind": "ProviderBond",
                "metadata": {"name": name, "labels": {gpufed_crds::naming::LABEL_CLUSTER: name}},
                "spec": spec,
            });
            api.patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .map_err(Error::kube(format!("applying ProviderBond {name}")))?;
        }
        let previous = existing.as_ref().and_then(|b| b.status.clone());
        let status = bond_status(&info, &slashes, required, block, previous.as_ref(), now());
        let stale = previous.as_ref().is_none_or(|p| {
            material_change(p, &status)
                || p.last_sync_time
                    .as_ref()
                    .is_none_or(|t| now().0.duration_since(t.0).as_secs_f64() > 60.0)
        });
        if !stale {
            continue;
        }
        let body = serde_json::json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "ProviderBond",
            "metadata": {"name": name}, "status": status,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(Error::kube(format!(
            "writing status of ProviderBond {name}"
        )))?;
        let was_eligible = previous.as_ref().map(|p| p.eligible);
        let new_slashes =
            status.slashes.len() > previous.as_ref().map(|p| p.slashes.len()).unwrap_or(0);
        if was_eligible != Some(status.eligible) || new_slashes {
            let message = format!(
                "{name}: bonded {}, required {required}, eligible {}",
                info.bonded, status.eligible
            );
            let warning = !status.eligible || new_slashes;
            let reason = if new_slashes {
                "Slashed"
            } else if status.eligible {
                "Eligible"
            } else {
                "NotEligible"
            };
            ctx.event(member.as_ref(), warning, reason, "BondSync", message);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    fn info(bonded: &str) -> BondInfo {
        BondInfo {
            bonded: bonded.parse().unwrap(),
            unbonding: "0".parse().unwrap(),
            unbonding_release_at: 0,
            slashed_total: "0".parse().unwrap(),
        }
    }

    #[test]
    fn a_bond_at_the_minimum_is_eligible_and_below_it_is_not() {
        let required = "100".parse().unwrap();
        let s = bond_status(&info("100"), &[], required, 7, None, at(1));
        assert!(s.eligible);
        assert!(conditions::is_true(&s.conditions, bc::ELIGIBLE));
        assert_eq!(s.observed_block, Some(7));
        let s = bond_status(&info("99.99"), &[], required, 7, Some(&s), at(2));
        assert!(!s.eligible);
        assert!(
            conditions::find(&s.conditions, bc::ELIGIBLE)
                .unwrap()
                .message
                .contains("99.99 < required 100.00")
        );
    }

    #[test]
    fn only_the_newest_slashes_are_kept() {
        let slashes: Vec<SlashEvent> = (0..60)
            .map(|i| SlashEvent {
                amount: "1".parse().unwrap(),
                evidence_hash: format!("0x{i:064x}"),
                tx: format!("0xtx{i}"),
                block: i,
            })
            .collect();
        let s = bond_status(&info("10"), &slashes, "0".parse().unwrap(), 70, None, at(1));
        assert_eq!(s.slashes.len(), MAX_SLASHES);
        assert_eq!(s.slashes.last().unwrap().block_number, 59);
    }

    #[test]
    fn sync_time_alone_is_not_a_material_change() {
        let a = bond_status(&info("10"), &[], "5".parse().unwrap(), 1, None, at(1));
        let b = bond_status(&info("10"), &[], "5".parse().unwrap(), 2, Some(&a), at(2));
        assert!(!material_change(&a, &b));
        let c = bond_status(&info("11"), &[], "5".parse().unwrap(), 2, Some(&a), at(2));
        assert!(material_change(&a, &c));
    }
}
