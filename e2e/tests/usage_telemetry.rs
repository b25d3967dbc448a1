//! Usage checked against telemetry (issue 13 item 2, ADR 0033) on real parts: a hub, two kwok
//! members with their real agents and gpu-probes (sim backend), and a real anvil. The pool sets
//! `spec.usageCheck` (idle grace 5 s). Alpha's GPUs are busy (the probe reads them at 90 %),
//! beta's sit idle (0 %, the `gpufed.io/sim-utilization` annotation). Both run an 8-GPU job of
//! 20 s and claim every GPU for every second; the agents record their nodes' readings in the
//! Placements, and the hub checks each claim: alpha's is supported in full and paid in full,
//! beta's only for the grace — its attempt records the unsupported GPU-seconds, the job has the
//! condition `UsageSupported=False` and a warning Event, and the escrow pays beta's wallet
//! exactly price × supported, refunding the rest to the payer.
//!
//! Needs `cargo build --bins` first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use alloy::primitives::U256;
use gpufed_crds::{ComputeJob, GpuNode, JobPhase, SettlementState, TokenAmount};
use gpufed_e2e::chain::{Chain, accounts};
use gpufed_e2e::demo::{join_paying_pool, pool_spec};
use gpufed_e2e::hubctl::{job_events, wait_job};
use gpufed_e2e::joining::pool::submit_sim_job;
use gpufed_e2e::joining::{MemberPlan, wait_ready_with_free};
use gpufed_e2e::{NodeSpec, Tools, run_test, wait_until};
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

const HARD_DEADLINE: Duration = Duration::from_secs(420);
const T: Duration = Duration::from_secs(120);

/// Holds every simulated GPU of `node` at `percent` and waits until its GpuNode reports it.
async fn hold_utilisation(member: &Client, node: &str, percent: u32) {
    Api::<Node>::all(member.clone())
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "gpufed.io/sim-utilization": percent.to_string()}}})),
        )
        .await
        .unwrap();
    let gpu_nodes: Api<GpuNode> = Api::all(member.clone());
    wait_until(T, &format!("{node}'s GPUs at {percent} %"), || async {
        let g = gpu_nodes.get(node).await.ok()?;
        let st = g.status?;
        (!st.gpus.is_empty() && st.gpus.iter().all(|d| d.utilization_percent == percent))
            .then_some(())
    })
    .await
    .unwrap();
}

async fn submit(c: &Client, name: &str) {
    submit_sim_job(c, name, 8, "3.60", "20s").await.unwrap();
}

async fn settled(c: &Client, name: &str) -> ComputeJob {
    wait_job(c, "team-a", name, T, &format!("{name} settled"), |j| {
        j.status.as_ref().is_some_and(|s| {
            s.phase == JobPhase::Succeeded
                && s.attempts
                    .first()
                    .and_then(|a| a.settlement.as_ref())
                    .is_some_and(|s| s.state == SettlementState::Settled)
        })
    })
    .await
    .unwrap()
}

