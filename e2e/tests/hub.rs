//! The hub (`gpufed-operator hub`, a real process) against a real apiserver. The test stands in for
//! the members' agents (heartbeat Leases, inventories, Placement status) so each hub behaviour is
//! checked on its own: placement by model, memory and price; the pending explanation; gangs;
//! failover after a heartbeat stops with never two attempts at once, and the member registered
//! again then; cleanup on deletion; and two hub replicas with one acting.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gpufed_crds::{AttemptPhase, ComputeJob, JobPhase, PlacementPhase, PlacementStatus};
use gpufed_e2e::hubctl::{
    self, apply, create_member, create_pool, keep_heartbeating, node, placements, report_inventory,
    report_placement, start_hub, wait_job,
};
use gpufed_e2e::{Cluster, Tools, run_test, wait_until};
use gpufed_operator::hub::registration::AGENT_ROLE;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::rbac::v1::Role;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// The most a test here may take, start-up included: past it the test fails and its
/// components are killed (see [`run_test`]).
const HARD_DEADLINE: Duration = Duration::from_secs(300);

const T: Duration = Duration::from_secs(60);

async fn hub_cluster(name: &str) -> (Tools, Cluster) {
    let tools = Tools::locate().unwrap();
    let c = hubctl::hub_cluster(&tools, name, &[]).await.unwrap();
    (tools, c)
}

fn job_manifest(name: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["template"] = json!({"containers": [{"name": "main", "image": "busybox:1.36"}]});
    json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
           "metadata": {"name": name, "namespace": "team-a"}, "spec": spec})
}

async fn submit(client: &Client, name: &str, spec: Value) {
    apply::<ComputeJob>(client, &job_manifest(name, spec))
        .await
        .unwrap();
}

fn cluster_of(j: &ComputeJob) -> Option<String> {
    j.status
        .as_ref()?
        .placement
        .as_ref()
        .map(|p| p.cluster.clone())
}

fn placed_on(j: &ComputeJob) -> bool {
    j.status.as_ref().is_some_and(|s| {
        matches!(s.phase, JobPhase::Placed | JobPhase::Running) && s.placement.is_some()
    })
}

fn explanation(j: &ComputeJob) -> String {
    j.status
        .as_ref()
        .and_then(|s| s.explanation.clone())
        .unwrap_or_default()
}

async fn wait_schedulable(client: &Client, names: &[&str]) {
    hubctl::wait_member_condition(client, names, "Schedulable", true, T)
        .await
        .unwrap();
}

