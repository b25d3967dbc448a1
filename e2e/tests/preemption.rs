//! Issue 17's done-when on a real apiserver and a real anvil, with the hub as a process and the
//! test standing in for the member agent (whose stop is unit-tested in `agent::plan`): two teams
//! of one cohort, with quotas and fair-share weights, share a pool of 4 GPUs. team-b fills it,
//! borrowing team-a's idle quota; a job of team-a's high priority class preempts team-b's
//! youngest attempts. The victims are stopped with the pool's grace (`Placement.spec.stop`), end
//! `Preempted`, are paid exactly once for what they ran and re-queued; the preemptor runs on the
//! freed GPUs and is paid; the re-queued jobs run again once team-a's quota is idle and are paid
//! for their second attempt. Both sides are explained (status and Events), and no team holds more
//! than its quota except by borrowing idle quota.
//!
//! A second test reclaims lent quota (`spec.reclaimWithinCohort`): with `Never` team-a's job
//! waits, its explanation naming team-b's borrowing; with `Any` team-b's attempts beyond its
//! nominal quota are stopped, paid and re-queued, and team-a's job runs on their GPUs.
//!
//! A third test runs the real member agent on kwok nodes: it stops a preempted attempt's pods
//! with the pool's grace period (not the pod spec's 3 s), reports its final usage, and the
//! preemptor runs on the freed GPUs. Needs `cargo build -p gpufed-operator -p kubectl-gpufed -p
//! gpu-probe --bins` first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use alloy::primitives::U256;
use gpufed_crds::{
    AttemptPhase, ComputeJob, GpuPool, JobPhase, Placement, PlacementPhase, PlacementStatus,
    SettlementState, TokenAmount,
};
use gpufed_e2e::chain::accounts;
use gpufed_e2e::hubctl::{
    node, placements, report_inventory, report_placement, start_hub, wait_job,
};
use gpufed_e2e::market::{self, STEP as T, settlement};
use gpufed_e2e::{run_test, wait_until};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

const HARD_DEADLINE: Duration = Duration::from_secs(420);

const TEAM_B: [&str; 4] = ["b-0", "b-1", "b-2", "b-3"];

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// The 4-GPU node of alpha with `free` GPUs free, reported now.
async fn inventory(c: &Client, free: u32) {
    report_inventory(c, "alpha", vec![node("alpha-0", "H100", 81559, 4, free)])
        .await
        .unwrap();
}

/// The message of attempt 1 of `namespace/job` on the hub.
async fn attempt_message(c: &Client, namespace: &str, job: &str) -> String {
    let j = Api::<ComputeJob>::namespaced(c.clone(), namespace)
        .get(job)
        .await
        .unwrap();
    let st = j.status.unwrap_or_default();
    st.attempts
        .iter()
        .find(|a| a.attempt == 1)
        .and_then(|a| a.message.clone())
        .unwrap_or_default()
}

/// The Placement of attempt `attempt` of `job`, once it exists.
async fn placement_of(c: &Client, job: &str, attempt: u32) -> Placement {
    let uids = gpufed_e2e::placements::job_uids_named(c, job)
        .await
        .unwrap();
    wait_until(
        T,
        &format!("the Placement of {job} attempt {attempt}"),
        || async {
            placements(c, "alpha")
                .await
                .ok()?
                .into_iter()
                .find(|p| uids.contains(&p.spec.job.uid) && p.spec.attempt == attempt)
        },
    )
    .await
    .unwrap()
}

/// Reports attempt `attempt` of `job` running since now.
async fn run(c: &Client, job: &str, attempt: u32) {
    let p = placement_of(c, job, attempt).await;
    let status = PlacementStatus {
        phase: Some(PlacementPhase::Running),
        active_replicas: 1,
        start_time: Some(now()),
        ..Default::default()
    };
    report_placement(c, &p, status).await.unwrap();
}

