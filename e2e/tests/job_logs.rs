//! Reading a job's logs through the hub (docs/adr/0028-job-logs.md), end to end: tenants with
//! their own client certificates and RBAC on a real hub apiserver, `kubectl gpufed logs` (the
//! built binary), the hub chart's RBAC, the agent reading real containers' logs on a member whose
//! node is real, and a member whose agent is gone.
//!
//! Needs root and `make tools`, and `cargo build -p gpufed-operator -p kubectl-gpufed -p gpu-probe
//! --bins` first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gpufed_crds::joblog::reasons;
use gpufed_crds::{ComputeJob, JobLog, JobPhase, Placement};
use gpufed_e2e::hubctl::wait_job;
use gpufed_e2e::image::BUSYBOX;
use gpufed_e2e::joining::{MemberPlan, Pool, is_forbidden, wait_ready_with_free};
use gpufed_e2e::{NodeSpec, Tools, client_from_kubeconfig, run_test, wait_until};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

#[path = "support/plugin.rs"]
mod plugin_cli;
use plugin_cli::Plugin;

const HARD_DEADLINE: Duration = Duration::from_secs(420);
const LONG: Duration = Duration::from_secs(120);

/// Submits a ComputeJob running `script` in busybox's `sh`, one attempt only. On kwok nodes the
/// pods run (pretend to) for `GPUFED_SIM_DURATION`, 3 s by default.
async fn submit(
    hub: &Client,
    ns: &str,
    name: &str,
    (model, replicas): (&str, u32),
    script: &str,
    sim_duration: Option<&str>,
) {
    let env: Vec<Value> = sim_duration
        .map(|d| json!({"name": "GPUFED_SIM_DURATION", "value": d}))
        .into_iter()
        .collect();
    gpufed_e2e::joining::pool::apply(
        hub,
        "computejobs",
        &json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas, "gpusPerReplica": 1, "gpu": {"models": [model]},
            "maxPricePerGpuHour": "3.00", "maxDuration": "5m",
            "retry": {"maxAttempts": 1},
            "template": {"containers": [{"name": "main", "image": BUSYBOX,
                                         "command": ["sh", "-c", script], "env": env}]}
        }}),
    )
    .await
    .unwrap();
}

/// Binds `user` to the chart's `gpufed-tenant` ClusterRole in `ns` only.
async fn tenant(hub: &Client, ns: &str, user: &str) {
    gpufed_e2e::joining::pool::apply(
        hub,
        "rolebindings",
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": format!("{user}-gpufed"), "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "gpufed-tenant"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}),
    )
    .await
    .unwrap();
}

async fn job_where(
    hub: &Client,
    name: &str,
    what: &str,
    ok: impl Fn(&ComputeJob) -> bool,
) -> ComputeJob {
    wait_job(hub, "team-a", name, LONG, what, ok).await.unwrap()
}

