//! Fair share between namespaces (ADR 0025) against a real apiserver with the hub as a process
//! (the test stands in for the member agent): two teams with weights 1 and 2 are both backlogged
//! on a pool of 6 GPUs. Although every job of team-b is older (priority-then-age would give it all
//! six), the GPUs go 2 : 4, in proportion to the weights; the pool's status shows each team's
//! weight, GPUs and dominant share; and a GPU freed by team-a goes back to team-a, the team
//! furthest below its share, not to team-b's older jobs. A second test shows the hold: a 4-GPU gang
//! of a team that holds nothing keeps the node it needs while team-b's jobs there end, and a
//! newer 1-GPU job of team-b does not take the GPUs that free meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gpufed_crds::{ComputeJob, GpuPool, PlacementPhase, PlacementStatus};
use gpufed_e2e::hubctl::{
    apply, hub_cluster, keep_heartbeating, node, placements, report_inventory, report_placement,
    start_hub, wait_job,
};
use gpufed_e2e::{Tools, run_test, wait_until};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, ListParams};
use serde_json::json;

const HARD_DEADLINE: Duration = Duration::from_secs(300);
const T: Duration = Duration::from_secs(60);

async fn submit(c: &Client, ns: &str, name: &str) {
    submit_gpus(c, ns, name, 1).await;
}

async fn submit_gpus(c: &Client, ns: &str, name: &str, gpus: u32) {
    let j = json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                   "metadata": {"name": name, "namespace": ns},
                   "spec": {"pool": "shared", "gpusPerReplica": gpus, "gpu": {"models": ["H100"]},
                            "template": {"containers": [{"name": "main", "image": "busybox"}]}}});
    apply::<ComputeJob>(c, &j).await.unwrap();
}

fn placed(j: &ComputeJob) -> bool {
    j.status.as_ref().is_some_and(|s| s.placement.is_some())
}

/// Names of the namespace's jobs that have a placement.
async fn placed_in(c: &Client, ns: &str) -> Vec<String> {
    let jobs: Api<ComputeJob> = Api::namespaced(c.clone(), ns);
    let mut out: Vec<String> = jobs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(placed)
        .filter_map(|j| j.metadata.name)
        .collect();
    out.sort();
    out
}

#[test]
fn two_backlogged_teams_get_gpus_in_proportion_to_their_weights() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let mut hub = hub_cluster(&tools, "fair", &["gpufed-system", "team-a", "team-b"])
            .await
            .unwrap();
        start_hub(&tools, &mut hub, "hub-0", &[]).unwrap();
        let c = hub.client();
        let pool = json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuPool", "metadata": {"name": "shared"},
            "spec": {"fairSharing": {"weights": [{"namespace": "team-b", "weight": 2}]}}
        });
        apply::<GpuPool>(&c, &pool).await.unwrap();
        // The apiserver refuses a weight of 0.
        let bad = json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuPool", "metadata": {"name": "bad"},
            "spec": {"fairSharing": {"weights": [{"namespace": "team-a", "weight": 0}]}}
        });
        let err = apply::<GpuPool>(&c, &bad).await.unwrap_err().to_string();
        assert!(err.contains("weight"), "{err}");

        // A member that has not reported its GPUs yet: every job waits.
        let m = json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "MemberCluster", "metadata": {"name": "alpha"},
                       "spec": {"pool": "shared", "region": "eu-west",
                                "prices": [{"model": "H100", "pricePerGpuHour": "2.00"}]}});
        apply::<gpufed_crds::MemberCluster>(&c, &m).await.unwrap();
        std::mem::forget(keep_heartbeating(c.clone(), "alpha"));
        // team-b's jobs are all older than team-a's.
        let waiting = |j: &ComputeJob| j.status.as_ref().is_some_and(|s| s.reason.is_some());
        for i in 0..6 {
            submit(&c, "team-b", &format!("b-{i}")).await;
        }
        for i in 0..6 {
            wait_job(&c, "team-b", &format!("b-{i}"), T, "waiting", waiting)
                .await
                .unwrap();
        }
        for i in 0..6 {
            submit(&c, "team-a", &format!("a-{i}")).await;
        }
        for i in 0..6 {
            wait_job(&c, "team-a", &format!("a-{i}"), T, "waiting", waiting)
                .await
                .unwrap();
        }

        // Six GPUs appear: one pass shares them 2 : 4 by weight (plain age order: 0 : 6).
        report_inventory(&c, "alpha", vec![node("alpha-0", "H100", 81559, 6, 6)])
            .await
            .unwrap();
        let (a, b) = wait_until(T, "six jobs placed", || async {
            let (a, b) = (placed_in(&c, "team-a").await, placed_in(&c, "team-b").await);
            (a.len() + b.len() == 6).then_some((a, b))
        })
        .await
        .unwrap();
        assert_eq!(a, ["a-0", "a-1"], "team-a (weight 1)");
        assert_eq!(b, ["b-0", "b-1", "b-2", "b-3"], "team-b (weight 2)");

        // The pool's status shows the shares: weight, GPUs, dominant model and share (‰).
        let pools: Api<GpuPool> = Api::all(c.clone());
        let share = |p: &GpuPool, ns: &str| {
            p.status
                .as_ref()
                .and_then(|s| s.shares.iter().find(|x| x.namespace == ns).cloned())
                .map(|x| (x.weight, x.gpus, x.dominant_model, x.dominant_per_mille))
        };
        wait_until(T, "shares in the pool status", || async {
            let p = pools.get("shared").await.ok()?;
            (share(&p, "team-a") == Some((1, 2, Some("H100".into()), 333))
                && share(&p, "team-b") == Some((2, 4, Some("H100".into()), 666)))
            .then_some(())
        })
        .await
        .unwrap();

        // One of team-a's jobs ends: team-a now holds 1/6 at weight 1, team-b 4/6 at weight 2,
        // so the freed GPU goes to team-a's next job, not to team-b's older ones.
        end(&c, "team-a", "a-0").await;
        wait_job(&c, "team-a", "a-2", T, "placed on the freed GPU", placed)
            .await
            .unwrap();
        assert_eq!(placed_in(&c, "team-b").await, ["b-0", "b-1", "b-2", "b-3"]);
    });
}

