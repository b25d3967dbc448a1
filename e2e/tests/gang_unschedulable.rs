//! A gang that can only half-start on its member fails fast and is run elsewhere, against real
//! apiservers, kube-scheduler and kwok: the hub places a 2-replica gang on alpha (cheaper) while
//! alpha still has the GPUs, a workload of alpha's owner takes half of them before alpha's agent
//! creates the Job, so kube-scheduler can place only one replica. The agent fails the attempt as
//! `GangUnschedulable` after its short grace — not the pool's 10-minute start timeout — and stops
//! the Job, so the started replica releases its GPUs; the hub runs attempt 2 on beta, and attempt 1
//! bills nothing (the gang never fully started).
//!
//! Needs `cargo build -p gpufed-operator -p kubectl-gpufed -p gpu-probe --bins` first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gpufed_crds::naming::{GPU_RESOURCE, member_namespace};
use gpufed_crds::placement::reasons::GANG_UNSCHEDULABLE;
use gpufed_crds::{AttemptPhase, ComputeJob, JobPhase, Placement, PlacementPhase};
use gpufed_e2e::hubctl::wait_job;
use gpufed_e2e::joining::{JOBS_NAMESPACE, MemberPlan, Pool, wait_ready_with_free};
use gpufed_e2e::{NodeSpec, Tools, run_test, wait_until};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

const HARD_DEADLINE: Duration = Duration::from_secs(300);
const LONG: Duration = Duration::from_secs(90);

/// Four H100s on each of two nodes: a gang of two 4-GPU replicas needs both.
fn nodes(member: &str) -> Vec<NodeSpec> {
    (0..2)
        .map(|i| NodeSpec::new(&format!("{member}-{i}"), "H100-SXM-80GB", 4, "eu-west"))
        .collect()
}

