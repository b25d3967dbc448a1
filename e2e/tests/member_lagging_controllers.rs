//! A member whose controllers lag behind a dead agent, against real apiservers, kube-scheduler and
//! kwok — what the 30-minute chaos run found (docs/reliability.md): the agent creates an attempt's
//! local Job while its lease is live, then dies; the member's kube-controller-manager, stalled,
//! creates the Job's pods only after the hub has given the attempt to another member. Pods are
//! created behind the scheduling gate `gpufed.io/member-lease`, which only a live agent removes
//! for a current attempt, so they never start: the attempt runs once, on beta.
//!
//! Needs `cargo build -p gpufed-operator -p kubectl-gpufed -p gpu-probe --bins` first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use gpufed_crds::naming::member_namespace;
use gpufed_crds::{AttemptPhase, JobPhase, Placement, PlacementPhase};
use gpufed_e2e::hubctl::wait_job;
use gpufed_e2e::joining::{JOBS_NAMESPACE, MemberPlan, Pool, wait_ready_with_free};
use gpufed_e2e::{NodeSpec, Tools, run_test, wait_until};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

const HARD_DEADLINE: Duration = Duration::from_secs(300);
const LONG: Duration = Duration::from_secs(90);

#[test]
fn pods_a_lagging_member_creates_after_its_agent_died_never_start() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let node = |m: &str| {
            vec![NodeSpec::new(
                &format!("{m}-0"),
                "H100-SXM-80GB",
                8,
                "eu-west",
            )]
        };
        let mut pool = Pool::join(
            &tools,
            "15s",
            &[
                MemberPlan::new("alpha", node("alpha"), "H100", "1.00"),
                MemberPlan::new("beta", node("beta"), "H100", "2.00"),
            ],
        )
        .await
        .unwrap();
        let hub = pool.hub.client();
        pool.hub.create_namespace("team-a").await.unwrap();
        for m in ["alpha", "beta"] {
            wait_ready_with_free(&hub, m, 8, LONG).await.unwrap();
        }
        let alpha = pool.member("alpha").unwrap().client();

        // Every pod alpha ever runs, as its watch sees them.
        let started: Arc<Mutex<Vec<String>>> = Arc::default();
        let watch = {
            let pods: Api<Pod> = Api::namespaced(alpha.clone(), JOBS_NAMESPACE);
            let started = started.clone();
            tokio::spawn(async move {
                let mut stream = watcher(pods, watcher::Config::default())
                    .default_backoff()
                    .boxed();
                while let Some(ev) = stream.next().await {
                    if let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = ev
                        && p.status
                            .as_ref()
                            .and_then(|s| s.start_time.as_ref())
                            .is_some()
                    {
                        let name = p.metadata.name.clone().unwrap_or_default();
                        let mut seen = started.lock().unwrap();
                        if !seen.contains(&name) {
                            seen.push(name);
                        }
                    }
                }
            })
        };

        // Alpha's controllers stall; the agent creates the attempt's Job (its lease is live).
        pool.member_mut("alpha")
            .unwrap()
            .process_mut("kube-controller-manager")
            .unwrap()
            .signal(libc::SIGSTOP);
        gpufed_e2e::joining::pool::apply(
            &hub,
            "computejobs",
            &json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                    "metadata": {"name": "late", "namespace": "team-a"},
                    "spec": {"gpusPerReplica": 1, "gpu": {"models": ["H100"]},
                             "maxPricePerGpuHour": "5.00", "maxDuration": "10m",
                             "template": {"containers": [{"name": "main", "image": "busybox:1.36",
                                 "env": [{"name": "GPUFED_SIM_DURATION", "value": "20s"}]}]}}}),
        )
        .await
        .unwrap();
        let placements: Api<Placement> = Api::namespaced(hub.clone(), &member_namespace("alpha"));
        let accepted = wait_until(LONG, "alpha to accept attempt 1", || {
            let api = placements.clone();
            async move {
                api.list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .find(|p| {
                        p.status.as_ref().and_then(|s| s.phase) == Some(PlacementPhase::Accepted)
                    })
            }
        })
        .await
        .unwrap();
        let local = accepted.status.unwrap().local_job.unwrap();
        let jobs: Api<Job> = Api::namespaced(alpha.clone(), JOBS_NAMESPACE);
        assert!(jobs.get_opt(&local).await.unwrap().is_some());

        // The agent dies; the hub gives the attempt to beta after its heartbeat timeout.
        pool.member_mut("alpha")
            .unwrap()
            .process_mut("gpufed-agent")
            .unwrap()
            .signal(libc::SIGKILL);
        wait_job(&hub, "team-a", "late", LONG, "attempt 2 on beta", |j| {
            j.status.as_ref().is_some_and(|s| {
                s.attempts
                    .iter()
                    .any(|a| a.attempt == 2 && a.cluster == "beta")
            })
        })
        .await
        .unwrap();

        // Alpha's controllers catch up: the Job controller creates the attempt's pod, the lease
        // lapses and the garbage collector deletes the Job. The pod never starts.
        pool.member_mut("alpha")
            .unwrap()
            .process_mut("kube-controller-manager")
            .unwrap()
            .signal(libc::SIGCONT);
        wait_until(LONG, "alpha's Job of attempt 1 to be gone", || {
            let jobs = jobs.clone();
            let local = local.clone();
            async move { jobs.get_opt(&local).await.ok()?.is_none().then_some(()) }
        })
        .await
        .unwrap();
        let done = wait_job(&hub, "team-a", "late", LONG, "late to succeed", |j| {
            j.status
                .as_ref()
                .is_some_and(|s| s.phase == JobPhase::Succeeded)
        })
        .await
        .unwrap();
        watch.abort();
        assert!(
            started.lock().unwrap().is_empty(),
            "pods of the given-away attempt started on alpha: {:?}",
            started.lock().unwrap()
        );
        let st = done.status.unwrap();
        let last = st.attempts.last().unwrap();
        assert_eq!(
            (last.cluster.as_str(), last.phase),
            ("beta", AttemptPhase::Succeeded)
        );
        assert_eq!(st.attempts[0].cluster, "alpha");
        assert_eq!(st.attempts[0].gpu_seconds, 0, "attempt 1 never ran");
    });
}