fn phase(j: &ComputeJob) -> JobPhase {
    j.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

fn lines(replica: u32, n: u32) -> String {
    (1..=n)
        .map(|i| format!("replica {replica} line {i}\n"))
        .collect()
}

#[test]
fn a_tenant_reads_its_jobs_logs_through_the_hub_and_no_other_tenant_or_member_can() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let mut pool = Pool::join(
            &tools,
            "30s",
            &[
                MemberPlan::new("metal", vec![], "L4", "0.80").real_node(NodeSpec::new(
                    "metal-node",
                    "L4-24GB",
                    4,
                    "eu-west",
                )),
                MemberPlan::new(
                    "fake",
                    vec![NodeSpec::new("fake-h100-0", "H100-SXM-80GB", 8, "eu-west")],
                    "H100",
                    "2.00",
                ),
            ],
        )
        .await
        .unwrap();
        let hub = pool.hub.client();
        wait_ready_with_free(&hub, "metal", 4, LONG).await.unwrap();
        wait_ready_with_free(&hub, "fake", 8, LONG).await.unwrap();
        for (ns, user) in [("team-a", "alice"), ("team-b", "bob")] {
            pool.hub.create_namespace(ns).await.unwrap();
            tenant(&hub, ns, user).await;
        }
        let alice = Plugin::new(&tools, &pool.hub.user_kubeconfig("alice", &[]).unwrap());
        let bob = Plugin::new(&tools, &pool.hub.user_kubeconfig("bob", &[]).unwrap());

        submit(
            &hub,
            "team-a",
            "fails",
            ("L4", 1),
            "for i in 1 2 3 4 5; do echo step $i; done; echo giving up; exit 1",
            None,
        )
        .await;
        submit(
            &hub,
            "team-a",
            "talk",
            ("L4", 2),
            "for i in $(seq 1 8); do echo replica $JOB_COMPLETION_INDEX line $i; sleep 1; done",
            None,
        )
        .await;
        submit(&hub, "team-a", "waits", ("A100", 1), "echo never", None).await;
        submit(
            &hub,
            "team-a",
            "elsewhere",
            ("H100", 1),
            "sleep 600",
            Some("600s"),
        )
        .await;

        // -f on a running container: every line, as it comes, until the container ends.
        job_where(&hub, "talk", "talk running", |j| {
            phase(j) == JobPhase::Running
        })
        .await;
        let followed = alice
            .ok(&["-n", "team-a", "logs", "talk", "-f", "--replica", "1"])
            .await;
        assert_eq!(followed, lines(1, 8));
        // After the job ended, replica 0's whole log without -f.
        job_where(&hub, "talk", "talk to finish", |j| phase(j).is_finished()).await;
        assert_eq!(
            alice.ok(&["-n", "team-a", "logs", "talk"]).await,
            lines(0, 8)
        );

        // A failed job: its last lines in its status message, its whole log through the plugin.
        let failed = job_where(&hub, "fails", "fails to finish", |j| phase(j).is_finished()).await;
        let st = failed.status.clone().unwrap();
        assert_eq!(st.phase, JobPhase::Failed, "{st:?}");
        let message = st.message.unwrap_or_default();
        assert!(message.contains("exited with code 1"), "{message}");
        assert!(
            message.contains("last lines of ")
                && message.contains(": step 1 | step 2 | step 3 | step 4 | step 5 | giving up"),
            "{message}"
        );
        assert_eq!(
            alice.ok(&["-n", "team-a", "logs", "fails"]).await,
            "step 1\nstep 2\nstep 3\nstep 4\nstep 5\ngiving up\n"
        );

        // Clear errors: no such job, a replica out of range, no attempt yet.
        assert_eq!(
            alice.fails(&["-n", "team-a", "logs", "nope"]).await,
            "error: computejob \"nope\" not found in namespace \"team-a\""
        );
        assert_eq!(
            alice
                .fails(&["-n", "team-a", "logs", "talk", "--replica", "2"])
                .await,
            "error: replica 2 is out of range: job \"talk\" has 2 replicas (0 to 1)"
        );
        let no_attempt = alice.fails(&["-n", "team-a", "logs", "waits"]).await;
        assert!(
            no_attempt.starts_with("error: job \"waits\" has no attempt yet (phase Pending)"),
            "{no_attempt}"
        );

        // Tenant B cannot read tenant A's job, nor its logs, nor ask for them.
        assert_eq!(
            bob.fails(&["-n", "team-a", "logs", "talk"]).await,
            "error: forbidden: User \"bob\" cannot get computejobs.gpufed.io in namespace \"team-a\"; ask the hub's admin for that permission or use another --context"
        );
        let as_bob = pool.hub.client_as("bob", &[]).await.unwrap();
        let bobs_view: Api<JobLog> = Api::namespaced(as_bob.clone(), "team-a");
        assert!(is_forbidden(&bobs_view.list(&ListParams::default()).await));
        let ask: JobLog = serde_json::from_value(json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "JobLog",
            "metadata": {"name": "peek"}, "spec": {"job": "talk", "poll": 1}
        }))
        .unwrap();
        assert!(is_forbidden(
            &bobs_view.create(&PostParams::default(), &ask).await
        ));
        // A JobLog names a job of its own namespace only: bob's finds no "talk" in team-b.
        let bobs_own: Api<JobLog> = Api::namespaced(as_bob, "team-b");
        bobs_own.create(&PostParams::default(), &ask).await.unwrap();
        let answered = wait_until(LONG, "the hub answers bob's JobLog", || {
            let api = bobs_own.clone();
            async move {
                let l = api.get("peek").await.ok()?;
                l.status.filter(|s| s.observed_poll == Some(1))
            }
        })
        .await
        .unwrap();
        assert_eq!(answered.reason.as_deref(), Some(reasons::JOB_NOT_FOUND));
        assert_eq!(
            answered.message.as_deref(),
            Some("computejob \"talk\" not found in namespace \"team-b\"")
        );
        assert_eq!(answered.lines, None);

        // A member's hub credential reads no JobLog and no other member's Placements (where the
        // answers are).
        for (member, other) in [("fake", "metal"), ("metal", "fake")] {
            let creds = client_from_kubeconfig(&pool.joined(member).unwrap().hub_kubeconfig)
                .await
                .unwrap();
            let lp = ListParams::default();
            assert!(is_forbidden(
                &Api::<JobLog>::all(creds.clone()).list(&lp).await
            ));
            assert!(is_forbidden(
                &Api::<JobLog>::namespaced(creds.clone(), "team-a")
                    .list(&lp)
                    .await
            ));
            let theirs = gpufed_crds::naming::member_namespace(other);
            assert!(is_forbidden(
                &Api::<Placement>::namespaced(creds, &theirs).list(&lp).await
            ));
        }

        // A member whose agent is gone: the hub says so after its timeout.
        job_where(&hub, "elsewhere", "elsewhere running on fake", |j| {
            phase(j) == JobPhase::Running
        })
        .await;
        pool.member_mut("fake")
            .unwrap()
            .process_mut("gpufed-agent")
            .unwrap()
            .signal(libc::SIGKILL);
        assert_eq!(
            alice.fails(&["-n", "team-a", "logs", "elsewhere"]).await,
            "error: member \"fake\" did not answer within 15s: its agent may be down or cut off from the hub; try again later"
        );

        // The plugin cleans up after itself.
        let left: Api<JobLog> = Api::namespaced(hub.clone(), "team-a");
        let left: Vec<Value> = left
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|l| json!(l.metadata.name))
            .collect();
        assert!(left.is_empty(), "JobLogs left behind: {left:?}");
    });
}
