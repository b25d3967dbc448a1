//! GPU-hours per period (ADR 0019) against a real apiserver with the hub as a process (the test
//! stands in for the member agent): team-a may use 2 GPU-hours a month (a month, not a day, so
//! that no run of the test falls within an hour of the period's end, where worst cases are cut). Two one-GPU jobs of the
//! default maxDuration (1h) commit both; the third waits `OverQuota` although GPUs are free, with
//! an explanation naming the quota, the month and what is left (also in `kubectl gpufed explain`).
//! Once one job ends having used a few GPU-seconds, a little less than an hour is left: the
//! waiting job of an hour still waits, and a job of maxDuration 30m is placed. Once the team
//! deletes its finished job, its use still counts (the pool's `status.quotaLedger`): a second job
//! of 30m waits `OverQuota` for the few GPU-seconds the deleted job used. The pool's status shows the day's use; the apiserver refuses
//! GPU-hours without a period and spend in a pool without a chain, naming the fix.
//!
//! Spend per period against a real anvil: team-a may spend 10 tokens a month; two jobs lock 3.60
//! each, the third would take it to 10.80 and waits `OverQuota` naming the tokens left; once the
//! first settles for what it used, its lock no longer counts, only what it paid, and the third is
//! placed; once the settled job is deleted, what it paid still counts (the quota ledger).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/plugin.rs"]
#[allow(dead_code)]
mod plugin_cli;

use std::time::Duration;

use gpufed_crds::conditions::{self, job as jc};
use gpufed_crds::{
    ComputeJob, GpuPool, PlacementPhase, PlacementStatus, SettlementState, TokenAmount,
};
use gpufed_e2e::hubctl::{
    apply, hub_cluster, keep_heartbeating, node, placements, report_inventory, report_placement,
    start_hub, wait_job,
};
use gpufed_e2e::{Tools, market, run_test, wait_until};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{self, Timestamp, ToSpan};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use plugin_cli::Plugin;

const HARD_DEADLINE: Duration = Duration::from_secs(300);
const T: Duration = Duration::from_secs(60);

async fn submit(c: &Client, name: &str, max_duration: &str) {
    let j = json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                   "metadata": {"name": name, "namespace": "team-a"},
                   "spec": {"pool": "shared", "gpusPerReplica": 1, "gpu": {"models": ["H100"]},
                            "maxDuration": max_duration,
                            "template": {"containers": [{"name": "main", "image": "busybox"}]}}});
    apply::<ComputeJob>(c, &j).await.unwrap();
}

fn placed(j: &ComputeJob) -> bool {
    j.status.as_ref().is_some_and(|s| s.placement.is_some())
}

fn over_quota(j: &ComputeJob) -> bool {
    j.status
        .as_ref()
        .is_some_and(|s| s.reason.as_deref() == Some("OverQuota"))
}

