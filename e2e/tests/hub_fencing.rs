//! A hub leader paused past its Lease (SIGSTOP) must not write when it runs again
//! (docs/adr/0016-leadership-fenced-writes.md). Two real hub processes, each with its own
//! credentials, against an apiserver that audits every write: the test tells the replicas' writes
//! apart by the audit log's user.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use gpufed_crds::{ComputeJob, JobPhase};
use gpufed_e2e::hubctl::{
    self, apply, create_member, create_pool, keep_heartbeating, node, placements, report_inventory,
    start_hub_as_own_user, wait_job,
};
use gpufed_e2e::{Cluster, Tools, run_test, wait_until};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use serde_json::json;

/// The most the test may take, start-up included.
const HARD_DEADLINE: Duration = Duration::from_secs(300);

const T: Duration = Duration::from_secs(60);

/// The pool's heartbeat timeout (the least the CRD allows).
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(15);

async fn lease_holder(c: &Client) -> Option<String> {
    Api::<Lease>::namespaced(c.clone(), "gpufed-system")
        .get_opt("gpufed-hub")
        .await
        .ok()??
        .spec?
        .holder_identity
}

/// `GET /metrics` on 127.0.0.1:`port`.
async fn metrics(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    let _ = s
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

async fn submit(c: &Client, name: &str) {
    apply::<ComputeJob>(
        c,
        &json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                "metadata": {"name": name, "namespace": "team-a"},
                "spec": {"gpusPerReplica": 1, "gpu": {"models": ["L4"]},
                         "template": {"containers": [{"name": "main", "image": "busybox:1.36"}]}}}),
    )
    .await
    .unwrap();
}

fn placed(j: &ComputeJob) -> Option<(u32, String)> {
    let s = j.status.as_ref()?;
    if !matches!(s.phase, JobPhase::Placed | JobPhase::Running) {
        return None;
    }
    Some((s.attempt, s.placement.as_ref()?.cluster.clone()))
}

/// `(cluster, attempt)` of every Placement of job `job` on `clusters`.
async fn placements_of(c: &Client, job: &str, clusters: &[&str]) -> Vec<(String, u32)> {
    let mut out = vec![];
    let uids = gpufed_e2e::placements::job_uids_named(c, job)
        .await
        .unwrap();
    for cluster in clusters {
        for p in placements(c, cluster).await.unwrap() {
            if uids.contains(&p.spec.job.uid) {
                out.push((cluster.to_string(), p.spec.attempt));
            }
        }
    }
    out
}