/// Reports attempt `attempt` of `job` completed after `gpu_seconds`.
async fn complete(c: &Client, job: &str, attempt: u32, gpu_seconds: u64) {
    let p = placement_of(c, job, attempt).await;
    let status = PlacementStatus {
        phase: Some(PlacementPhase::Succeeded),
        gpu_seconds,
        start_time: p.status.as_ref().and_then(|s| s.start_time.clone()),
        finish_time: Some(now()),
        ..Default::default()
    };
    report_placement(c, &p, status).await.unwrap();
}

fn phase_is(phase: JobPhase) -> impl Fn(&ComputeJob) -> bool {
    move |j| j.status.as_ref().is_some_and(|s| s.phase == phase)
}

fn locked(attempt: u32) -> impl Fn(&ComputeJob) -> bool {
    move |j| settlement(j, attempt).is_some_and(|s| s.state == SettlementState::Locked)
}

fn attempt_settled(attempt: u32) -> impl Fn(&ComputeJob) -> bool {
    move |j| settlement(j, attempt).is_some_and(|s| s.state == SettlementState::Settled)
}

/// `(used, limit, borrowed)` of `ns` in the pool's status.
async fn quota(c: &Client, ns: &str) -> Option<(u64, u64, u64)> {
    let p = Api::<GpuPool>::all(c.clone()).get("market").await.ok()?;
    p.status?
        .quota_usage
        .into_iter()
        .find(|q| q.namespace == ns)
        .map(|q| (q.used, q.limit, q.borrowed))
}

async fn wait_quota(c: &Client, what: &str, a: (u64, u64, u64), b: (u64, u64, u64)) {
    wait_until(T, what, || async {
        (quota(c, "team-a").await.unwrap_or((0, 2, 0)) == a && quota(c, "team-b").await? == b)
            .then_some(())
    })
    .await
    .unwrap();
}

/// Notes of the Events of `reason` about job `name` in `ns`.
async fn events(c: &Client, ns: &str, name: &str, reason: &str) -> Vec<String> {
    gpufed_e2e::hubctl::job_events(c, ns, name, reason)
        .await
        .unwrap()
}

/// Waits until team-a's `job` waits `Preempting` (`what` names the wait); its explanation.
async fn preempting(c: &Client, job: &str, what: &str) -> String {
    let j = wait_job(c, "team-a", job, T, what, |j| {
        j.status
            .as_ref()
            .is_some_and(|s| s.reason.as_deref() == Some("Preempting"))
    })
    .await
    .unwrap();
    j.status.unwrap().explanation.unwrap()
}

/// Waits until two of alpha's Placements carry a stop; returns them.
async fn two_stops(c: &Client) -> Vec<Placement> {
    wait_until(T, "two stops", || async {
        let ps: Vec<Placement> = placements(c, "alpha")
            .await
            .ok()?
            .into_iter()
            .filter(|p| p.spec.stop.is_some())
            .collect();
        (ps.len() == 2).then_some(ps)
    })
    .await
    .unwrap()
}

/// The agent's part for each stopped Placement: its pods stopped, 2 GPU-seconds reported.
async fn report_stopped(c: &Client, stopped: &[Placement]) {
    for p in stopped {
        let stop = p.spec.stop.clone().unwrap();
        let status = PlacementStatus {
            phase: Some(PlacementPhase::Failed),
            reason: Some(stop.reason),
            message: stop.message,
            gpu_seconds: 2,
            start_time: p.status.as_ref().and_then(|s| s.start_time.clone()),
            finish_time: Some(now()),
            ..Default::default()
        };
        report_placement(c, p, status).await.unwrap();
    }
}