#[test]
fn a_claim_for_idle_gpus_is_paid_only_for_what_the_members_telemetry_supports() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (chain, contracts) = Chain::start_deployed(&tools, dir.path(), 500, 10_000, 1000, 200)
            .await
            .unwrap();
        let mut spec = pool_spec(&chain, &contracts, "30s");
        spec["usageCheck"] = json!({"idleGrace": "5s", "maxSampleAge": "30s"});
        let node = |name: &str| vec![NodeSpec::new(name, "H100-SXM-80GB", 8, "eu-west")];
        let pool = join_paying_pool(
            &tools,
            spec,
            &[
                MemberPlan::new("alpha", node("alpha-0"), "H100", "1.00").wallet(accounts::ALPHA.1),
                MemberPlan::new("beta", node("beta-0"), "H100", "2.00").wallet(accounts::BETA.1),
            ],
        )
        .await
        .unwrap();
        let c = pool.hub.client();
        pool.hub.create_namespace("team-a").await.unwrap();
        for name in ["alpha", "beta"] {
            wait_ready_with_free(&c, name, 8, T).await.unwrap();
        }
        hold_utilisation(&pool.member("alpha").unwrap().client(), "alpha-0", 90).await;
        hold_utilisation(&pool.member("beta").unwrap().client(), "beta-0", 0).await;
        let beta_before = chain
            .balance_of(&contracts, accounts::BETA.1)
            .await
            .unwrap();

        // The cheaper alpha takes the first job; the second, while alpha is full, goes to beta.
        submit(&c, "busy").await;
        wait_job(&c, "team-a", "busy", T, "busy placed on alpha", |j| {
            j.status
                .as_ref()
                .and_then(|s| s.placement.as_ref())
                .is_some_and(|p| p.cluster == "alpha")
        })
        .await
        .unwrap();
        submit(&c, "idle").await;

        // Alpha's claim is supported in full and paid in full.
        let busy = settled(&c, "busy").await;
        let st = busy.status.unwrap();
        let a = &st.attempts[0];
        assert_eq!(a.cluster, "alpha");
        let check = a.usage_check.clone().expect("alpha's attempt is checked");
        assert!(a.gpu_seconds >= 8 * 15, "{a:?}");
        assert_eq!(check.claimed_gpu_seconds, a.gpu_seconds);
        assert_eq!(check.supported_gpu_seconds, a.gpu_seconds, "{check:?}");
        assert_eq!(check.unsupported_gpu_seconds, 0);
        let cond = st
            .conditions
            .iter()
            .find(|c| c.type_ == "UsageSupported")
            .unwrap();
        assert_eq!(cond.status, "True", "{cond:?}");
        let price: TokenAmount = "1.00".parse().unwrap();
        assert_eq!(
            a.settlement.as_ref().unwrap().paid,
            Some(price.cost_of_gpu_seconds(a.gpu_seconds).unwrap())
        );

        // Beta's GPUs sat idle: only the 5 s grace is supported, and only that is paid.
        let idle = settled(&c, "idle").await;
        let st = idle.status.unwrap();
        let a = &st.attempts[0];
        assert_eq!(a.cluster, "beta");
        let check = a.usage_check.clone().expect("beta's attempt is checked");
        assert!(a.gpu_seconds >= 8 * 15, "{a:?}");
        assert_eq!(check.claimed_gpu_seconds, a.gpu_seconds);
        assert_eq!(check.supported_gpu_seconds, 8 * 5, "{check:?}");
        assert_eq!(
            check.unsupported_gpu_seconds,
            a.gpu_seconds - 8 * 5,
            "{check:?}"
        );
        assert!(check.idle_seconds >= 10, "{check:?}");
        let cond = st
            .conditions
            .iter()
            .find(|c| c.type_ == "UsageSupported")
            .unwrap();
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("False", "UsageUnsupported"),
            "{cond:?}"
        );
        assert!(
            cond.message.contains(&format!(
                "supports 40 of the {} GPU-seconds claimed",
                a.gpu_seconds
            )),
            "{}",
            cond.message
        );
        let events = job_events(&c, "team-a", "idle", "UsageUnsupported")
            .await
            .unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(events[0].contains("settlement pays 40"), "{events:?}");

        // The escrow paid beta price × 40 GPU-seconds less the fee, and refunded the rest.
        let price: TokenAmount = "2.00".parse().unwrap();
        let paid = price.cost_of_gpu_seconds(40).unwrap();
        let s = a.settlement.as_ref().unwrap();
        assert_eq!(s.paid, Some(paid));
        assert_eq!(
            s.refunded,
            Some(s.locked.unwrap().checked_sub(paid).unwrap())
        );
        let fee = paid.atto() * 500 / 10_000;
        let beta_after = chain
            .balance_of(&contracts, accounts::BETA.1)
            .await
            .unwrap();
        assert_eq!(beta_after - beta_before, U256::from(paid.atto() - fee));

        // The Placement kept the evidence: beta-0's idle spans over the attempt.
        let placements = gpufed_e2e::hubctl::placements(&c, "beta").await.unwrap();
        if let Some(p) = placements.first() {
            let st = p.status.as_ref().unwrap();
            let start = st.start_time.as_ref().unwrap().0.as_second();
            let t = st.telemetry.as_ref().unwrap();
            assert_eq!(t.nodes[0].node, "beta-0");
            assert_eq!(t.nodes[0].gpu_uuids.len(), 8);
            // Readings from before the pods started may come first; from the start on, idle.
            assert!(
                t.nodes[0]
                    .spans
                    .iter()
                    .filter(|s| s.to > start)
                    .all(|s| !s.busy),
                "{t:?}"
            );
        }
        drop(chain);
    });
}