async fn wait_exit(hub: &mut Cluster, name: &str, timeout: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if hub.process_mut(name).unwrap().exited().is_some() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[test]
fn a_leader_stopped_past_its_lease_writes_nothing_when_it_resumes() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let mut hub = hubctl::audited_hub_cluster(&tools, "hub-fence", &[])
            .await
            .unwrap();
        let c = hub.client();
        start_hub_as_own_user(&tools, &mut hub, "hub-a", &[]).unwrap();
        wait_until(T, "hub-a to lead", || async {
            (lease_holder(&c).await? == "hub-a").then_some(())
        })
        .await
        .unwrap();
        let port_b = start_hub_as_own_user(&tools, &mut hub, "hub-b", &[]).unwrap();
        wait_until(T, "hub-b standing by", || async {
            metrics(port_b)
                .await
                .contains("gpufed_leader 0")
                .then_some(())
        })
        .await
        .unwrap();

        create_pool(&c, "default", "CheapestFit", "15s")
            .await
            .unwrap();
        // alpha is cheaper and has room for one job; beta takes the rest.
        create_member(&c, "alpha", "default", "eu-west", &[("L4", "0.50")])
            .await
            .unwrap();
        create_member(&c, "beta", "default", "eu-west", &[("L4", "0.90")])
            .await
            .unwrap();
        let alpha_beat = keep_heartbeating(c.clone(), "alpha");
        let _beta_beat = keep_heartbeating(c.clone(), "beta");
        report_inventory(&c, "alpha", vec![node("a-0", "L4", 23034, 1, 1)])
            .await
            .unwrap();
        report_inventory(&c, "beta", vec![node("b-0", "L4", 23034, 8, 8)])
            .await
            .unwrap();
        hubctl::wait_member_condition(&c, &["alpha", "beta"], "Schedulable", true, T)
            .await
            .unwrap();
        submit(&c, "before").await;
        let j = wait_job(&c, "team-a", "before", T, "placed by hub-a", |j| {
            placed(j).is_some()
        })
        .await
        .unwrap();
        assert_eq!(placed(&j), Some((1, "alpha".to_string())));
        // The audit tells the replicas apart: hub-a's writes so far are there under its name.
        let writes = hub.audited_writes().unwrap();
        assert!(
            writes.iter().any(|w| w.user == "hub-a"),
            "no write of hub-a audited"
        );
        // The standby wrote nothing but its start-up check that its namespace exists.
        let standby: Vec<_> = writes
            .iter()
            .filter(|w| w.user == "hub-b" && !w.uri.starts_with("/api/v1/namespaces?"))
            .collect();
        assert!(standby.is_empty(), "the standby wrote: {standby:?}");

        // alpha goes silent, and hub-a freezes with alpha's last renewal in its cache. Its own
        // clock keeps counting: when it runs again, alpha's heartbeat is past the timeout in its
        // view — a failover decision it would write at once, though it no longer leads.
        alpha_beat.abort();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stopped = Instant::now();
        hub.process_mut("hub-a").unwrap().signal(libc::SIGSTOP);

        // hub-b takes over after the Lease runs out, and places a job while hub-a is stopped.
        wait_until(T, "hub-b to lead", || async {
            (lease_holder(&c).await? == "hub-b").then_some(())
        })
        .await
        .unwrap();
        let took_over = stopped.elapsed();
        submit(&c, "during").await;
        let j = wait_job(&c, "team-a", "during", T, "placed by hub-b", |j| {
            placed(j).is_some()
        })
        .await
        .unwrap();
        assert_eq!(placed(&j), Some((1, "beta".to_string())));

        // Resume hub-a once alpha's heartbeat is past the timeout on hub-a's clock (hub-b first
        // saw it at its takeover, so it still counts alpha Ready for a while).
        let resume_after = HEARTBEAT_TIMEOUT + Duration::from_millis(1500);
        if let Some(left) = resume_after.checked_sub(stopped.elapsed()) {
            tokio::time::sleep(left).await;
        }
        assert!(
            stopped.elapsed() < took_over + HEARTBEAT_TIMEOUT,
            "resumed too late: hub-b may already have failed alpha over itself"
        );
        let resumed = k8s_openapi::jiff::Timestamp::now();
        hub.process_mut("hub-a").unwrap().signal(libc::SIGCONT);

        // hub-a stands down: it exits, to be restarted as a standby.
        assert!(
            wait_exit(&mut hub, "hub-a", T).await,
            "hub-a kept running after it lost the Lease"
        );
        let log = std::fs::read_to_string(hub.process_mut("hub-a").unwrap().log_path())
            .unwrap_or_default();
        let refused = log.matches("refused a write").count();
        eprintln!(
            "hub-b took over {took_over:?} after hub-a stopped; hub-a resumed after {resume_after:?}, \
             refused {refused} writes and exited"
        );
        // Nothing of hub-a's reached the apiserver after it resumed.
        let late: Vec<_> = hub
            .audited_writes()
            .unwrap()
            .into_iter()
            .filter(|w| w.user == "hub-a" && w.received >= resumed)
            .collect();
        assert!(
            late.is_empty(),
            "hub-a wrote after it resumed without the Lease ({refused} writes refused): {late:#?}"
        );
        // It did try (its stale view had alpha expired), and the fence refused.
        assert!(
            refused > 0,
            "hub-a tried no write after resuming; the test proves nothing"
        );

        // hub-b's state holds: it fails alpha over itself, with the next attempt number, and
        // every job has exactly one Placement, of its current attempt.
        let j = wait_job(&c, "team-a", "before", T, "attempt 2 on beta", |j| {
            placed(j).is_some_and(|(a, _)| a == 2)
        })
        .await
        .unwrap();
        assert_eq!(placed(&j), Some((2, "beta".to_string())));
        let attempts: Vec<u32> = j
            .status
            .as_ref()
            .unwrap()
            .attempts
            .iter()
            .map(|a| a.attempt)
            .collect();
        assert_eq!(attempts, vec![1, 2], "no attempt number reused");
        wait_until(T, "attempt 1's placement removed", || async {
            (placements_of(&c, "before", &["alpha", "beta"]).await == vec![("beta".into(), 2)])
                .then_some(())
        })
        .await
        .unwrap();
        assert_eq!(
            placements_of(&c, "during", &["alpha", "beta"]).await,
            vec![("beta".to_string(), 1)],
            "no double placement"
        );
        let j = Api::<ComputeJob>::namespaced(c.clone(), "team-a")
            .get("during")
            .await
            .unwrap();
        assert_eq!(placed(&j), Some((1, "beta".to_string())));
        assert!(metrics(port_b).await.contains("gpufed_leader 1"));
    });
}