#[test]
fn jobs_go_where_model_memory_and_price_fit_and_the_rest_say_why_they_wait() {
    run_test(HARD_DEADLINE, || async {
        let (tools, mut hub) = hub_cluster("hub-place").await;
        start_hub(&tools, &mut hub, "hub-0", &[]).unwrap();
        let c = hub.client();
        create_pool(&c, "default", "CheapestFit", "20s")
            .await
            .unwrap();
        create_member(&c, "alpha", "default", "eu-west", &[("H100", "2.40")])
            .await
            .unwrap();
        create_member(&c, "beta", "default", "us-east", &[("A100", "1.20")])
            .await
            .unwrap();
        create_member(&c, "gamma", "default", "ap-south", &[("RTX4090", "0.35")])
            .await
            .unwrap();
        let _beats: Vec<_> = ["alpha", "beta", "gamma"]
            .iter()
            .map(|m| keep_heartbeating(c.clone(), m))
            .collect();
        report_inventory(
            &c,
            "alpha",
            vec![
                node("a-0", "H100", 81559, 8, 8),
                node("a-1", "H100", 81559, 8, 8),
            ],
        )
        .await
        .unwrap();
        report_inventory(&c, "beta", vec![node("b-0", "A100", 40960, 8, 8)])
            .await
            .unwrap();
        report_inventory(
            &c,
            "gamma",
            vec![
                node("g-0", "RTX4090", 24564, 4, 4),
                node("g-1", "RTX4090", 24564, 4, 4),
            ],
        )
        .await
        .unwrap();
        wait_schedulable(&c, &["alpha", "beta", "gamma"]).await;

        submit(
            &c,
            "h100-x8",
            json!({"gpusPerReplica": 8, "gpu": {"models": ["H100"]}}),
        )
        .await;
        submit(
            &c,
            "any-gpu",
            json!({"gpusPerReplica": 1, "gpu": {"models": ["RTX4090", "A100", "H100"]}}),
        )
        .await;
        submit(
            &c,
            "big-a100",
            json!({"gpusPerReplica": 1, "gpu": {"models": ["A100"], "minMemoryGiB": 80}}),
        )
        .await;
        submit(&c, "capped", json!({"gpusPerReplica": 1, "gpu": {"models": ["A100", "H100"]}, "maxPricePerGpuHour": "1.00"})).await;
        submit(
            &c,
            "gang",
            json!({"replicas": 4, "gpusPerReplica": 2, "gpu": {"models": ["A100"]}}),
        )
        .await;

        let j = wait_job(&c, "team-a", "h100-x8", T, "h100-x8 placed", placed_on)
            .await
            .unwrap();
        assert_eq!(cluster_of(&j).as_deref(), Some("alpha"));
        let j = wait_job(&c, "team-a", "any-gpu", T, "any-gpu placed", placed_on)
            .await
            .unwrap();
        assert_eq!(
            cluster_of(&j).as_deref(),
            Some("gamma"),
            "the cheapest fitting cluster wins"
        );
        assert!(
            explanation(&j).contains("cheapest of 3 fitting clusters"),
            "{}",
            explanation(&j)
        );
        let j = wait_job(&c, "team-a", "gang", T, "gang placed", placed_on)
            .await
            .unwrap();
        assert_eq!(cluster_of(&j).as_deref(), Some("beta"));
        let attempt = &j.status.as_ref().unwrap().attempts[0];
        assert_eq!(
            attempt
                .planned_nodes
                .iter()
                .map(|n| n.replicas)
                .sum::<u32>(),
            4,
            "all replicas on one cluster"
        );

        let j = wait_job(&c, "team-a", "big-a100", T, "big-a100 explained", |j| {
            explanation(j).contains("0/3 clusters fit")
        })
        .await
        .unwrap();
        let e = explanation(&j);
        assert_eq!(j.status.as_ref().unwrap().phase, JobPhase::Pending);
        assert!(
            e.contains("beta: A100 has 40 GiB per GPU, needs 80 GiB"),
            "{e}"
        );
        assert!(e.contains("gamma: no A100 (has RTX4090)"), "{e}");
        let j = wait_job(&c, "team-a", "capped", T, "capped explained", |j| {
            explanation(j).contains("0/3 clusters fit")
        })
        .await
        .unwrap();
        let e = explanation(&j);
        assert!(e.contains("alpha: price 2.40 > max 1.00"), "{e}");
        assert!(e.contains("beta: price 1.20 > max 1.00"), "{e}");

        // The Placement carries a frozen copy of what to run, in the member's namespace.
        // The job controller writes it right after the decision is recorded.
        let ps = wait_until(T, "alpha's placement", || async {
            let ps = placements(&c, "alpha").await.ok()?;
            (!ps.is_empty()).then_some(ps)
        })
        .await
        .unwrap();
        assert_eq!(
            ps.len(),
            1,
            "{:?}",
            ps.iter()
                .map(|p| (&p.spec.job.uid, p.spec.attempt))
                .collect::<Vec<_>>()
        );
        // It names the job by UID only: nothing the member reads says whose job it is (ADR 0037).
        let uid = gpufed_e2e::placements::job_uid(&c, "team-a", "h100-x8")
            .await
            .unwrap();
        assert_eq!(ps[0].spec.job.uid, uid);
        let seen = serde_json::to_string(&ps[0]).unwrap();
        assert!(
            !seen.contains("h100-x8") && !seen.contains("team-a"),
            "{seen}"
        );
        assert_eq!(
            (ps[0].spec.total_gpus, ps[0].spec.model.as_str()),
            (8, "H100")
        );

        // Capacity the hub promised counts before members report it: another 8-GPU H100 job fits on
        // alpha's second node, a third does not.
        submit(
            &c,
            "h100-x8-b",
            json!({"gpusPerReplica": 8, "gpu": {"models": ["H100"]}}),
        )
        .await;
        submit(
            &c,
            "h100-x8-c",
            json!({"gpusPerReplica": 8, "gpu": {"models": ["H100"]}}),
        )
        .await;
        wait_job(
            &c,
            "team-a",
            "h100-x8-b",
            T,
            "second H100 job placed",
            placed_on,
        )
        .await
        .unwrap();
        let j = wait_job(&c, "team-a", "h100-x8-c", T, "third H100 job waits", |j| {
            explanation(j).contains("alpha: 0 free GPUs, needs 8")
        })
        .await
        .unwrap();
        assert_eq!(j.status.unwrap().phase, JobPhase::Pending);
    });
}