#[test]
fn a_team_runs_jobs_until_its_gpu_hours_of_the_month_are_used_then_waits_over_quota() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let mut hub = hub_cluster(&tools, "period", &["gpufed-system", "team-a"])
            .await
            .unwrap();
        start_hub(&tools, &mut hub, "hub-0", &[]).unwrap();
        let c = hub.client();

        // The apiserver refuses GPU-hours without a period and spend without a chain.
        for (group, fix) in [
            (
                json!({"name": "gpus", "gpus": 8, "gpuHours": 2}),
                "gpuHours and spend count per period; set period (Day, Week or Month)",
            ),
            (
                json!({"name": "gpus", "gpus": 8, "period": "Month", "spend": "100"}),
                "spend needs spec.chain",
            ),
        ] {
            let bad = json!({
                "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuPool", "metadata": {"name": "bad"},
                "spec": {"quotas": [{"namespace": "team-a", "groups": [group]}]}
            });
            let err = apply::<GpuPool>(&c, &bad).await.unwrap_err().to_string();
            assert!(err.contains(fix), "{err}");
        }

        let pool = json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuPool", "metadata": {"name": "shared"},
            "spec": {"quotas": [{"namespace": "team-a", "groups": [
                {"name": "gpus", "gpus": 8, "period": "Month", "gpuHours": 2}]}]}
        });
        apply::<GpuPool>(&c, &pool).await.unwrap();
        // One member with 8 free H100s: GPUs are never what the jobs wait for.
        let m = json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "MemberCluster", "metadata": {"name": "alpha"},
                       "spec": {"pool": "shared", "region": "eu-west",
                                "prices": [{"model": "H100", "pricePerGpuHour": "2.00"}]}});
        apply::<gpufed_crds::MemberCluster>(&c, &m).await.unwrap();
        std::mem::forget(keep_heartbeating(c.clone(), "alpha"));
        report_inventory(&c, "alpha", vec![node("alpha-0", "H100", 81559, 8, 8)])
            .await
            .unwrap();

        // Two jobs of 1 GPU × 1h commit the month's 2 GPU-hours.
        for name in ["a-0", "a-1"] {
            submit(&c, name, "1h").await;
            wait_job(&c, "team-a", name, T, "placed", placed)
                .await
                .unwrap();
        }
        submit(&c, "a-2", "1h").await;
        let j = wait_job(&c, "team-a", "a-2", T, "over quota", over_quota)
            .await
            .unwrap();
        let st = j.status.unwrap();
        assert!(st.placement.is_none());
        let (first, next) = month_bounds();
        let expected = format!(
            "over quota: namespace team-a has used or committed 2.00 of its 2.00 GPU-hours of \
             group gpus this month (since {first}T00:00:00Z) and needs up to 1.00 more (GPUs × \
             maxDuration within the month); 0.00 left until {next}T00:00:00Z; no cohort to \
             borrow from"
        );
        assert_eq!(st.explanation.as_deref(), Some(expected.as_str()));
        let cond = conditions::find(&st.conditions, jc::SCHEDULED).unwrap();
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("False", "OverQuota")
        );
        let plugin = Plugin::new(&tools, hub.kubeconfig());
        let explained = plugin.ok(&["explain", "a-2", "-n", "team-a"]).await;
        assert!(
            explained.contains("\nPhase:        Pending (OverQuota)\n"),
            "{explained}"
        );
        assert!(
            explained.contains("2.00 of its 2.00 GPU-hours of group gpus this month"),
            "{explained}"
        );

        let pools: Api<GpuPool> = Api::all(c.clone());
        let month_use = |p: &GpuPool| {
            p.status
                .as_ref()
                .and_then(|s| {
                    s.quota_usage
                        .iter()
                        .find(|q| q.namespace == "team-a")
                        .cloned()
                })
                .and_then(|q| Some((q.gpu_hours_used?, q.gpu_hours_limit?, q.period?)))
        };
        wait_until(T, "the month's GPU-hours in the pool status", || async {
            let p = pools.get("shared").await.ok()?;
            (month_use(&p) == Some(("2.00".into(), 2, gpufed_crds::QuotaPeriod::Month)))
                .then_some(())
        })
        .await
        .unwrap();

        // a-0 ends having used 5 GPU-seconds: 1h 5s used or committed, 5s less than an hour left.
        let a0 = gpufed_e2e::placements::job_uids_named(&c, "a-0")
            .await
            .unwrap();
        let ps = wait_until(T, "a-0's Placement", || async {
            placements(&c, "alpha")
                .await
                .ok()?
                .into_iter()
                .find(|p| a0.contains(&p.spec.job.uid))
        })
        .await
        .unwrap();
        let now = Timestamp::now();
        let done = PlacementStatus {
            phase: Some(PlacementPhase::Succeeded),
            start_time: Some(Time(now.checked_sub(5.seconds()).unwrap())),
            finish_time: Some(Time(now)),
            gpu_seconds: 5,
            ..Default::default()
        };
        report_placement(&c, &ps, done).await.unwrap();
        wait_job(&c, "team-a", "a-0", T, "finished", |j| {
            j.status.as_ref().is_some_and(|s| s.phase.is_finished())
        })
        .await
        .unwrap();
        wait_until(T, "a-0's use in the pool status", || async {
            let p = pools.get("shared").await.ok()?;
            (month_use(&p)?.0 == "1.00").then_some(())
        })
        .await
        .unwrap();
        // a-2 (another hour) still waits; a job of 30 minutes fits what is left.
        submit(&c, "a-3", "30m").await;
        wait_job(
            &c,
            "team-a",
            "a-3",
            T,
            "placed in the half hour left",
            placed,
        )
        .await
        .unwrap();
        let j = wait_job(&c, "team-a", "a-2", T, "still over quota", over_quota)
            .await
            .unwrap();
        assert!(j.status.unwrap().placement.is_none());
        wait_until(T, "a-3 committed in the pool status", || async {
            let p = pools.get("shared").await.ok()?;
            (month_use(&p)?.0 == "1.50").then_some(())
        })
        .await
        .unwrap();

        // The team deletes its finished job: the GPU-seconds the hub recorded for it (at most the
        // 5 reported, capped by the time since placement) keep counting, through the pool's quota
        // ledger. Less than 30 minutes are left, so a job of 30 minutes waits.
        let jobs: Api<ComputeJob> = Api::namespaced(c.clone(), "team-a");
        let used = jobs.get("a-0").await.unwrap().status.unwrap().attempts[0].gpu_seconds;
        assert!((1..=5).contains(&used), "{used}");
        jobs.delete("a-0", &Default::default()).await.unwrap();
        wait_until(T, "a-0 gone", || async {
            matches!(jobs.get_opt("a-0").await, Ok(None)).then_some(())
        })
        .await
        .unwrap();
        let ledger = wait_until(T, "a-0's use in the pool's quota ledger", || async {
            let p = pools.get("shared").await.ok()?;
            let e = p.status?.quota_ledger.into_iter().next()?;
            // The job's UID stays until the hub's cache no longer shows the job.
            e.jobs.is_empty().then_some(e)
        })
        .await
        .unwrap();
        assert_eq!(
            (
                ledger.namespace.as_str(),
                ledger.model.as_str(),
                ledger.period,
                ledger.gpu_seconds
            ),
            ("team-a", "H100", gpufed_crds::QuotaPeriod::Month, used)
        );
        assert_eq!(
            ledger.period_start.0.to_string(),
            format!("{first}T00:00:00Z")
        );
        let p = pools.get("shared").await.unwrap();
        assert_eq!(month_use(&p).unwrap().0, "1.50");
        submit(&c, "a-4", "30m").await;
        let j = wait_job(&c, "team-a", "a-4", T, "over quota", over_quota)
            .await
            .unwrap();
        let expected = format!(
            "over quota: namespace team-a has used or committed 1.50 of its 2.00 GPU-hours of \
             group gpus this month (since {first}T00:00:00Z) and needs up to 0.50 more (GPUs × \
             maxDuration within the month); 0.49 left until {next}T00:00:00Z; no cohort to \
             borrow from"
        );
        assert_eq!(
            j.status.unwrap().explanation.as_deref(),
            Some(expected.as_str())
        );
    });
}

