//! Which Placements a member runs, against real apiservers: only the current attempt of a job ever
//! gets a local Job (a stale one is rejected, and one that was running is stopped), a Placement
//! the hub deletes takes its local Job and pods with it (and a gang's Service and NetworkPolicy,
//! which give its replicas names and let only them reach each other), and Placements the member cannot serve
//! are rejected with the reason. The test plays the hub's part by writing Placements itself.
//!
//! Needs `cargo build --bins` first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use gpufed_crds::naming::{local_job_name, member_namespace, placement_name};
use gpufed_crds::{MemberCluster, Placement, PlacementPhase};
use gpufed_e2e::joining::{JOBS_NAMESPACE, MemberPlan, Pool, placement_phase};
use gpufed_e2e::{NodeSpec, Tools, run_test, wait_until};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

/// Longest this test may take, start-up of the clusters included: past it the test fails, its
/// components are killed and their logs printed (see [`run_test`]).
const HARD_DEADLINE: Duration = Duration::from_secs(300);

const WAIT: Duration = Duration::from_secs(60);

/// A Placement of the job with UID `uid`, attempt `attempt`, in alpha's namespace, for `cluster`
/// and `model`, whose pod runs `seconds` on kwok.
fn placement(uid: &str, attempt: u32, cluster: &str, model: &str, seconds: u32) -> Placement {
    serde_json::from_value(json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "Placement",
        "metadata": {"name": placement_name(uid, attempt), "namespace": member_namespace("alpha")},
        "spec": {
            "job": {"uid": uid}, "attempt": attempt, "cluster": cluster,
            "replicas": 1, "gpusPerReplica": 1, "totalGpus": 1, "model": model,
            "pricePerGpuHour": "2.40", "maxDuration": "1h",
            "template": {"containers": [{"name": "main", "image": "busybox:1.36",
                "env": [{"name": "GPUFED_SIM_DURATION", "value": format!("{seconds}s")}]}]}
        }
    }))
    .unwrap()
}