/// Reports the Placement of `ns/name` on alpha as succeeded.
async fn end(c: &Client, ns: &str, name: &str) {
    let uid = gpufed_e2e::placements::job_uid(c, ns, name).await.unwrap();
    let p = wait_until(T, "the job's Placement", || async {
        placements(c, "alpha")
            .await
            .ok()?
            .into_iter()
            .find(|p| p.spec.job.uid == uid)
    })
    .await
    .unwrap();
    let done = PlacementStatus {
        phase: Some(PlacementPhase::Succeeded),
        gpu_seconds: 1,
        finish_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
        ..Default::default()
    };
    report_placement(c, &p, done).await.unwrap();
}

#[test]
fn a_gang_holds_its_node_while_it_empties_and_no_small_job_takes_the_freed_gpus() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let mut hub = hub_cluster(&tools, "hold", &["gpufed-system", "team-a", "team-b"])
            .await
            .unwrap();
        start_hub(&tools, &mut hub, "hub-0", &[]).unwrap();
        let c = hub.client();
        let pool = json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuPool", "metadata": {"name": "shared"},
            "spec": {"fairSharing": {}}
        });
        apply::<GpuPool>(&c, &pool).await.unwrap();
        let m = json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "MemberCluster", "metadata": {"name": "alpha"},
                       "spec": {"pool": "shared", "region": "eu-west",
                                "prices": [{"model": "H100", "pricePerGpuHour": "2.00"}]}});
        apply::<gpufed_crds::MemberCluster>(&c, &m).await.unwrap();
        std::mem::forget(keep_heartbeating(c.clone(), "alpha"));
        report_inventory(&c, "alpha", vec![node("alpha-0", "H100", 81559, 4, 4)])
            .await
            .unwrap();
        // team-b fills the node.
        for i in 0..4 {
            submit(&c, "team-b", &format!("b-{i}")).await;
            wait_job(&c, "team-b", &format!("b-{i}"), T, "placed", placed)
                .await
                .unwrap();
        }
        // team-a's 4-GPU gang fits no free node: it holds alpha-0, and says so.
        submit_gpus(&c, "team-a", "big", 4).await;
        wait_job(&c, "team-a", "big", T, "holding", |j| {
            j.status
                .as_ref()
                .and_then(|s| s.explanation.as_deref())
                .is_some_and(|e| {
                    e.contains("node alpha-0 of alpha is held for this job while its attempts end")
                })
        })
        .await
        .unwrap();
        submit(&c, "team-b", "b-4").await;
        let waiting = |j: &ComputeJob| j.status.as_ref().is_some_and(|s| s.reason.is_some());
        wait_job(&c, "team-b", "b-4", T, "waiting", waiting)
            .await
            .unwrap();

        // One GPU frees: without the hold b-4 would take it (and the gang would wait again).
        end(&c, "team-b", "b-0").await;
        // Several passes: every change triggers one, and the queue is resynced every 5 s.
        tokio::time::sleep(Duration::from_secs(7)).await;
        let jobs: Api<ComputeJob> = Api::namespaced(c.clone(), "team-b");
        assert!(
            !placed(&jobs.get("b-4").await.unwrap()),
            "b-4 took a held GPU"
        );

        // The node empties: the gang is placed, and b-4 still waits (nothing is free).
        for name in ["b-1", "b-2", "b-3"] {
            end(&c, "team-b", name).await;
        }
        wait_job(&c, "team-a", "big", T, "placed on its held node", placed)
            .await
            .unwrap();
        assert!(!placed(&jobs.get("b-4").await.unwrap()));
    });
}