#[test]
fn a_member_whose_registration_cannot_be_repaired_still_goes_not_ready() {
    run_test(HARD_DEADLINE, || async {
        let (tools, mut hub) = hub_cluster("hub-registration-refused").await;
        start_hub(&tools, &mut hub, "hub-0", &[]).unwrap();
        let c = hub.client();
        create_pool(&c, "default", "CheapestFit", "15s")
            .await
            .unwrap();
        create_member(&c, "gamma", "default", "eu-west", &[("H100", "2.00")])
            .await
            .unwrap();
        let beat = keep_heartbeating(c.clone(), "gamma");
        hubctl::wait_member_condition(&c, &["gamma"], "Ready", true, T)
            .await
            .unwrap();

        // An admission policy refuses every write of a Role in gamma's namespace, so the hub
        // cannot put back the agent's Role once it is deleted.
        let ns = "gpufed-member-gamma";
        hubctl::deny_writes(
            &c,
            "no-roles-for-gamma",
            ns,
            ("rbac.authorization.k8s.io", "roles"),
            &["CREATE", "UPDATE"],
            "no Roles in gamma's namespace",
        )
        .await
        .unwrap();
        let roles: Api<Role> = Api::namespaced(c.clone(), ns);
        wait_until(T, "the policy refusing Roles", || async {
            let probe = Role {
                metadata: kube::api::ObjectMeta {
                    name: Some("probe".into()),
                    ..Default::default()
                },
                rules: None,
            };
            let dry = kube::api::PostParams {
                dry_run: true,
                ..Default::default()
            };
            matches!(roles.create(&dry, &probe).await, Err(kube::Error::Api(e)) if e.code == 422 || e.code == 403)
                .then_some(())
        })
        .await
        .unwrap();
        roles
            .delete(AGENT_ROLE, &DeleteParams::default())
            .await
            .unwrap();

        // gamma goes silent: the hub tries to register it again, is refused, and still marks it
        // not Ready (the jobs on it fail over from that condition), saying why in an Event.
        beat.abort();
        hubctl::wait_member_condition(&c, &["gamma"], "Ready", false, T)
            .await
            .unwrap();
        let refused = wait_until(T, "the RegistrationFailed Event", || async {
            let notes = hubctl::job_events(&c, "default", "gamma", "RegistrationFailed")
                .await
                .ok()?;
            notes.into_iter().next()
        })
        .await
        .unwrap();
        assert!(
            refused.contains("no Roles in gamma's namespace"),
            "{refused}"
        );
        assert!(roles.get_opt(AGENT_ROLE).await.unwrap().is_none());
    });
}