#[test]
fn a_high_priority_job_preempts_a_borrowers_attempts_and_every_attempt_is_paid_once() {
    run_test(HARD_DEADLINE, || async {
        let mut m = market::market("preempt", 1000, json!({})).await.unwrap();
        start_hub(&m.tools, &mut m.hub, "hub-0", &[]).unwrap();
        let c = m.hub.client();
        let pool = json!({"spec": {
            "quotas": [
                {"namespace": "team-a", "cohort": "research", "groups": [{"name": "gpus", "gpus": 2}]},
                {"namespace": "team-b", "cohort": "research", "groups": [{"name": "gpus", "gpus": 2}]}
            ],
            "fairSharing": {"weights": [{"namespace": "team-a", "weight": 1},
                                        {"namespace": "team-b", "weight": 2}]},
            "priorityClasses": [{"name": "urgent", "value": 1000, "namespaces": ["team-a"]}],
            "preemption": "LowerPriority",
            "preemptionGracePeriod": "7s"
        }});
        Api::<GpuPool>::all(c.clone())
            .patch("market", &PatchParams::default(), &Patch::Merge(&pool))
            .await
            .unwrap();
        market::member(&c, "alpha", accounts::ALPHA.1, "H100", "2.00")
            .await
            .unwrap();
        inventory(&c, 4).await;
        market::wait_condition(&c, "alpha", "Schedulable", true)
            .await
            .unwrap();
        let provider_before = m.balance(accounts::ALPHA.1).await.unwrap();
        let treasury_before = m.balance(accounts::TREASURY.1).await.unwrap();

        // team-b fills the pool: its 2 GPUs and team-a's 2 idle ones, borrowed.
        for name in TEAM_B {
            market::submit(&c, "team-b", name, "H100", 1, "2.00")
                .await
                .unwrap();
        }
        for name in TEAM_B {
            wait_job(&c, "team-b", name, T, "locked", locked(1))
                .await
                .unwrap();
            run(&c, name, 1).await;
        }
        wait_quota(
            &c,
            "team-b borrows team-a's idle quota",
            (0, 2, 0),
            (4, 2, 2),
        )
        .await;
        // The member's inventory, taken after the pods started, shows the node full.
        tokio::time::sleep(Duration::from_secs(1)).await;
        inventory(&c, 0).await;

        // team-a's urgent job fits nowhere: it preempts two of team-b's attempts.
        market::submit_with(
            &c,
            "team-a",
            "urgent",
            "H100",
            2,
            "2.00",
            json!({"priorityClassName": "urgent"}),
        )
        .await
        .unwrap();
        let why = preempting(&c, "urgent", "preempting").await;
        assert!(
            why.contains("preempting 2 attempts of lower priority on alpha to free 2 GPUs"),
            "{why}"
        );
        assert!(why.contains("grace 7s"), "{why}");
        let stopped = two_stops(&c).await;
        let mut victims: Vec<String> = vec![];
        for p in &stopped {
            victims.push(
                gpufed_e2e::placements::job_name_of(&c, "team-b", &p.spec.job.uid)
                    .await
                    .unwrap(),
            );
        }
        for (p, victim) in stopped.iter().zip(&victims) {
            let stop = p.spec.stop.as_ref().unwrap();
            assert_eq!(
                (stop.reason.as_str(), stop.grace_period_seconds),
                ("Preempted", 7)
            );
            // The member reads no job's name (ADR 0037); the victim's attempt on the hub does.
            assert_eq!(
                stop.message.as_deref(),
                Some(gpufed_operator::hub::preemption::placement_stop_message(7).as_str())
            );
            let message = attempt_message(&c, "team-b", victim).await;
            assert!(
                message.starts_with("preempted by team-a/urgent (priority 1000 > 0)"),
                "{message}"
            );
            assert!(why.contains(&format!("team-b/{victim} attempt 1")), "{why}");
        }
        // The agent's part: the pods stop with the grace, the final usage is reported.
        report_stopped(&c, &stopped).await;
        let price: TokenAmount = "2.00".parse().unwrap();
        for v in &victims {
            let j = wait_job(&c, "team-b", v, T, "preempted, paid, re-queued", |j| {
                attempt_settled(1)(j) && phase_is(JobPhase::Pending)(j)
            })
            .await
            .unwrap();
            let st = j.status.as_ref().unwrap();
            let a = &st.attempts[0];
            assert_eq!(a.phase, AttemptPhase::Preempted, "{a:?}");
            assert_eq!(a.reason.as_deref(), Some("Preempted"));
            assert!(a.message.as_deref().unwrap().contains("team-a/urgent"));
            assert_eq!(a.gpu_seconds, 2);
            let s = settlement(&j, 1).unwrap();
            assert_eq!(s.paid, Some(price.cost_of_gpu_seconds(2).unwrap()));
            assert_eq!(m.lock_state(&s.job_id).await.unwrap(), 2);
            assert!(
                st.message.as_deref().unwrap().contains("was preempted"),
                "{st:?}"
            );
            assert!(!events(&c, "team-b", v, "Preempted").await.is_empty());
        }
        let preempting = events(&c, "team-a", "urgent", "Preempting").await;
        assert!(
            preempting
                .iter()
                .any(|n| n.contains("preempting 2 attempts")),
            "{preempting:?}"
        );

        // The victims' pods are gone: the preemptor takes their GPUs, and team-b, back at its own
        // quota, may not borrow what team-a now uses.
        inventory(&c, 2).await;
        wait_job(&c, "team-a", "urgent", T, "locked", locked(1))
            .await
            .unwrap();
        run(&c, "urgent", 1).await;
        wait_quota(&c, "each team within its quota", (2, 2, 0), (2, 2, 0)).await;
        for v in &victims {
            wait_job(&c, "team-b", v, T, "over quota", |j| {
                j.status
                    .as_ref()
                    .is_some_and(|s| s.reason.as_deref() == Some("OverQuota"))
            })
            .await
            .unwrap();
        }

        // The urgent job ends and is paid; team-a's quota is idle again and the re-queued jobs
        // borrow it for their second attempt.
        complete(&c, "urgent", 1, 2).await;
        wait_job(&c, "team-a", "urgent", T, "paid", attempt_settled(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        inventory(&c, 2).await;
        for v in &victims {
            wait_job(&c, "team-b", v, T, "attempt 2 locked", locked(2))
                .await
                .unwrap();
            run(&c, v, 2).await;
            complete(&c, v, 2, 1).await;
        }
        for name in TEAM_B.iter().filter(|n| !victims.iter().any(|v| v == *n)) {
            complete(&c, name, 1, 3).await;
        }

        // Every attempt is paid once: the provider got exactly paid − fee for each.
        let mut expected = U256::ZERO;
        let mut fees = U256::ZERO;
        for (ns, name) in TEAM_B
            .iter()
            .map(|n| ("team-b", *n))
            .chain([("team-a", "urgent")])
        {
            let j = wait_job(&c, ns, name, T, "succeeded and paid", |j| {
                phase_is(JobPhase::Succeeded)(j)
                    && j.status.as_ref().is_some_and(|s| {
                        s.attempts.iter().all(|a| {
                            a.settlement
                                .as_ref()
                                .is_some_and(|s| s.state == SettlementState::Settled)
                        })
                    })
            })
            .await
            .unwrap();
            let st = j.status.unwrap();
            let preempted = victims.iter().any(|v| v == name);
            assert_eq!(st.attempts.len(), if preempted { 2 } else { 1 }, "{name}");
            let mut total = TokenAmount::from_atto(0);
            for a in &st.attempts {
                let paid = a.settlement.as_ref().unwrap().paid.unwrap();
                assert_eq!(paid, price.cost_of_gpu_seconds(a.gpu_seconds).unwrap());
                let fee = paid.atto() * 500 / 10_000;
                expected += U256::from(paid.atto() - fee);
                fees += U256::from(fee);
                total = TokenAmount::from_atto(total.atto() + paid.atto());
            }
            assert_eq!(st.cost, Some(total), "{name}");
        }
        assert_eq!(
            m.balance(accounts::ALPHA.1).await.unwrap() - provider_before,
            expected
        );
        assert_eq!(
            m.balance(accounts::TREASURY.1).await.unwrap() - treasury_before,
            fees
        );
    });
}

#[test]
fn a_lender_takes_back_its_quota_from_a_borrower_only_when_the_pool_reclaims() {
    run_test(HARD_DEADLINE, || async {
        let mut m = market::market("reclaim", 1000, json!({})).await.unwrap();
        start_hub(&m.tools, &mut m.hub, "hub-0", &[]).unwrap();
        let c = m.hub.client();
        // No priority classes, no priority preemption: only reclaiming lent quota evicts.
        let pool = json!({"spec": {
            "quotas": [
                {"namespace": "team-a", "cohort": "research", "groups": [{"name": "gpus", "gpus": 2}]},
                {"namespace": "team-b", "cohort": "research", "groups": [{"name": "gpus", "gpus": 2}]}
            ],
            "reclaimWithinCohort": "Never",
            "preemptionGracePeriod": "7s"
        }});
        let pools = Api::<GpuPool>::all(c.clone());
        pools
            .patch("market", &PatchParams::default(), &Patch::Merge(&pool))
            .await
            .unwrap();
        market::member(&c, "alpha", accounts::ALPHA.1, "H100", "2.00")
            .await
            .unwrap();
        inventory(&c, 4).await;
        market::wait_condition(&c, "alpha", "Schedulable", true)
            .await
            .unwrap();

        // team-b fills the pool: its 2 GPUs and team-a's 2 idle ones, borrowed.
        for name in TEAM_B {
            market::submit(&c, "team-b", name, "H100", 1, "2.00")
                .await
                .unwrap();
        }
        for name in TEAM_B {
            wait_job(&c, "team-b", name, T, "locked", locked(1))
                .await
                .unwrap();
            run(&c, name, 1).await;
        }
        wait_quota(&c, "team-b borrows team-a's quota", (0, 2, 0), (4, 2, 2)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        inventory(&c, 0).await;

        // team-a's job of the same priority fits its nominal quota but not the node. With
        // Never it waits, naming the borrowing, and nobody is evicted.
        market::submit(&c, "team-a", "mine", "H100", 2, "2.00")
            .await
            .unwrap();
        let j = wait_job(&c, "team-a", "mine", T, "waiting for room", |j| {
            j.status.as_ref().is_some_and(|s| {
                s.reason.as_deref() == Some("NoFit")
                    && s.explanation
                        .as_deref()
                        .is_some_and(|e| e.contains("lent within cohort"))
            })
        })
        .await
        .unwrap();
        let why = j.status.unwrap().explanation.unwrap();
        assert!(
            why.contains(
                "team-a is within its nominal quota of 2 GPUs in group gpus, lent within cohort \
                 research: team-b holds 4 GPUs, 2 beyond its nominal 2; the pool's \
                 reclaimWithinCohort is Never: lent GPUs come back only as the borrowers' jobs end"
            ),
            "{why}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            placements(&c, "alpha")
                .await
                .unwrap()
                .iter()
                .all(|p| p.spec.stop.is_none()),
            "nobody is evicted under Never"
        );

        // The pool reclaims: team-b's two youngest attempts go, beyond its nominal only.
        pools
            .patch(
                "market",
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"reclaimWithinCohort": "Any"}})),
            )
            .await
            .unwrap();
        let why = preempting(&c, "mine", "reclaiming").await;
        assert!(
            why.contains(
                "reclaiming 2 GPUs of team-a's nominal quota lent within cohort research \
                 (reclaimWithinCohort: Any) on alpha"
            ),
            "{why}"
        );
        assert!(why.contains("grace 7s"), "{why}");
        let stopped = two_stops(&c).await;
        let mut victims: Vec<String> = vec![];
        for p in &stopped {
            victims.push(
                gpufed_e2e::placements::job_name_of(&c, "team-b", &p.spec.job.uid)
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(victims.len(), 2);
        for (p, victim) in stopped.iter().zip(&victims) {
            let stop = p.spec.stop.as_ref().unwrap();
            assert_eq!(
                (stop.reason.as_str(), stop.grace_period_seconds),
                ("Preempted", 7)
            );
            assert_eq!(
                stop.message.as_deref(),
                Some(gpufed_operator::hub::preemption::placement_stop_message(7).as_str())
            );
            let message = attempt_message(&c, "team-b", victim).await;
            assert!(
                message.starts_with(
                    "lent quota reclaimed by team-a/mine (reclaimWithinCohort: Any): team-b \
                     borrowed 2 GPUs beyond its nominal 2 in cohort research"
                ),
                "{message}"
            );
            assert!(why.contains(&format!("team-b/{victim} attempt 1")), "{why}");
        }
        // The agent's part: the pods stop, the final usage is reported.
        report_stopped(&c, &stopped).await;
        let price: TokenAmount = "2.00".parse().unwrap();
        for v in &victims {
            let j = wait_job(&c, "team-b", v, T, "reclaimed, paid, re-queued", |j| {
                attempt_settled(1)(j) && phase_is(JobPhase::Pending)(j)
            })
            .await
            .unwrap();
            let a = &j.status.as_ref().unwrap().attempts[0];
            assert_eq!(a.phase, AttemptPhase::Preempted, "{a:?}");
            assert!(
                a.message
                    .as_deref()
                    .unwrap()
                    .starts_with("lent quota reclaimed by team-a/mine"),
                "{a:?}"
            );
            let s = settlement(&j, 1).unwrap();
            assert_eq!(s.paid, Some(price.cost_of_gpu_seconds(2).unwrap()));
            assert_eq!(m.lock_state(&s.job_id).await.unwrap(), 2);
            assert!(!events(&c, "team-b", v, "Preempted").await.is_empty());
        }

        // The freed GPUs go to team-a's job; each team is back within its nominal quota.
        inventory(&c, 2).await;
        wait_job(&c, "team-a", "mine", T, "locked", locked(1))
            .await
            .unwrap();
        run(&c, "mine", 1).await;
        wait_quota(&c, "each team at its nominal quota", (2, 2, 0), (2, 2, 0)).await;
        let survivors: Vec<&str> = TEAM_B
            .iter()
            .copied()
            .filter(|n| !victims.iter().any(|v| v == n))
            .collect();
        for name in survivors {
            let j = Api::<ComputeJob>::namespaced(c.clone(), "team-b")
                .get(name)
                .await
                .unwrap();
            assert_eq!(j.status.unwrap().phase, JobPhase::Running, "{name}");
        }
    });
}

#[test]
fn the_member_agent_stops_a_preempted_attempt_with_the_pools_grace_and_the_preemptor_runs() {
    use futures::StreamExt;
    use gpufed_crds::naming::member_namespace;
    use gpufed_e2e::joining::{JOBS_NAMESPACE, MemberPlan, Pool, wait_ready_with_free};
    use gpufed_e2e::{NodeSpec, Tools};
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::watcher;

    run_test(Duration::from_secs(300), || async {
        let tools = Tools::locate().unwrap();
        let pool = Pool::join_with(
            &tools,
            json!({"heartbeatTimeout": "90s", "preemption": "LowerPriority",
                   "preemptionGracePeriod": "25s",
                   "priorityClasses": [{"name": "urgent", "value": 1000}]}),
            &[MemberPlan::new(
                "alpha",
                vec![NodeSpec::new("alpha-0", "H100-SXM-80GB", 4, "eu-west")],
                "H100",
                "1.00",
            )],
            |_| async { Ok(()) },
        )
        .await
        .unwrap();
        let hub = pool.hub.client();
        pool.hub.create_namespace("team-a").await.unwrap();
        wait_ready_with_free(&hub, "alpha", 4, T).await.unwrap();
        let member = pool.members[0].client();
        let submit = |name: &'static str, extra: serde_json::Value| {
            let hub = hub.clone();
            async move {
                let mut spec = json!({"gpusPerReplica": 4, "gpu": {"models": ["H100"]},
                    "maxPricePerGpuHour": "5.00", "maxDuration": "10m",
                    "template": {"containers": [{"name": "main", "image": "busybox:1.36",
                        "env": [{"name": "GPUFED_SIM_DURATION", "value": "10m"}]}]}});
                if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
                    s.extend(e.clone());
                }
                gpufed_e2e::joining::pool::apply(
                    &hub,
                    "computejobs",
                    &json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                            "metadata": {"name": name, "namespace": "team-a"}, "spec": spec}),
                )
                .await
                .unwrap();
            }
        };

        submit("low", json!({})).await;
        wait_job(
            &hub,
            "team-a",
            "low",
            T,
            "running",
            phase_is(JobPhase::Running),
        )
        .await
        .unwrap();
        // Every deletion of the member's workload pods, as the apiserver records it.
        let pods: Api<Pod> = Api::namespaced(member.clone(), JOBS_NAMESPACE);
        let graces = std::sync::Arc::new(std::sync::Mutex::new(Vec::<i64>::new()));
        let seen = graces.clone();
        let watch = tokio::spawn(async move {
            let mut events = watcher(pods, watcher::Config::default()).boxed();
            while let Some(Ok(e)) = events.next().await {
                if let watcher::Event::Apply(p) = e
                    && let Some(g) = p.metadata.deletion_grace_period_seconds
                {
                    seen.lock().unwrap().push(g);
                }
            }
        });
        // The inventory must show the node full after the pods started before it is preempted.
        wait_ready_with_free(&hub, "alpha", 0, T).await.unwrap();
        // Long enough to bill whole GPU-seconds.
        tokio::time::sleep(Duration::from_secs(3)).await;

        submit("urgent", json!({"priorityClassName": "urgent"})).await;
        let ps: Api<Placement> = Api::namespaced(hub.clone(), &member_namespace("alpha"));
        let low = gpufed_e2e::placements::job_uids_named(&hub, "low")
            .await
            .unwrap();
        let stopped = wait_until(
            T,
            "alpha's agent to report attempt 1 of low stopped",
            || {
                let (ps, low) = (ps.clone(), low.clone());
                async move {
                    let p = ps
                        .list(&ListParams::default())
                        .await
                        .ok()?
                        .items
                        .into_iter()
                        .find(|p| low.contains(&p.spec.job.uid) && p.spec.attempt == 1)?;
                    let st = p.status.clone()?;
                    (st.phase == Some(PlacementPhase::Failed)).then_some((p, st))
                }
            },
        )
        .await
        .unwrap();
        let (p, st) = stopped;
        assert_eq!(p.spec.stop.as_ref().unwrap().grace_period_seconds, 25);
        assert_eq!(st.reason.as_deref(), Some("Preempted"));
        assert!(st.gpu_seconds > 0, "it ran: {st:?}");
        wait_until(T, "the pods deleted with the pool's grace", || async {
            graces.lock().unwrap().contains(&25).then_some(())
        })
        .await
        .unwrap();
        watch.abort();

        // The victim ends Preempted with the usage its member reported and waits for a new
        // attempt; the preemptor runs on the freed GPUs.
        let j = wait_job(&hub, "team-a", "low", T, "preempted", |j| {
            j.status.as_ref().is_some_and(|s| {
                s.phase == JobPhase::Pending
                    && s.attempts
                        .first()
                        .is_some_and(|a| a.phase == AttemptPhase::Preempted)
            })
        })
        .await
        .unwrap();
        assert_eq!(j.status.unwrap().attempts[0].gpu_seconds, st.gpu_seconds);
        wait_job(
            &hub,
            "team-a",
            "urgent",
            T,
            "running",
            phase_is(JobPhase::Running),
        )
        .await
        .unwrap();
        assert!(
            !events(&hub, "team-a", "urgent", "Preempting")
                .await
                .is_empty()
        );
    });
}