/// Stops the watch of [`record_jobs`] when dropped, before the clusters it watches go away.
struct StopOnDrop(tokio::task::AbortHandle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every local gpufed Job name ever seen in the jobs namespace, from a watch started before any
/// Placement.
/// The watch backs off on errors: without that, a watch of an apiserver that went away retries in
/// a loop that never yields, and the test's runtime could never shut down.
async fn record_jobs(jobs: Api<Job>) -> (Arc<Mutex<BTreeSet<String>>>, StopOnDrop) {
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    let sink = seen.clone();
    let task = tokio::spawn(async move {
        // gpufed's local Jobs, not the member's lease Job (ADR 0021).
        let managed = watcher::Config::default().labels("app.kubernetes.io/managed-by=gpufed");
        let mut stream = watcher(jobs, managed).default_backoff().boxed();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Apply(j) | watcher::Event::InitApply(j)) => {
                    sink.lock()
                        .unwrap()
                        .insert(j.metadata.name.unwrap_or_default());
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(WAIT, ready_rx)
        .await
        .expect("the watch of local Jobs did not list them")
        .unwrap();
    (seen, StopOnDrop(task.abort_handle()))
}

async fn wait_phase(api: &Api<Placement>, name: &str, want: PlacementPhase) -> Placement {
    wait_until(WAIT, &format!("Placement {name} {want:?}"), || {
        let api = api.clone();
        let name = name.to_string();
        async move {
            api.get(&name)
                .await
                .ok()
                .filter(|p| placement_phase(p).0 == Some(want))
        }
    })
    .await
    .unwrap()
}

async fn wait_job(jobs: &Api<Job>, name: &str, present: bool) {
    wait_until(WAIT, &format!("local Job {name} present={present}"), || {
        let jobs = jobs.clone();
        let name = name.to_string();
        async move { (jobs.get_opt(&name).await.ok()?.is_some() == present).then_some(()) }
    })
    .await
    .unwrap();
}

#[test]
fn only_current_attempts_run_and_deleted_placements_take_their_jobs_along() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let pool = Pool::join(
            &tools,
            "30s",
            &[MemberPlan::new(
                "alpha",
                vec![NodeSpec::new("alpha-h100-0", "H100-SXM-80GB", 8, "eu-west")],
                "H100",
                "2.40",
            )],
        )
        .await
        .unwrap();
        let hub = pool.hub.client();
        let members: Api<MemberCluster> = Api::all(hub.clone());
        wait_until(Duration::from_secs(120), "alpha's inventory", || {
            let members = members.clone();
            async move { (members.get("alpha").await.ok()?.status?.total_gpus == 8).then_some(()) }
        })
        .await
        .unwrap();
        let alpha = pool.member("alpha").unwrap().client();
        let jobs: Api<Job> = Api::namespaced(alpha.clone(), JOBS_NAMESPACE);
        let (seen, _watch) = record_jobs(jobs.clone()).await;
        let placements: Api<Placement> = Api::namespaced(hub.clone(), &member_namespace("alpha"));
        let pp = PostParams::default();

        // Attempt 2 of job U is known before attempt 1 shows up: attempt 1 is never run.
        let u2 = placement("uid-u", 2, "alpha", "H100", 600);
        placements.create(&pp, &u2).await.unwrap();
        wait_phase(
            &placements,
            &u2.metadata.name.clone().unwrap(),
            PlacementPhase::Running,
        )
        .await;
        let u1 = placement("uid-u", 1, "alpha", "H100", 600);
        placements.create(&pp, &u1).await.unwrap();
        let rejected = wait_phase(
            &placements,
            &u1.metadata.name.clone().unwrap(),
            PlacementPhase::Rejected,
        )
        .await;
        assert_eq!(
            placement_phase(&rejected).1.as_deref(),
            Some("StaleAttempt")
        );
        assert!(
            !seen.lock().unwrap().contains(&local_job_name("uid-u", 1)),
            "a stale attempt never gets a local Job"
        );

        // Attempt 1 of job V runs; then attempt 2 arrives: attempt 1's Job is stopped, attempt 2 runs.
        let v1 = placement("uid-v", 1, "alpha", "H100", 600);
        placements.create(&pp, &v1).await.unwrap();
        wait_phase(
            &placements,
            &v1.metadata.name.clone().unwrap(),
            PlacementPhase::Running,
        )
        .await;
        let v2 = placement("uid-v", 2, "alpha", "H100", 600);
        placements.create(&pp, &v2).await.unwrap();
        let stale = wait_phase(
            &placements,
            &v1.metadata.name.clone().unwrap(),
            PlacementPhase::Rejected,
        )
        .await;
        assert_eq!(placement_phase(&stale).1.as_deref(), Some("StaleAttempt"));
        wait_job(&jobs, &local_job_name("uid-v", 1), false).await;
        wait_phase(
            &placements,
            &v2.metadata.name.clone().unwrap(),
            PlacementPhase::Running,
        )
        .await;

        // The hub deletes a Placement (job deleted, attempt lost): its local Job and pods go.
        let u2_job = local_job_name("uid-u", 2);
        placements
            .delete(&u2.metadata.name.clone().unwrap(), &DeleteParams::default())
            .await
            .unwrap();
        wait_job(&jobs, &u2_job, false).await;
        let pods: Api<Pod> = Api::namespaced(alpha.clone(), JOBS_NAMESPACE);
        wait_until(WAIT, "the deleted placement's pods to go", || {
            let pods = pods.clone();
            let selector = format!("batch.kubernetes.io/job-name={u2_job}");
            async move {
                pods.list(&ListParams::default().labels(&selector))
                    .await
                    .ok()?
                    .items
                    .is_empty()
                    .then_some(())
            }
        })
        .await
        .unwrap();

        // A gang of two: its replicas get host names under a headless Service of the Job's name,
        // and a NetworkPolicy that admits only each other; both go with the Job.
        let mut g1 = placement("uid-g", 1, "alpha", "H100", 600);
        g1.spec.replicas = 2;
        g1.spec.total_gpus = 2;
        placements.create(&pp, &g1).await.unwrap();
        let g1_name = g1.metadata.name.clone().unwrap();
        wait_phase(&placements, &g1_name, PlacementPhase::Running).await;
        let gang = local_job_name("uid-g", 1);
        let gang_uid = jobs.get(&gang).await.unwrap().metadata.uid.unwrap();
        let services: Api<Service> = Api::namespaced(alpha.clone(), JOBS_NAMESPACE);
        let policies: Api<NetworkPolicy> = Api::namespaced(alpha.clone(), JOBS_NAMESPACE);
        let service = wait_until(WAIT, "the gang's Service", || {
            let services = services.clone();
            let gang = gang.clone();
            async move { services.get_opt(&gang).await.ok()? }
        })
        .await
        .unwrap();
        let policy = policies.get(&gang).await.unwrap();
        for owners in [
            service.metadata.owner_references.unwrap(),
            policy.metadata.owner_references.unwrap(),
        ] {
            assert_eq!(owners.len(), 1);
            assert_eq!(
                (owners[0].kind.as_str(), owners[0].uid.as_str()),
                ("Job", gang_uid.as_str())
            );
        }
        let spec = service.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        let gang_pods = pods
            .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={gang}")))
            .await
            .unwrap()
            .items;
        let mut hosts: Vec<String> = gang_pods
            .iter()
            .map(|p| {
                let ps = p.spec.as_ref().unwrap();
                assert_eq!(ps.subdomain.as_deref(), Some(gang.as_str()));
                let env = ps.containers[0].env.clone().unwrap_or_default();
                let coordinator = env.iter().find(|e| e.name == "GPUFED_COORDINATOR");
                assert_eq!(
                    coordinator.and_then(|e| e.value.clone()),
                    Some(format!("{gang}-0.{gang}"))
                );
                // The Service selects every replica.
                let labels = p.metadata.labels.clone().unwrap_or_default();
                assert!(
                    spec.selector
                        .iter()
                        .flatten()
                        .all(|(k, v)| labels.get(k) == Some(v)),
                    "{labels:?}"
                );
                ps.hostname.clone().unwrap_or_default()
            })
            .collect();
        hosts.sort();
        assert_eq!(hosts, vec![format!("{gang}-0"), format!("{gang}-1")]);
        placements
            .delete(&g1_name, &DeleteParams::default())
            .await
            .unwrap();
        wait_job(&jobs, &gang, false).await;
        wait_until(
            WAIT,
            "the gang's Service and NetworkPolicy to go with its Job",
            || {
                let (services, policies, gang) = (services.clone(), policies.clone(), gang.clone());
                async move {
                    let gone = services.get_opt(&gang).await.ok()?.is_none()
                        && policies.get_opt(&gang).await.ok()?.is_none();
                    gone.then_some(())
                }
            },
        )
        .await
        .unwrap();

        // Placements this member cannot serve are rejected with the reason, and never run.
        let elsewhere = placement("uid-w", 1, "beta", "H100", 5);
        let a100 = placement("uid-m", 1, "alpha", "A100", 5);
        placements.create(&pp, &elsewhere).await.unwrap();
        placements.create(&pp, &a100).await.unwrap();
        for (p, reason) in [(&elsewhere, "WrongCluster"), (&a100, "ModelUnavailable")] {
            let r = wait_phase(
                &placements,
                &p.metadata.name.clone().unwrap(),
                PlacementPhase::Rejected,
            )
            .await;
            assert_eq!(placement_phase(&r).1.as_deref(), Some(reason));
            assert!(r.status.unwrap().message.is_some());
        }
        let seen = seen.lock().unwrap().clone();
        for uid in ["uid-w", "uid-m"] {
            assert!(
                !seen.contains(&local_job_name(uid, 1)),
                "{uid} ran: {seen:?}"
            );
        }
        // Every local Job that ever existed belongs to a current attempt.
        let expected: BTreeSet<String> = [
            local_job_name("uid-g", 1),
            local_job_name("uid-u", 2),
            local_job_name("uid-v", 1),
            local_job_name("uid-v", 2),
        ]
        .into_iter()
        .collect();
        assert_eq!(seen, expected);
    });
}