#[test]
fn a_member_that_stops_heartbeating_loses_its_attempt_to_another_without_overlap() {
    run_test(HARD_DEADLINE, || async {
        let (tools, mut hub) = hub_cluster("hub-failover").await;
        let port = start_hub(&tools, &mut hub, "hub-0", &[]).unwrap();
        let c = hub.client();
        create_pool(&c, "default", "CheapestFit", "15s")
            .await
            .unwrap();
        create_member(&c, "alpha", "default", "eu-west", &[("H100", "2.00")])
            .await
            .unwrap();
        create_member(&c, "beta", "default", "eu-west", &[("H100", "3.00")])
            .await
            .unwrap();
        let alpha_beat = keep_heartbeating(c.clone(), "alpha");
        let _beta_beat = keep_heartbeating(c.clone(), "beta");
        report_inventory(&c, "alpha", vec![node("a-0", "H100", 81559, 8, 8)])
            .await
            .unwrap();
        report_inventory(&c, "beta", vec![node("b-0", "H100", 81559, 8, 8)])
            .await
            .unwrap();
        wait_schedulable(&c, &["alpha", "beta"]).await;

        submit(
            &c,
            "train",
            json!({"gpusPerReplica": 2, "gpu": {"models": ["H100"]}}),
        )
        .await;
        wait_job(&c, "team-a", "train", T, "train placed", placed_on)
            .await
            .unwrap();
        let p1 = wait_until(T, "alpha's placement", || async {
            placements(&c, "alpha").await.ok()?.into_iter().next()
        })
        .await
        .unwrap();
        // Two GPUs for at least two seconds since the placement: 4 GPU-seconds are plausible.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let running = PlacementStatus {
            phase: Some(PlacementPhase::Running),
            active_replicas: 1,
            start_time: Some(now),
            gpu_seconds: 4,
            ..Default::default()
        };
        report_placement(&c, &p1, running).await.unwrap();
        wait_job(&c, "team-a", "train", T, "train running", |j| {
            j.status
                .as_ref()
                .is_some_and(|s| s.phase == JobPhase::Running)
        })
        .await
        .unwrap();

        // Someone deletes the Role alpha's agent works under (a real agent's renewals would be
        // refused from then on); then alpha goes silent. The hub registers a member again when its
        // heartbeat stops (ADR 0039), not only once an hour: the Role comes back.
        let roles: Api<Role> = Api::namespaced(c.clone(), "gpufed-member-alpha");
        roles
            .delete(AGENT_ROLE, &DeleteParams::default())
            .await
            .unwrap();
        alpha_beat.abort();
        let j = wait_job(&c, "team-a", "train", T, "attempt 2 on beta", |j| {
            j.status
                .as_ref()
                .is_some_and(|s| s.attempt == 2 && s.placement.is_some())
        })
        .await
        .unwrap();
        let st = j.status.unwrap();
        assert_eq!(st.placement.as_ref().unwrap().cluster, "beta");
        let lost = &st.attempts[0];
        assert_eq!(
            (lost.phase, lost.reason.as_deref()),
            (AttemptPhase::Lost, Some("HeartbeatExpired"))
        );
        assert_eq!(
            lost.gpu_seconds, 4,
            "usage reported before the loss is kept"
        );
        wait_until(T, "alpha's agent Role registered again", || async {
            roles.get_opt(AGENT_ROLE).await.ok().flatten()
        })
        .await
        .unwrap();
        // Fencing on the hub side: attempt 1's Placement is gone, so alpha can never run it again.
        assert!(
            placements(&c, "alpha").await.unwrap().is_empty(),
            "attempt 1's placement must be deleted"
        );
        let betas = wait_until(T, "beta's placement", || async {
            let ps = placements(&c, "beta").await.ok()?;
            (!ps.is_empty()).then_some(ps)
        })
        .await
        .unwrap();
        assert_eq!(betas.len(), 1);
        assert_eq!(betas[0].spec.attempt, 2);

        // beta completes it; usage adds up over both attempts.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let done = PlacementStatus {
            phase: Some(PlacementPhase::Succeeded),
            gpu_seconds: 4,
            finish_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
            ..Default::default()
        };
        report_placement(&c, &betas[0], done).await.unwrap();
        let j = wait_job(&c, "team-a", "train", T, "train succeeded", |j| {
            j.status
                .as_ref()
                .is_some_and(|s| s.phase == JobPhase::Succeeded)
        })
        .await
        .unwrap();
        assert_eq!(j.status.unwrap().usage.unwrap().gpu_seconds, 8);
        // The job is at rest (no chain): the hub's cache keeps its Placement no longer, though it
        // still exists, and keeps the job only as its record (ADR 0041); so does a hub that starts
        // now. The reputation below is counted from that record.
        assert_eq!(placements(&c, "beta").await.unwrap().len(), 1);
        let cached = |port: u16, kind: &'static str, n: usize| async move {
            let line = format!("gpufed_hub_cached_objects{{kind=\"{kind}\"}} {n}\n");
            if let Err(e) = wait_until(T, &format!("{n} {kind} cached"), || async {
                metrics(port).await.contains(&line).then_some(())
            })
            .await
            {
                panic!("{e}: {}", metrics(port).await);
            }
        };
        cached(port, "Placement", 0).await;
        cached(port, "ComputeJob", 0).await;
        cached(port, "ComputeJobAtRest", 1).await;
        hub.process_mut("hub-0").unwrap().kill();
        let port = start_hub(&tools, &mut hub, "hub-1", &[]).unwrap();
        wait_until(T, "hub-1 to lead", || async {
            (lease_holder(&c).await? == "hub-1").then_some(())
        })
        .await
        .unwrap();
        cached(port, "ComputeJob", 0).await;
        cached(port, "ComputeJobAtRest", 1).await;
        cached(port, "Placement", 0).await;

        // alpha comes back. The reputation each member earned (issue 13 item 4): alpha lost an
        // attempt through its own fault and was down for a while, beta ran one to success and
        // never was; the hub counts them every 30 s.
        let _alpha_back = keep_heartbeating(c.clone(), "alpha");
        let members: Api<gpufed_crds::MemberCluster> = Api::all(c.clone());
        let status = |name: &'static str| {
            let members = members.clone();
            async move { members.get(name).await.ok()?.status }
        };
        let (alpha, outages) = wait_until(T, "alpha's reputation", || async {
            let s = status("alpha").await?;
            let r = s.reputation?;
            let back = !s.outages.is_empty() && s.outages.iter().all(|o| o.end.is_some());
            (r.attempts_failed_by_member == 1 && back && r.uptime_percent < 100)
                .then_some((r, s.outages))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", futures::executor::block_on(status("alpha"))));
        assert_eq!(alpha.attempts_succeeded, 0, "{alpha:?}");
        assert_eq!(outages.len(), 1, "one outage, closed: {outages:?}");
        assert_eq!(alpha.attempt_success_percent(), Some(0));
        assert_eq!(alpha.window.as_secs_ceil(), 168 * 3600);
        let beta = wait_until(T, "beta's reputation", || async {
            let s = status("beta").await?;
            s.reputation
                .filter(|r| r.attempts_succeeded == 1)
                .map(|r| (r, s.outages))
        })
        .await
        .unwrap();
        assert_eq!(
            (
                beta.0.attempts_failed_by_member,
                beta.0.uptime_percent,
                beta.1.len()
            ),
            (0, 100, 0),
            "{beta:?}"
        );
        assert_eq!(beta.0.attempt_success_percent(), Some(100));

        // A pool that asks for full uptime keeps tenant jobs off alpha and says why; without the
        // floor the same job goes there.
        let pools: Api<gpufed_crds::GpuPool> = Api::all(c.clone());
        let floor = |v: Value| {
            let pools = pools.clone();
            async move {
                pools
                    .patch(
                        "default",
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Merge(json!({"spec": {"reputationFloor": v}})),
                    )
                    .await
                    .unwrap();
            }
        };
        floor(json!({"minUptimePercent": 100})).await;
        submit(
            &c,
            "serve",
            json!({"gpusPerReplica": 1, "gpu": {"models": ["H100"]}, "excludeClusters": ["beta"]}),
        )
        .await;
        let j = wait_job(
            &c,
            "team-a",
            "serve",
            T,
            "serve waits for alpha's floor",
            |j| explanation(j).contains("below the pool's reputation floor"),
        )
        .await
        .unwrap();
        let why = explanation(&j);
        assert!(
            why.contains("below the pool's reputation floor: uptime") && why.contains("< 100%"),
            "{why}"
        );

        assert!(cluster_of(&j).is_none(), "{why}");
        floor(Value::Null).await;
        let j = wait_job(&c, "team-a", "serve", T, "serve placed on alpha", placed_on)
            .await
            .unwrap();
        assert_eq!(cluster_of(&j).as_deref(), Some("alpha"));
        // A job in progress: its Placement is cached.
        cached(port, "Placement", 1).await;
    });
}

