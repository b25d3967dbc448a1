//! An agent killed outright (`kill -9`) cannot fence its jobs, so the jobs are owned by the
//! member's lease (ADR 0021): a Job of the agent's own that runs no pod and whose
//! `activeDeadlineSeconds` the agent keeps pushing forward while it is alive. Here, on real nodes,
//! the member's own controllers fail the lapsed lease, delete it and garbage-collect the attempt's
//! Job, stopping its container before the hub gives the attempt to another member, and the two
//! runs never overlap (container times from the two kubelets).
//!
//! Needs root and `make tools`, and `cargo build --bins` first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use gpufed_crds::{AttemptPhase, JobPhase};
use gpufed_e2e::hubctl::wait_job;
use gpufed_e2e::image::BUSYBOX;
use gpufed_e2e::joining::{JOBS_NAMESPACE, Pool};
use gpufed_e2e::{Tools, run_test, wait_until};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

const HARD_DEADLINE: Duration = Duration::from_secs(300);
const LONG: Duration = Duration::from_secs(90);

/// When a container started and, once it has terminated, finished.
type Times = (Time, Option<Time>);

/// The (start, finish) of the container of a pod (finish once it has terminated).
fn times(pod: &Pod) -> Option<Times> {
    let state = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .clone()?;
    if let Some(r) = state.running {
        return Some((r.started_at?, None));
    }
    let t = state.terminated?;
    Some((t.started_at?, Some(t.finished_at?)))
}

/// The container times of the job's pod on `member`, as a list shows them now.
async fn container_times(member: &Client, job_uid: &str) -> Option<Times> {
    let pods: Api<Pod> = Api::namespaced(member.clone(), JOBS_NAMESPACE);
    let list = pods
        .list(&ListParams::default().labels(&format!("gpufed.io/job-uid={job_uid}")))
        .await
        .ok()?;
    times(list.items.first()?)
}

/// Watches the job's pods on `member` and keeps the last container times seen: a pod stopped by
/// with its Job is deleted right after its container ends, so a list can miss that moment;
/// the watch sees the kubelet's status update before the deletion.
fn watch_times(
    member: &Client,
    job_uid: &str,
) -> (Arc<Mutex<Option<Times>>>, tokio::task::JoinHandle<()>) {
    let pods: Api<Pod> = Api::namespaced(member.clone(), JOBS_NAMESPACE);
    let config = watcher::Config::default().labels(&format!("gpufed.io/job-uid={job_uid}"));
    let seen = Arc::new(Mutex::new(None));
    let sink = seen.clone();
    let task = tokio::spawn(async move {
        let mut stream = watcher(pods, config).default_backoff().boxed();
        while let Some(ev) = stream.next().await {
            if let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = ev
                && let Some(t) = times(&p)
            {
                *sink.lock().unwrap() = Some(t);
            }
        }
    });
    (seen, task)
}

#[test]
fn a_killed_agents_job_stops_on_its_lease_before_the_hub_runs_it_elsewhere() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let mut pool = Pool::two_real_l4_members(&tools, "team-a", LONG)
            .await
            .unwrap();
        let hub = pool.hub.client();
        gpufed_e2e::joining::pool::apply(
            &hub,
            "computejobs",
            &json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                    "metadata": {"name": "long", "namespace": "team-a"},
                    "spec": {"gpusPerReplica": 1, "gpu": {"models": ["L4"]},
                             "maxPricePerGpuHour": "1.00", "maxDuration": "30m",
                             "template": {"containers": [{"name": "main", "image": BUSYBOX,
                                 "command": ["sh", "-c", "exec sleep 600"]}]}}}),
        )
        .await
        .unwrap();
        let job = wait_job(&hub, "team-a", "long", LONG, "long running on alpha", |j| {
            j.status.as_ref().is_some_and(|s| {
                s.phase == JobPhase::Running
                    && s.placement.as_ref().is_some_and(|p| p.cluster == "alpha")
            })
        })
        .await
        .unwrap();
        let uid = job.uid().unwrap();
        let alpha = pool.member("alpha").unwrap().client();
        let beta = pool.member("beta").unwrap().client();
        // Running for a while, the member's lease renewed more than once (5 s leases); the Job
        // itself owned by the lease, with the attempt's maxDuration (30 m) as its deadline.
        tokio::time::sleep(Duration::from_secs(12)).await;
        let local: Api<Job> = Api::namespaced(alpha.clone(), JOBS_NAMESPACE);
        let attempt_jobs = ListParams::default().labels(&format!("gpufed.io/job-uid={uid}"));
        let running = local.list(&attempt_jobs).await.unwrap().items.remove(0);
        assert_eq!(running.spec.unwrap().active_deadline_seconds, Some(1800));
        let lease = local.get("gpufed-member-lease").await.unwrap();
        assert_eq!(
            running.metadata.owner_references.unwrap()[0].uid,
            lease.uid().unwrap()
        );
        let deadline = lease.spec.unwrap().active_deadline_seconds.unwrap();
        assert!(deadline >= 12, "the lease moved forward: {deadline}");
        let (start_1, _) = container_times(&alpha, &uid).await.unwrap();

        let (seen_1, watch_1) = watch_times(&alpha, &uid);
        // kill -9 of alpha's agent: nothing on alpha can fence the job any more.
        pool.members
            .iter_mut()
            .find(|m| m.name() == "alpha")
            .unwrap()
            .process_mut("gpufed-agent")
            .unwrap()
            .signal(libc::SIGKILL);

        // Alpha's controllers stop the container once the lease runs out…
        let (_, end_1) = wait_until(LONG, "attempt 1's container stopped on alpha", || {
            let seen = seen_1.clone();
            async move {
                let (s, f) = seen.lock().unwrap().clone()?;
                Some((s, f?))
            }
        })
        .await
        .unwrap();
        watch_1.abort();
        // The lapsed lease and the Job it owned are gone from alpha.
        wait_until(LONG, "attempt 1's local Job deleted with the lease", || {
            let local = local.clone();
            let attempt_jobs = attempt_jobs.clone();
            async move {
                let left = local.list(&attempt_jobs).await.ok()?.items;
                let lease = local.get_opt("gpufed-member-lease").await.ok()?;
                (left.is_empty() && lease.is_none()).then_some(())
            }
        })
        .await
        .unwrap();
        // …and the hub, once alpha's heartbeat has expired, runs attempt 2 on beta, later.
        let (start_2, _) = wait_until(LONG, "attempt 2's container running on beta", || {
            let beta = beta.clone();
            let uid = uid.clone();
            async move { container_times(&beta, &uid).await }
        })
        .await
        .unwrap();
        assert!(
            end_1.0 <= start_2.0,
            "attempt 1 ran {start_1:?}..{end_1:?} on alpha, attempt 2 started {start_2:?} on beta"
        );
        let job = wait_job(
            &hub,
            "team-a",
            "long",
            LONG,
            "attempt 2 running on beta",
            |j| {
                j.status.as_ref().is_some_and(|s| {
                    s.attempt == 2
                        && s.phase == JobPhase::Running
                        && s.placement.as_ref().is_some_and(|p| p.cluster == "beta")
                })
            },
        )
        .await
        .unwrap();
        let attempts = job.status.unwrap().attempts;
        assert_eq!(attempts[0].cluster, "alpha");
        assert_eq!(attempts[0].phase, AttemptPhase::Lost, "{:?}", attempts[0]);
    });
}
