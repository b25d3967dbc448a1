//! GPU health from the probe to the placement: a GPU that gpu-probe reports faulty, and a node whose
//! probe has gone quiet, stop counting as free GPUs on the member — through the agent's inventory
//! and the hub's snapshot — so the job goes to another member instead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gpufed_crds::{JobPhase, MemberCluster};
use gpufed_e2e::hubctl::wait_job;
use gpufed_e2e::joining::{MemberPlan, Pool, wait_ready_with_free};
use gpufed_e2e::{NodeSpec, Tools, run_test, wait_until};
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

const HARD_DEADLINE: Duration = Duration::from_secs(300);
const LONG: Duration = Duration::from_secs(90);

/// Waits until member `name`'s inventory satisfies `ok`, returning it.
async fn inventory(
    hub: &Client,
    name: &str,
    what: &str,
    ok: impl Fn(&gpufed_crds::NodeInventory) -> bool,
) {
    let members: Api<MemberCluster> = Api::all(hub.clone());
    wait_until(LONG, what, || {
        let members = members.clone();
        let ok = &ok;
        async move {
            let m = members.get(name).await.ok()?;
            let inv = m.status?.inventory?;
            inv.nodes.first().filter(|n| ok(n)).map(|_| ())
        }
    })
    .await
    .unwrap();
}

/// An 8-GPU H100 job that runs for 3 s (kwok), and the cluster it was placed on once it finished.
async fn run_big_job(hub: &Client, name: &str) -> String {
    gpufed_e2e::joining::pool::submit_sim_job(hub, name, 8, "5.00", "3s")
        .await
        .unwrap();
    let done = wait_job(
        hub,
        "team-a",
        name,
        LONG,
        &format!("{name} to succeed"),
        |j| {
            j.status
                .as_ref()
                .is_some_and(|s| s.phase == JobPhase::Succeeded)
        },
    )
    .await
    .unwrap();
    done.status.unwrap().placement.unwrap().cluster
}

#[test]
fn a_faulty_gpu_and_a_silent_probe_send_the_job_to_another_member() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let mut pool = Pool::join(
            &tools,
            "30s",
            &[
                // alpha is cheaper, so it gets the job whenever all its 8 GPUs are there.
                MemberPlan::new(
                    "alpha",
                    vec![NodeSpec::new("alpha-0", "H100-SXM-80GB", 8, "eu-west")],
                    "H100",
                    "1.00",
                ),
                MemberPlan::new(
                    "beta",
                    vec![NodeSpec::new("beta-0", "H100-SXM-80GB", 8, "eu-west")],
                    "H100",
                    "2.00",
                ),
            ],
        )
        .await
        .unwrap();
        let hub = pool.hub.client();
        pool.hub.create_namespace("team-a").await.unwrap();
        let members: Api<MemberCluster> = Api::all(hub.clone());
        for name in ["alpha", "beta"] {
            wait_ready_with_free(&hub, name, 8, LONG).await.unwrap();
        }
        assert_eq!(
            run_big_job(&hub, "healthy").await,
            "alpha",
            "the cheaper member first"
        );

        // One of alpha's GPUs turns faulty (the simulator reports uncorrected ECC errors for it).
        let nodes: Api<Node> = Api::all(pool.member("alpha").unwrap().client());
        let annotate = |value: serde_json::Value| json!({"metadata": {"annotations": {"gpufed.io/sim-unhealthy-gpus": value}}});
        nodes
            .patch(
                "alpha-0",
                &PatchParams::default(),
                &Patch::Merge(&annotate(json!("3"))),
            )
            .await
            .unwrap();
        inventory(&hub, "alpha", "alpha reporting one unhealthy GPU", |n| {
            n.unhealthy_gpus == 1 && n.free_gpus == 7
        })
        .await;
        assert_eq!(
            run_big_job(&hub, "faulty").await,
            "beta",
            "alpha has only 7 healthy GPUs"
        );

        // Healthy again; then alpha's probe dies and its readings age past the agent's limit.
        nodes
            .patch(
                "alpha-0",
                &PatchParams::default(),
                &Patch::Merge(&annotate(json!(null))),
            )
            .await
            .unwrap();
        inventory(&hub, "alpha", "alpha healthy again", |n| n.free_gpus == 8).await;
        pool.members
            .iter_mut()
            .find(|m| m.name() == "alpha")
            .unwrap()
            .stop_process("gpu-probe", Duration::from_secs(1));
        inventory(&hub, "alpha", "alpha's telemetry stale", |n| {
            n.telemetry_stale && n.free_gpus == 0 && n.unhealthy_gpus == 8
        })
        .await;
        let m = members.get("alpha").await.unwrap();
        assert_eq!(m.status.unwrap().free_gpus, 0);
        assert_eq!(
            run_big_job(&hub, "silent").await,
            "beta",
            "alpha's GPUs are unknown"
        );
    });
}