#[test]
fn deleting_a_job_removes_its_placements_first() {
    run_test(HARD_DEADLINE, || async {
        let (tools, mut hub) = hub_cluster("hub-delete").await;
        start_hub(&tools, &mut hub, "hub-0", &[]).unwrap();
        let c = hub.client();
        create_pool(&c, "default", "CheapestFit", "20s")
            .await
            .unwrap();
        create_member(&c, "alpha", "default", "eu-west", &[("L4", "0.50")])
            .await
            .unwrap();
        let _beat = keep_heartbeating(c.clone(), "alpha");
        report_inventory(&c, "alpha", vec![node("a-0", "L4", 23034, 4, 4)])
            .await
            .unwrap();
        wait_schedulable(&c, &["alpha"]).await;
        submit(
            &c,
            "doomed",
            json!({"gpusPerReplica": 1, "gpu": {"models": ["L4"]}}),
        )
        .await;
        wait_until(T, "a placement on alpha", || async {
            placements(&c, "alpha").await.ok()?.into_iter().next()
        })
        .await
        .unwrap();
        let job = Api::<ComputeJob>::namespaced(c.clone(), "team-a")
            .get("doomed")
            .await
            .unwrap();
        assert!(
            job.metadata
                .finalizers
                .unwrap()
                .contains(&"gpufed.io/cleanup".to_string())
        );

        Api::<ComputeJob>::namespaced(c.clone(), "team-a")
            .delete("doomed", &DeleteParams::default())
            .await
            .unwrap();
        wait_until(T, "the job to be gone", || async {
            Api::<ComputeJob>::namespaced(c.clone(), "team-a")
                .get_opt("doomed")
                .await
                .ok()?
                .is_none()
                .then_some(())
        })
        .await
        .unwrap();
        assert!(placements(&c, "alpha").await.unwrap().is_empty());
    });
}

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

