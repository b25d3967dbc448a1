//! Joining the pool, against real apiservers: clusters join with the real charts and credentials
//! (see `gpufed_e2e::joining::pool`), run a ComputeJob for the hub, cannot reach each other, never
//! run stale attempts, stop Jobs whose Placement is gone, and fence themselves off before the hub
//! gives their work away.
//!
//! Needs `cargo build --bins` first (the hub, agent and gpu-probe run as processes).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gpufed_crds::conditions::{self, member as mc};
use gpufed_crds::naming::{GPU_RESOURCE, member_namespace};
use gpufed_crds::{ComputeJob, JobPhase, MemberCluster, Placement, PlacementPhase};
use gpufed_e2e::joining::{JOBS_NAMESPACE, MemberPlan, Pool, member_ready, table};
use gpufed_e2e::{NodeSpec, Tools, run_test, wait_until};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::json;

/// Longest this test may take, start-up of the clusters included: past it the test fails, its
/// components are killed and their logs printed (see [`run_test`]).
const HARD_DEADLINE: Duration = Duration::from_secs(300);

const LONG: Duration = Duration::from_secs(120);

#[test]
fn members_join_with_the_charts_and_run_a_job_the_hub_sees_succeed() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let pool = Pool::join(
            &tools,
            "30s",
            &[
                MemberPlan::new(
                    "alpha",
                    vec![
                        NodeSpec::new("alpha-h100-0", "H100-SXM-80GB", 8, "eu-west"),
                        NodeSpec::new("alpha-h100-1", "H100-SXM-80GB", 8, "eu-west"),
                    ],
                    "H100",
                    "2.40",
                ),
                MemberPlan::new(
                    "beta",
                    vec![NodeSpec::new("beta-l4-0", "L4-24GB", 4, "eu-west")],
                    "L4",
                    "0.80",
                ),
            ],
        )
        .await
        .unwrap();
        let hub = pool.hub.client();
        let members: Api<MemberCluster> = Api::all(hub.clone());

        // Joined and Ready, with the inventory the agents took from kwok nodes and gpu-probe.
        for (name, total, summary) in [("alpha", 16, "H100x16"), ("beta", 4, "L4x4")] {
            let m = wait_until(LONG, &format!("{name} Ready with an inventory"), || {
                let members = members.clone();
                async move {
                    let m = members.get(name).await.ok()?;
                    let s = m.status.as_ref()?;
                    (member_ready(&m) && s.total_gpus == total && s.free_gpus == total).then_some(m)
                }
            })
            .await
            .unwrap();
            let s = m.status.unwrap();
            assert!(
                conditions::is_true(&s.conditions, mc::JOINED),
                "{name}: {:?}",
                s.conditions
            );
            assert_eq!(s.model_summary.as_deref(), Some(summary));
            assert_eq!(s.agent_version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
            let inv = s.inventory.unwrap();
            assert!(inv.update_time.is_some());
            assert!(
                inv.nodes.iter().all(|n| n.ready && n.gpu_memory_mib > 0),
                "{:?}",
                inv.nodes
            );
        }
        // What `kubectl get membercluster` prints: the columns are the status fields.
        let t = table(&hub, "/apis/gpufed.io/v1alpha1/memberclusters")
            .await
            .unwrap();
        assert_eq!(t.cell("alpha", "Ready"), Some(&json!("True")));
        assert_eq!(t.cell("alpha", "Models"), Some(&json!("H100x16")));
        assert_eq!(t.cell("alpha", "GPUs"), Some(&json!(16)));
        assert_eq!(t.cell("alpha", "Free"), Some(&json!(16)));
        assert_eq!(t.cell("beta", "Models"), Some(&json!("L4x4")));

        // A two-replica gang of 2 H100s each runs on alpha and the hub sees it succeed, with usage.
        pool.hub.create_namespace("team-a").await.unwrap();
        gpufed_e2e::joining::pool::apply(
            &hub,
            "computejobs",
            &json!({
                "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                "metadata": {"name": "train", "namespace": "team-a"},
                "spec": {
                    "replicas": 2, "gpusPerReplica": 2, "gpu": {"models": ["H100"]},
                    "maxPricePerGpuHour": "3.00", "maxDuration": "10m",
                    "template": {"containers": [{"name": "main", "image": "busybox:1.36",
                        "env": [{"name": "GPUFED_SIM_DURATION", "value": "8s"}]}]}
                }
            }),
        )
        .await
        .unwrap();
        let jobs: Api<ComputeJob> = Api::namespaced(hub.clone(), "team-a");
        let alpha = pool.member("alpha").unwrap().client();
        let local_jobs: Api<Job> = Api::namespaced(alpha.clone(), JOBS_NAMESPACE);
        // While it runs, the member's free GPUs drop by the four the pods hold.
        wait_until(LONG, "alpha's free GPUs to show the running job", || {
            let members = members.clone();
            async move {
                let s = members.get("alpha").await.ok()?.status?;
                (s.free_gpus == 12).then_some(())
            }
        })
        .await
        .unwrap();
        let done = wait_until(LONG, "the ComputeJob to succeed", || {
            let jobs = jobs.clone();
            async move {
                let j = jobs.get("train").await.ok()?;
                (j.status.as_ref()?.phase == JobPhase::Succeeded).then_some(j)
            }
        })
        .await
        .unwrap();
        let st = done.status.unwrap();
        assert_eq!(
            st.placement.as_ref().map(|p| p.cluster.as_str()),
            Some("alpha")
        );
        assert!(st.usage.as_ref().unwrap().gpu_seconds > 0, "{:?}", st.usage);

        let placements: Api<Placement> = Api::namespaced(hub.clone(), &member_namespace("alpha"));
        let p = placements
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .remove(0);
        let ps = p.status.clone().unwrap();
        assert_eq!(ps.phase, Some(PlacementPhase::Succeeded));
        assert_eq!(ps.succeeded_replicas, 2);
        assert!(ps.gpu_seconds > 0);
        assert!(ps.start_time.is_some() && ps.finish_time.is_some());

        // The local Job: Indexed gang, no retries, a deadline, restricted pods on H100 nodes.
        let local = local_jobs
            .get(ps.local_job.as_deref().unwrap())
            .await
            .unwrap();
        let spec = local.spec.unwrap();
        assert_eq!(
            (
                spec.completion_mode.as_deref(),
                spec.completions,
                spec.parallelism
            ),
            (Some("Indexed"), Some(2), Some(2))
        );
        assert_eq!(spec.backoff_limit, Some(0));
        // The deadline is the attempt's maxDuration (10 m); the Job is owned by the member's lease
        // Job, which the agent renews (ADR 0021).
        assert_eq!(spec.active_deadline_seconds, Some(600));
        let owners = local.metadata.owner_references.clone().unwrap();
        assert_eq!(
            owners
                .iter()
                .map(|o| (o.kind.as_str(), o.name.as_str()))
                .collect::<Vec<_>>(),
            [("Job", "gpufed-member-lease")]
        );
        assert_eq!(
            local.metadata.annotations.as_ref().unwrap()["gpufed.io/max-duration-seconds"],
            "600"
        );
        let pods: Api<Pod> = Api::namespaced(alpha, JOBS_NAMESPACE);
        let pods = pods
            .list(&ListParams::default().labels(&format!(
                "batch.kubernetes.io/job-name={}",
                ps.local_job.unwrap()
            )))
            .await
            .unwrap();
        assert_eq!(pods.items.len(), 2);
        for pod in pods.items {
            let s = pod.spec.unwrap();
            assert!(s.node_name.unwrap().starts_with("alpha-h100-"));
            assert_eq!(s.automount_service_account_token, Some(false));
            assert_eq!(
                s.containers[0]
                    .resources
                    .as_ref()
                    .unwrap()
                    .limits
                    .as_ref()
                    .unwrap()[GPU_RESOURCE]
                    .0,
                "2"
            );
        }
        // Once finished, alpha's GPUs are free again.
        wait_until(LONG, "alpha's GPUs free again", || {
            let members = members.clone();
            async move {
                let s = members.get("alpha").await.ok()?.status?;
                (s.free_gpus == 16).then_some(())
            }
        })
        .await
        .unwrap();
        // beta never saw the job (its only Job is its member lease).
        let beta_jobs: Api<Job> =
            Api::namespaced(pool.member("beta").unwrap().client(), JOBS_NAMESPACE);
        assert!(
            beta_jobs
                .list(&ListParams::default().labels("app.kubernetes.io/managed-by=gpufed"))
                .await
                .unwrap()
                .items
                .is_empty()
        );
    });
}
