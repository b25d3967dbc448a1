//! Writes the agent's part of `MemberCluster.status` on the hub — inventory (with `updateTime`),
//! `totalGpus`, `freeGpus`, `modelSummary`, `agentVersion`, `sealingKey` — with server-side apply under the
//! agent's own field manager, so the hub's fields (conditions, heartbeat, namespace…) are never
//! touched. It also reads the pool's heartbeat timeout that the hub copies into the status, which
//! sets the fence timeout.
//!
//! The inventory is taken when nodes, pods or GpuNodes change and every `--inventory-interval`,
//! and written only when it changed or the last one written is an interval old.

use std::sync::Arc;
use std::time::Duration;

use gpufed_crds::{Inventory, MemberCluster};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::Notify;

use super::api::{API_TIMEOUT, FIELD_MANAGER, timed, timed_opt};
use super::context::Context;
use super::inventory::{self, Report};
use crate::backoff;
use crate::error::Result;

/// Version the agent reports.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The server-side apply body of the agent's status fields.
pub fn apply_body(
    cluster: &str,
    report: &Report,
    taken: &Time,
    sealing_key: &str,
) -> serde_json::Value {
    let inventory = Inventory {
        update_time: Some(taken.clone()),
        nodes: report.nodes.clone(),
    };
    serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1",
        "kind": "MemberCluster",
        "metadata": {"name": cluster},
        "status": {
            "inventory": inventory,
            "totalGpus": report.total_gpus,
            "freeGpus": report.free_gpus,
            "modelSummary": report.model_summary,
            "agentVersion": AGENT_VERSION,
            "sealingKey": sealing_key,
        }
    })
}

async fn read_pool_timeout(ctx: &Context, api: &Api<MemberCluster>) -> Result<()> {
    let cluster = &ctx.args.cluster;
    let member = timed_opt(
        format!("reading MemberCluster {cluster}"),
        API_TIMEOUT,
        api.get(cluster),
    )
    .await?;
    match member {
        Some(m) => {
            let status = m.status.unwrap_or_default();
            let timeout = status.heartbeat_timeout.map(|d| d.as_duration());
            ctx.shared.set_pool_timeout(timeout);
            // The offer task signs in this domain (agent::offer).
            ctx.shared.set_offer_signing(status.offer_signing);
        }
        None => tracing::error!(
            cluster = %cluster,
            "MemberCluster {cluster} does not exist on the hub: ask the pool admin to create it (see docs/cluster-owners.md)"
        ),
    }
    Ok(())
}

async fn write(
    ctx: &Context,
    api: &Api<MemberCluster>,
    report: &Report,
    taken: &Time,
) -> Result<()> {
    let cluster = &ctx.args.cluster;
    timed(
        format!("writing the inventory of MemberCluster {cluster}"),
        API_TIMEOUT,
        api.patch_status(
            cluster,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(apply_body(
                cluster,
                report,
                taken,
                &ctx.sealing.public_base64(),
            )),
        ),
    )
    .await?;
    Ok(())
}

/// Reports the inventory until the process ends. `changed` fires when nodes, pods or GpuNodes change.
pub async fn run(ctx: Arc<Context>, changed: Arc<Notify>) {
    let api: Api<MemberCluster> = Api::all(ctx.hub.clone());
    let interval = ctx.args.inventory_interval;
    let mut last: Option<(Report, Time)> = None;
    let mut failures: u32 = 0;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let periodic = tokio::select! {
            _ = tick.tick() => true,
            _ = changed.notified() => false,
        };
        // Let a burst of pod events settle into one inventory.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut result = Ok(());
        if periodic || ctx.shared.pool_timeout().is_none() {
            result = read_pool_timeout(&ctx, &api).await;
        }
        let report = ctx.inventory();
        let now = Time(ctx.shared.member_now());
        if result.is_ok()
            && inventory::needs_write(last.as_ref().map(|(r, t)| (r, t)), &report, &now, interval)
        {
            result = write(&ctx, &api, &report, &now).await;
            if result.is_ok() {
                tracing::debug!(total = report.total_gpus, free = report.free_gpus, models = %report.model_summary, "inventory written");
                if !ctx.shared.inventory_written() {
                    tracing::info!(total = report.total_gpus, free = report.free_gpus, models = %report.model_summary, "first inventory written");
                }
                ctx.shared.set_inventory_written();
                last = Some((report, now));
            }
        }
        match result {
            Ok(()) => failures = 0,
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = backoff::delay(failures).min(interval);
                tracing::warn!(error = %e, kind = e.kind(), failures, retry_in = ?wait, "inventory not written");
                tokio::time::sleep(wait).await;
            }
        }
        ctx.health.set_ready(
            ctx.shared.has_heartbeat() && ctx.shared.inventory_written() && !ctx.shared.is_fenced(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::fixtures::{at, gpu_node};

    #[test]
    fn the_apply_body_holds_only_the_agents_status_fields() {
        let report = inventory::summarise(vec![gpu_node("h1", "H100", 8, 6)]);
        let body = apply_body("alpha", &report, &at(100), "a2V5");
        assert_eq!(body["metadata"]["name"], "alpha");
        assert!(body.get("spec").is_none(), "never the admin's spec");
        let status = body["status"].as_object().unwrap();
        let mut keys: Vec<&str> = status.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "agentVersion",
                "freeGpus",
                "inventory",
                "modelSummary",
                "sealingKey",
                "totalGpus"
            ]
        );
        assert_eq!(status["totalGpus"], 8);
        assert_eq!(status["freeGpus"], 6);
        assert_eq!(status["modelSummary"], "H100x8");
        assert_eq!(status["inventory"]["nodes"][0]["gpuMemoryMiB"], 81559);
        assert!(status["inventory"]["updateTime"].is_string());
    }
}