#[test]
fn of_two_hub_replicas_one_acts_and_the_other_takes_over_when_it_dies() {
    run_test(HARD_DEADLINE, || async {
        let (tools, mut hub) = hub_cluster("hub-ha").await;
        let port_a = start_hub(&tools, &mut hub, "hub-a", &[]).unwrap();
        let c = hub.client();
        wait_until(T, "hub-a to lead", || async {
            (lease_holder(&c).await? == "hub-a").then_some(())
        })
        .await
        .unwrap();
        let port_b = start_hub(&tools, &mut hub, "hub-b", &[]).unwrap();
        wait_until(T, "hub-b's metrics", || async {
            metrics(port_b)
                .await
                .contains("gpufed_leader 0")
                .then_some(())
        })
        .await
        .unwrap();
        assert!(metrics(port_a).await.contains("gpufed_leader 1"));

        create_pool(&c, "default", "CheapestFit", "20s")
            .await
            .unwrap();
        create_member(&c, "alpha", "default", "eu-west", &[("L4", "0.50")])
            .await
            .unwrap();
        let _beat = keep_heartbeating(c.clone(), "alpha");
        report_inventory(&c, "alpha", vec![node("a-0", "L4", 23034, 8, 8)])
            .await
            .unwrap();
        wait_schedulable(&c, &["alpha"]).await;
        submit(
            &c,
            "before",
            json!({"gpusPerReplica": 1, "gpu": {"models": ["L4"]}}),
        )
        .await;
        wait_job(&c, "team-a", "before", T, "placed by hub-a", placed_on)
            .await
            .unwrap();

        // The leader dies without a goodbye (SIGKILL): hub-b takes over after the Lease runs out.
        hub.process_mut("hub-a").unwrap().kill();
        wait_until(T, "hub-b to lead", || async {
            (lease_holder(&c).await? == "hub-b").then_some(())
        })
        .await
        .unwrap();
        submit(
            &c,
            "after",
            json!({"gpusPerReplica": 1, "gpu": {"models": ["L4"]}}),
        )
        .await;
        let j = wait_job(&c, "team-a", "after", T, "placed by hub-b", placed_on)
            .await
            .unwrap();
        assert_eq!(cluster_of(&j).as_deref(), Some("alpha"));
        assert!(metrics(port_b).await.contains("gpufed_leader 1"));
        // Only one placement per job: the new leader did not place "before" again. hub-a may
        // have died between its decision and the Placement's create; hub-b then creates that
        // Placement, attempt 1, once the decision's grace has passed.
        let uid = gpufed_e2e::placements::job_uid(&c, "team-a", "before")
            .await
            .unwrap();
        let before = wait_until(T, "the Placement of \"before\"", || async {
            let ps = placements(&c, "alpha").await.ok()?;
            let ps: Vec<_> = ps.into_iter().filter(|p| p.spec.job.uid == uid).collect();
            (!ps.is_empty()).then_some(ps)
        })
        .await
        .unwrap();
        assert_eq!(before.len(), 1, "{before:?}");
        assert_eq!(before[0].spec.attempt, 1);
    });
}

