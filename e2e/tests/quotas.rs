//! Namespace quotas and cohort borrowing (ADR 0019) against a real apiserver with the hub as a
//! process (the test stands in for the member agent): two teams of one cohort share a pool with
//! room for more than both quotas. While team-b uses its quota, team-a's job beyond its own waits
//! with the `OverQuota` reason although GPUs are free; once team-b's jobs end, team-a borrows its
//! idle quota. The pool's status shows each team's use and the utilisation figure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gpufed_crds::conditions::{self, job as jc};
use gpufed_crds::{ComputeJob, GpuPool, PlacementPhase, PlacementStatus};
use gpufed_e2e::hubctl::{
    apply, hub_cluster, keep_heartbeating, node, placements, report_inventory, report_placement,
    start_hub, wait_job,
};
use gpufed_e2e::{Tools, run_test, wait_until};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::Api;
use serde_json::json;

const HARD_DEADLINE: Duration = Duration::from_secs(300);
const T: Duration = Duration::from_secs(60);

async fn submit(c: &Client, ns: &str, name: &str) {
    let j = json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                   "metadata": {"name": name, "namespace": ns},
                   "spec": {"pool": "shared", "gpusPerReplica": 1, "gpu": {"models": ["H100"]},
                            "template": {"containers": [{"name": "main", "image": "busybox"}]}}});
    apply::<ComputeJob>(c, &j).await.unwrap();
}

fn placed(j: &ComputeJob) -> bool {
    j.status.as_ref().is_some_and(|s| s.placement.is_some())
}

#[test]
fn a_team_over_its_quota_waits_while_its_cohort_is_busy_and_borrows_idle_quota() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let mut hub = hub_cluster(&tools, "quota", &["gpufed-system", "team-a", "team-b"])
            .await
            .unwrap();
        start_hub(&tools, &mut hub, "hub-0", &[]).unwrap();
        let c = hub.client();
        let pool = json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuPool", "metadata": {"name": "shared"},
            "spec": {"quotas": [
                {"namespace": "team-a", "cohort": "research", "groups": [{"name": "gpus", "gpus": 2}]},
                {"namespace": "team-b", "cohort": "research", "groups": [{"name": "gpus", "gpus": 2}]}
            ]}
        });
        apply::<GpuPool>(&c, &pool).await.unwrap();
        // The apiserver refuses a borrowing limit without a cohort, naming the fix.
        let bad = json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuPool", "metadata": {"name": "bad"},
            "spec": {"quotas": [{"namespace": "team-a",
                                 "groups": [{"name": "gpus", "gpus": 2, "borrowingLimit": 1}]}]}
        });
        let err = apply::<GpuPool>(&c, &bad).await.unwrap_err().to_string();
        assert!(
            err.contains("borrowingLimit needs spec.quotas[].cohort"),
            "{err}"
        );

        // One member with 8 free H100s: far more than both quotas.
        let m = json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "MemberCluster", "metadata": {"name": "alpha"},
                       "spec": {"pool": "shared", "region": "eu-west",
                                "prices": [{"model": "H100", "pricePerGpuHour": "2.00"}]}});
        apply::<gpufed_crds::MemberCluster>(&c, &m).await.unwrap();
        std::mem::forget(keep_heartbeating(c.clone(), "alpha"));
        report_inventory(&c, "alpha", vec![node("alpha-0", "H100", 81559, 8, 8)])
            .await
            .unwrap();

        // team-b takes its whole quota.
        for name in ["b-0", "b-1"] {
            submit(&c, "team-b", name).await;
            wait_job(&c, "team-b", name, T, "placed", placed)
                .await
                .unwrap();
        }
        // team-a: two jobs within its quota are placed, the third waits for quota, not GPUs.
        for name in ["a-0", "a-1"] {
            submit(&c, "team-a", name).await;
            wait_job(&c, "team-a", name, T, "placed", placed)
                .await
                .unwrap();
        }
        submit(&c, "team-a", "a-2").await;
        let j = wait_job(&c, "team-a", "a-2", T, "over quota", |j| {
            j.status
                .as_ref()
                .is_some_and(|s| s.reason.as_deref() == Some("OverQuota"))
        })
        .await
        .unwrap();
        let st = j.status.unwrap();
        assert!(st.placement.is_none());
        assert_eq!(
            st.explanation.as_deref(),
            Some(
                "over quota: namespace team-a holds 2 of its 2 GPUs of group gpus and needs 1 \
                 more; cohort research lends 0 now"
            )
        );
        let cond = conditions::find(&st.conditions, jc::SCHEDULED).unwrap();
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("False", "OverQuota")
        );
        let pools: Api<GpuPool> = Api::all(c.clone());
        let usage = |p: &GpuPool, ns: &str| {
            p.status
                .as_ref()
                .and_then(|s| s.quota_usage.iter().find(|q| q.namespace == ns).cloned())
                .map(|q| (q.used, q.limit, q.borrowed))
        };
        wait_until(T, "quota usage in the pool status", || async {
            let p = pools.get("shared").await.ok()?;
            (usage(&p, "team-a") == Some((2, 2, 0)) && usage(&p, "team-b") == Some((2, 2, 0)))
                .then_some(())
        })
        .await
        .unwrap();

        // team-b's jobs end: its quota is idle, and team-a borrows it.
        let done = PlacementStatus {
            phase: Some(PlacementPhase::Succeeded),
            gpu_seconds: 1,
            finish_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
            ..Default::default()
        };
        // A job's Placement may be created a moment after its status shows the placement.
        let team_b = wait_until(T, "team-b's Placements", || async {
            let uids = gpufed_e2e::placements::job_uids_in(&c, "team-b")
                .await
                .ok()?;
            let ps: Vec<_> = placements(&c, "alpha")
                .await
                .ok()?
                .into_iter()
                .filter(|p| uids.contains(&p.spec.job.uid))
                .collect();
            (ps.len() == 2).then_some(ps)
        })
        .await
        .unwrap();
        for p in &team_b {
            report_placement(&c, p, done.clone()).await.unwrap();
        }
        wait_job(&c, "team-a", "a-2", T, "placed on borrowed quota", placed)
            .await
            .unwrap();
        let p = wait_until(T, "borrowing in the pool status", || async {
            let p = pools.get("shared").await.ok()?;
            (usage(&p, "team-a") == Some((3, 2, 1)) && usage(&p, "team-b") == Some((0, 2, 0)))
                .then_some(p)
        })
        .await
        .unwrap();
        let u = p
            .status
            .unwrap()
            .utilization
            .expect("utilisation in the pool status");
        assert!(u.available_gpu_seconds >= u.allocated_gpu_seconds, "{u:?}");
        assert!(u.percent <= 100, "{u:?}");
    });
}