#[test]
fn a_gang_that_cannot_start_on_its_member_fails_fast_unbilled_and_runs_elsewhere() {
    // Each replica runs 20 s, far beyond the 2 s grace: with a replica short enough to end before
    // the agent looks again, the waiting one would be scheduled onto the freed GPUs and the "gang"
    // would succeed one replica after the other (it did, 3 s replicas on a loaded machine).
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let mut pool = Pool::join_with(
            &tools,
            // A start timeout far beyond this test: only the agent's fast path can end attempt 1.
            // A long heartbeat timeout: alpha's agent is paused while the hub places the job, and
            // on a loaded machine that could outlast the fence of a 30 s timeout (⅔ T, 20 s),
            // after which alpha stops its Jobs as fenced rather than failing the gang (a full e2e
            // run here once timed out waiting for GangUnschedulable; this rules that cause out).
            json!({"heartbeatTimeout": "90s", "startTimeout": "10m"}),
            &[
                MemberPlan::new("alpha", nodes("alpha"), "H100", "1.00")
                    .gang_unschedulable_grace("2s"),
                MemberPlan::new("beta", nodes("beta"), "H100", "2.00"),
            ],
            |_| async { Ok(()) },
        )
        .await
        .unwrap();
        let hub = pool.hub.client();
        pool.hub.create_namespace("team-a").await.unwrap();
        for name in ["alpha", "beta"] {
            wait_ready_with_free(&hub, name, 8, LONG).await.unwrap();
        }

        // Alpha's agent is paused (well within its fence timeout): the hub places on the 8 free
        // GPUs alpha last reported, but nothing runs on alpha yet.
        let alpha = pool
            .members
            .iter_mut()
            .find(|m| m.name() == "alpha")
            .unwrap();
        alpha
            .process_mut("gpufed-agent")
            .unwrap()
            .signal(libc::SIGSTOP);
        gpufed_e2e::joining::pool::apply(
            &hub,
            "computejobs",
            &json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                    "metadata": {"name": "gang", "namespace": "team-a"},
                    "spec": {"replicas": 2, "gpusPerReplica": 4, "gpu": {"models": ["H100"]},
                             "maxPricePerGpuHour": "5.00", "maxDuration": "10m",
                             "template": {"containers": [{"name": "main", "image": "busybox:1.36",
                                 "env": [{"name": "GPUFED_SIM_DURATION", "value": "20s"}]}]}}}),
        )
        .await
        .unwrap();
        let alpha_placements: Api<Placement> =
            Api::namespaced(hub.clone(), &member_namespace("alpha"));
        let gang = gpufed_e2e::placements::job_uids_named(&hub, "gang")
            .await
            .unwrap();
        let placement = wait_until(LONG, "the hub to place attempt 1 on alpha", || {
            let (api, gang) = (alpha_placements.clone(), &gang);
            async move {
                let list = api.list(&ListParams::default()).await.ok()?;
                list.items
                    .into_iter()
                    .find(|p| gang.contains(&p.spec.job.uid) && p.spec.attempt == 1)
            }
        })
        .await
        .unwrap();
        assert!(placement.status.is_none(), "alpha's agent is paused");

        // Alpha's owner runs its own workload on all of alpha-1's GPUs, then the agent wakes up.
        let member = alpha.client();
        let foreign: Pod = serde_json::from_value(json!({
            "metadata": {"name": "owners-own", "namespace": "default"},
            "spec": {"nodeName": "alpha-1", "containers": [{"name": "main", "image": "busybox:1.36",
                "resources": {"limits": {GPU_RESOURCE: "4"}}}]}
        }))
        .unwrap();
        Api::<Pod>::namespaced(member.clone(), "default")
            .create(&PostParams::default(), &foreign)
            .await
            .unwrap();
        alpha
            .process_mut("gpufed-agent")
            .unwrap()
            .signal(libc::SIGCONT);

        // Attempt 1 ends GangUnschedulable (the start timeout is 10 minutes away), unbilled.
        let failed = wait_until(LONG, "alpha to fail attempt 1", || {
            let api = alpha_placements.clone();
            let name = placement.metadata.name.clone().unwrap();
            async move {
                let p = api.get(&name).await.ok()?;
                let st = p.status?;
                (st.phase == Some(PlacementPhase::Failed)).then_some(st)
            }
        })
        .await
        .unwrap();
        assert_eq!(failed.reason.as_deref(), Some(GANG_UNSCHEDULABLE));
        let message = failed.message.unwrap_or_default();
        assert!(
            message.starts_with("1 of 2 replicas of local Job"),
            "{message}"
        );
        assert!(message.contains("Insufficient nvidia.com/gpu"), "{message}");
        assert_eq!(failed.gpu_seconds, 0);

        // Alpha's Job, and with it the replica that did start, is gone.
        let alpha_jobs: Api<Job> = Api::namespaced(member.clone(), JOBS_NAMESPACE);
        let job_name = failed.local_job.clone().unwrap();
        wait_until(LONG, "alpha's local Job to be deleted", || {
            let api = alpha_jobs.clone();
            let name = job_name.clone();
            async move { api.get_opt(&name).await.ok()?.is_none().then_some(()) }
        })
        .await
        .unwrap();

        // The hub retried at once on beta, where the gang ran to completion.
        let done: ComputeJob = wait_job(&hub, "team-a", "gang", LONG, "gang to succeed", |j| {
            j.status
                .as_ref()
                .is_some_and(|s| s.phase == JobPhase::Succeeded)
        })
        .await
        .unwrap();
        let st = done.status.unwrap();
        let [first, second] = &st.attempts[..] else {
            panic!("{:?}", st.attempts)
        };
        assert_eq!(
            (first.attempt, first.cluster.as_str(), first.phase),
            (1, "alpha", AttemptPhase::Failed)
        );
        assert_eq!(first.reason.as_deref(), Some(GANG_UNSCHEDULABLE));
        assert_eq!(
            first.gpu_seconds, 0,
            "a gang that never started bills nothing"
        );
        assert_eq!(
            (second.attempt, second.cluster.as_str(), second.phase),
            (2, "beta", AttemptPhase::Succeeded)
        );
        assert!(second.gpu_seconds > 0);
    });
}