#[test]
fn a_challenge_that_cannot_be_placed_holds_its_node_and_is_abandoned_after_the_pools_placement_deadline()
 {
    run_test(HARD_DEADLINE, || async {
        let (tools, mut hub) = hub_cluster("hub-unplaced").await;
        hub.create_namespace(gpufed_crds::naming::HUB_JOBS_NAMESPACE)
            .await
            .unwrap();
        start_hub(&tools, &mut hub, "hub-0", &[]).unwrap();
        let c = hub.client();
        apply::<gpufed_crds::GpuPool>(
            &c,
            &json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "GpuPool",
                    "metadata": {"name": "default"},
                    "spec": {"heartbeatTimeout": "20s",
                             "verification": {"required": true, "image": "probe:1",
                                              "backend": "Cpu", "matrixSize": 16,
                                              "placementDeadline": "1m"}}}),
        )
        .await
        .unwrap();
        create_member(&c, "alpha", "default", "eu-west", &[("H100", "2.00")])
            .await
            .unwrap();
        let _beat = keep_heartbeating(c.clone(), "alpha");
        // Half of its one node is busy (with work the hub does not see): the challenge, which
        // needs the whole node, cannot be placed.
        report_inventory(&c, "alpha", vec![node("a-0", "H100", 81559, 8, 4)])
            .await
            .unwrap();
        let jobs: Api<ComputeJob> =
            Api::namespaced(c.clone(), gpufed_crds::naming::HUB_JOBS_NAMESPACE);
        let first = wait_until(T, "a challenge sent", || async {
            jobs.list(&Default::default())
                .await
                .ok()?
                .items
                .into_iter()
                .next()
        })
        .await
        .unwrap();
        let sent = std::time::Instant::now();
        // While it waits it holds the 4 free GPUs: a tenant job that would fit there (and accepts
        // an unverified member) waits instead of keeping the node busy.
        submit(
            &c,
            "small",
            json!({"gpusPerReplica": 1, "gpu": {"models": ["H100"]}, "allowUnverified": true}),
        )
        .await;
        let j = wait_job(&c, "team-a", "small", T, "small waits", |j| {
            explanation(j).contains("alpha")
        })
        .await
        .unwrap();
        assert!(cluster_of(&j).is_none(), "{}", explanation(&j));
        assert!(explanation(&j).contains("free"), "{}", explanation(&j));
        // Abandoned once the pool's minute has passed: a Warning Event, no verdict, and the
        // next challenge sent in its place.
        let notes = wait_until(Duration::from_secs(120), "ChallengeNotPlaced", || async {
            let events = Api::<k8s_openapi::api::events::v1::Event>::all(c.clone())
                .list(&Default::default())
                .await
                .ok()?;
            let notes: Vec<String> = events
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("ChallengeNotPlaced"))
                .filter_map(|e| e.note)
                .collect();
            (!notes.is_empty()).then_some(notes)
        })
        .await
        .unwrap();
        assert!(
            sent.elapsed() >= Duration::from_secs(50),
            "abandoned before the pool's placement deadline: {notes:?}"
        );
        assert!(notes[0].contains("(placement deadline 60s)"), "{notes:?}");
        let next = wait_until(T, "the next challenge", || async {
            jobs.list(&Default::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|j| j.name_any() != first.name_any())
        })
        .await
        .unwrap();
        assert_ne!(next.uid(), first.uid());
        let m = Api::<gpufed_crds::MemberCluster>::all(c.clone())
            .get("alpha")
            .await
            .unwrap();
        assert!(
            m.status.unwrap().verification.is_none(),
            "abandoning is not a verdict"
        );
    });
}
