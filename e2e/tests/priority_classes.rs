//! Priorities the pool admin grants, against a real apiserver with the hub as a process (the test
//! stands in for the member agent): a tenant cannot queue above its namespace's ceiling or use a
//! class granted to another namespace, each refusal names the fix, and a job of a granted class is
//! placed before an older job of a lower one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gpufed_crds::conditions::{self, job as jc};
use gpufed_crds::{ComputeJob, JobPhase};
use gpufed_e2e::hubctl::{
    apply, hub_cluster, keep_heartbeating, node, report_inventory, start_hub, wait_job,
};
use gpufed_e2e::{Tools, run_test};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

const HARD_DEADLINE: Duration = Duration::from_secs(300);
const T: Duration = Duration::from_secs(60);

async fn submit(c: &Client, ns: &str, name: &str, priority: serde_json::Value) {
    let mut spec = json!({"pool": "shared", "gpusPerReplica": 1, "gpu": {"models": ["H100"]},
                          "template": {"containers": [{"name": "main", "image": "busybox"}]}});
    if let (Some(s), Some(p)) = (spec.as_object_mut(), priority.as_object()) {
        for (k, v) in p {
            s.insert(k.clone(), v.clone());
        }
    }
    let j = json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                   "metadata": {"name": name, "namespace": ns}, "spec": spec});
    apply::<ComputeJob>(c, &j).await.unwrap();
}

fn refused_with(reason: &'static str) -> impl Fn(&ComputeJob) -> bool {
    move |j| {
        j.status.as_ref().is_some_and(|s| {
            s.reason.as_deref() == Some(reason) && !conditions::is_true(&s.conditions, jc::ADMITTED)
        })
    }
}

#[test]
fn tenants_queue_only_at_the_priorities_the_pool_grants_them() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let mut hub = hub_cluster(&tools, "prio", &["gpufed-system", "team-a", "team-b"])
            .await
            .unwrap();
        start_hub(&tools, &mut hub, "hub-0", &[]).unwrap();
        let c = hub.client();
        let pool = json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuPool", "metadata": {"name": "shared"},
            "spec": {"priorityClasses": [
                {"name": "batch", "value": 0},
                {"name": "urgent", "value": 500, "namespaces": ["team-a"]}
            ]}
        });
        apply::<gpufed_crds::GpuPool>(&c, &pool).await.unwrap();

        // Refused, each with its fix: a raw priority above team-b's ceiling (0), a class granted
        // only to team-a, a class that does not exist.
        submit(&c, "team-b", "sneaky", json!({"priority": 900})).await;
        submit(
            &c,
            "team-b",
            "borrowed",
            json!({"priorityClassName": "urgent"}),
        )
        .await;
        submit(&c, "team-b", "typo", json!({"priorityClassName": "urgnet"})).await;
        let j = wait_job(
            &c,
            "team-b",
            "sneaky",
            T,
            "refused",
            refused_with("PriorityAboveCeiling"),
        )
        .await
        .unwrap();
        let e = j.status.unwrap().explanation.unwrap();
        assert!(
            e.contains("above 0") && e.contains("priorityClassName"),
            "{e}"
        );
        let j = wait_job(
            &c,
            "team-b",
            "borrowed",
            T,
            "refused",
            refused_with("PriorityClassNotAllowed"),
        )
        .await
        .unwrap();
        assert!(
            j.status
                .unwrap()
                .explanation
                .unwrap()
                .contains("pool admin")
        );
        let j = wait_job(
            &c,
            "team-b",
            "typo",
            T,
            "refused",
            refused_with("PriorityClassNotFound"),
        )
        .await
        .unwrap();
        assert!(
            j.status
                .unwrap()
                .explanation
                .unwrap()
                .contains("may use: batch")
        );

        // An older batch job and a newer urgent one wait for capacity; one GPU arrives.
        submit(
            &c,
            "team-a",
            "old-batch",
            json!({"priorityClassName": "batch"}),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        submit(
            &c,
            "team-a",
            "late-urgent",
            json!({"priorityClassName": "urgent"}),
        )
        .await;
        for name in ["old-batch", "late-urgent"] {
            wait_job(&c, "team-a", name, T, "queued", |j| {
                j.status
                    .as_ref()
                    .is_some_and(|s| s.phase == JobPhase::Pending && s.priority.is_some())
            })
            .await
            .unwrap();
        }
        let m = json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "MemberCluster", "metadata": {"name": "alpha"},
                       "spec": {"pool": "shared", "region": "eu-west",
                                "prices": [{"model": "H100", "pricePerGpuHour": "2.00"}]}});
        apply::<gpufed_crds::MemberCluster>(&c, &m).await.unwrap();
        std::mem::forget(keep_heartbeating(c.clone(), "alpha"));
        report_inventory(&c, "alpha", vec![node("alpha-0", "H100", 81559, 1, 1)])
            .await
            .unwrap();
        let j = wait_job(&c, "team-a", "late-urgent", T, "placed first", |j| {
            j.status.as_ref().is_some_and(|s| s.placement.is_some())
        })
        .await
        .unwrap();
        assert_eq!(j.status.unwrap().priority, Some(500));
        let j = wait_job(&c, "team-a", "old-batch", T, "still waiting", |j| {
            j.status
                .as_ref()
                .is_some_and(|s| s.reason.as_deref() == Some("NoFit"))
        })
        .await
        .unwrap();
        assert!(j.status.unwrap().placement.is_none());

        // The tenant fixes its job (priority may change): admitted and queued.
        Api::<ComputeJob>::namespaced(c.clone(), "team-b")
            .patch(
                "sneaky",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"priority": 0}})),
            )
            .await
            .unwrap();
        wait_job(&c, "team-b", "sneaky", T, "admitted after the fix", |j| {
            j.status.as_ref().is_some_and(|s| {
                conditions::is_true(&s.conditions, jc::ADMITTED) && s.priority == Some(0)
            })
        })
        .await
        .unwrap();
    });
}