/// The first day of this month and of the next, as `YYYY-MM-DD`.
fn month_bounds() -> (String, String) {
    let first = Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .first_of_month();
    let next = first.checked_add(1.month()).unwrap();
    (
        first.strftime("%Y-%m-%d").to_string(),
        next.strftime("%Y-%m-%d").to_string(),
    )
}

#[test]
fn a_team_spends_up_to_its_monthly_budget_and_a_settled_job_counts_what_it_paid() {
    run_test(Duration::from_secs(360), || async {
        let m = market::started("spend-quota", 1000, json!({}))
            .await
            .unwrap();
        let c = m.hub.client();
        let pools: Api<GpuPool> = Api::all(c.clone());
        let quotas = json!({"spec": {"quotas": [{"namespace": "team-a", "groups": [
            {"name": "all", "gpus": 8, "period": "Month", "spend": "10"}]}]}});
        pools
            .patch("market", &PatchParams::default(), &Patch::Merge(&quotas))
            .await
            .unwrap();
        let spend_use = |p: &GpuPool| {
            p.status
                .as_ref()
                .and_then(|s| {
                    s.quota_usage
                        .iter()
                        .find(|q| q.namespace == "team-a")
                        .cloned()
                })
                .and_then(|q| Some((q.spent?, q.spend_limit?)))
        };
        wait_until(T, "the spend quota in the pool status", || async {
            spend_use(&pools.get("market").await.ok()?)
        })
        .await
        .unwrap();

        // Two one-GPU jobs of 1h at 3.60 lock 3.60 each.
        let locked = |j: &ComputeJob| {
            market::settlement(j, 1).is_some_and(|s| s.state == SettlementState::Locked)
        };
        for name in ["s-0", "s-1"] {
            market::submit(&c, "team-a", name, "H100", 1, "3.60")
                .await
                .unwrap();
            wait_job(&c, "team-a", name, T, "funds locked", locked)
                .await
                .unwrap();
        }
        // A third would take the month to 10.80 of 10.
        market::submit(&c, "team-a", "s-2", "H100", 1, "3.60")
            .await
            .unwrap();
        let j = wait_job(&c, "team-a", "s-2", T, "over quota", over_quota)
            .await
            .unwrap();
        let (first, next) = month_bounds();
        assert_eq!(
            j.status.unwrap().explanation.as_deref(),
            Some(
                format!(
                    "over quota: namespace team-a has spent or locked 7.20 of its 10.00 tokens of \
                     group all this month (since {first}T00:00:00Z) and this job locks up to 3.60 \
                     (maxPricePerGpuHour × GPUs × maxDuration); 2.80 left until \
                     {next}T00:00:00Z; spend is never borrowed"
                )
                .as_str()
            )
        );

        // s-0 ends having used a few GPU-seconds and settles: it counts what it paid, not its lock.
        // The hub believes at most GPUs × seconds since placement, so the report waits until 4
        // GPU-seconds were possible.
        let j = wait_job(&c, "team-a", "s-0", T, "placed", |j| {
            j.status
                .as_ref()
                .is_some_and(|s| s.attempts.first().is_some_and(|a| a.placed_time.is_some()))
        })
        .await
        .unwrap();
        let placed = j.status.unwrap().attempts[0].placed_time.clone().unwrap().0;
        while Timestamp::now().duration_since(placed).as_secs() < 5 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        market::finish(&c, "alpha", "s-0", 4).await.unwrap();
        let j = wait_job(&c, "team-a", "s-0", T, "settled", market::settled)
            .await
            .unwrap();
        let paid = market::settlement(&j, 1).unwrap().paid.unwrap();
        assert_eq!(
            paid.to_string(),
            "0.004",
            "4 GPU-seconds at 3.60 per GPU-hour"
        );
        wait_job(&c, "team-a", "s-2", T, "placed once s-0 settled", locked)
            .await
            .unwrap();
        let expected = TokenAmount::from_atto(paid.atto() + 72 * 10u128.pow(17));
        wait_until(T, "what was paid and locked in the pool status", || async {
            let (spent, limit) = spend_use(&pools.get("market").await.ok()?)?;
            (spent == expected && limit.to_string() == "10.00").then_some(())
        })
        .await
        .unwrap();

        // Deleting the settled job does not give its payment back: the ledger keeps it.
        let jobs: Api<ComputeJob> = Api::namespaced(c.clone(), "team-a");
        jobs.delete("s-0", &Default::default()).await.unwrap();
        wait_until(T, "s-0 gone", || async {
            matches!(jobs.get_opt("s-0").await, Ok(None)).then_some(())
        })
        .await
        .unwrap();
        let ledger = wait_until(T, "s-0's payment in the pool's quota ledger", || async {
            let p = pools.get("market").await.ok()?;
            let e = p.status?.quota_ledger.into_iter().next()?;
            e.jobs.is_empty().then_some(e)
        })
        .await
        .unwrap();
        assert_eq!(ledger.spent, Some(paid));
        let (spent, _) = spend_use(&pools.get("market").await.unwrap()).unwrap();
        assert_eq!(spent, expected);
    });
}
