#![allow(clippy::unwrap_used, clippy::expect_used)]

use gpufed_crds::testing::job;
use gpufed_crds::{AttemptPhase, AttemptRecord, ComputeJobStatus, JobPhase, SettlementState};
use k8s_openapi::jiff::Timestamp;

use super::*;

/// 2026-12-04T10:00:00Z, a Friday.
const NOW: u64 = 1_796_378_400;
const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;
const TOKEN: u128 = gpufed_scheduler::ONE_TOKEN;

fn at(secs: u64) -> Time {
    Time(Timestamp::from_second(secs as i64).unwrap())
}

/// A pool whose `team-a` quota counts GPU-hours per day (group `h100`) and per month (`rest`).
fn pool() -> GpuPool {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuPool", "metadata": {"name": "shared"},
        "spec": {"quotas": [{"namespace": "team-a", "groups": [
            {"name": "h100", "models": ["H100"], "gpus": 8, "period": "Day", "gpuHours": 10},
            {"name": "rest", "gpus": 8, "period": "Month", "gpuHours": 100}]}]}
    }))
    .unwrap()
}

/// A finished 2-GPU job `name` (UID `uid-<name>`) of team-a whose one attempt on H100 ran
/// `[start, end)` and used `gpu_seconds`.
fn finished(name: &str, start: u64, end: u64, gpu_seconds: u64) -> ComputeJob {
    let mut a: AttemptRecord = serde_json::from_value(serde_json::json!({
        "attempt": 1, "cluster": "alpha", "placement": "p1", "model": "H100",
        "pricePerGpuHour": "2", "phase": AttemptPhase::Succeeded,
    }))
    .unwrap();
    a.start_time = Some(at(start));
    a.placed_time = Some(at(start));
    a.finish_time = Some(at(end));
    a.gpu_seconds = gpu_seconds;
    let mut j = job(name).gpus(2).max_duration("2h").build();
    j.metadata.namespace = Some("team-a".into());
    j.spec.pool = "shared".into();
    j.metadata.uid = Some(format!("uid-{name}"));
    j.status = Some(ComputeJobStatus {
        phase: JobPhase::Succeeded,
        attempt: 1,
        attempts: vec![a],
        ..ComputeJobStatus::default()
    });
    j
}

fn entry(ledger: &[QuotaLedgerEntry], p: QuotaPeriod) -> &QuotaLedgerEntry {
    ledger.iter().find(|e| e.period == p).unwrap()
}

#[test]
fn a_deleted_job_counts_its_use_in_each_period_its_namespace_counts() {
    let mut ledger = vec![];
    // 2 GPUs from 08:00 to 09:00 today: 2 GPU-hours.
    let j = finished("a", NOW - 2 * HOUR, NOW - HOUR, 2 * HOUR);
    assert!(retire(&mut ledger, &pool(), &j, NOW));
    assert_eq!(
        ledger.len(),
        2,
        "one entry per period of the namespace's groups"
    );
    let day = entry(&ledger, QuotaPeriod::Day);
    assert_eq!(
        (day.model.as_str(), day.gpu_seconds, unix(&day.period_start)),
        ("H100", 2 * HOUR, NOW - 10 * HOUR)
    );
    assert_eq!(day.jobs, vec!["uid-a".to_string()]);
    assert_eq!(day.spent, None);
    assert_eq!(entry(&ledger, QuotaPeriod::Month).gpu_seconds, 2 * HOUR);
    // A second job adds to the same entries.
    let k = finished("b", NOW - HOUR, NOW - HOUR / 2, HOUR);
    assert!(retire(&mut ledger, &pool(), &k, NOW));
    assert_eq!(entry(&ledger, QuotaPeriod::Day).gpu_seconds, 3 * HOUR);
    assert_eq!(entry(&ledger, QuotaPeriod::Day).jobs.len(), 2);
    // As usage: the day's index holds the day's entry, the month's the month's.
    let mut p = pool();
    p.status = Some(gpufed_crds::GpuPoolStatus {
        quota_ledger: ledger,
        ..Default::default()
    });
    let u = usage(&p, NOW);
    let day = u.iter().find(|u| u.gpu_seconds[0] > 0).unwrap();
    assert_eq!(day.gpu_seconds, [3 * HOUR, 0, 0]);
    let month = u.iter().find(|u| u.gpu_seconds[2] > 0).unwrap();
    assert_eq!(month.gpu_seconds, [0, 0, 3 * HOUR]);
    assert_eq!(retired(&p), HashSet::from(["uid-a", "uid-b"]));
}

#[test]
fn retiring_a_job_twice_counts_it_once() {
    let mut ledger = vec![];
    let j = finished("a", NOW - 2 * HOUR, NOW - HOUR, 2 * HOUR);
    assert!(retire(&mut ledger, &pool(), &j, NOW));
    let once = ledger.clone();
    // The finalizer runs again (a retry, or another hub after a failover): nothing changes.
    assert!(!retire(&mut ledger, &pool(), &j, NOW + 60));
    assert_eq!(ledger, once);
}

#[test]
fn only_the_part_inside_the_period_counts_and_ended_periods_are_dropped() {
    let mut ledger = vec![];
    // Ran from 23:00 yesterday to 01:00 today: 4 GPU-hours, 2 of them today.
    let j = finished("a", NOW - 11 * HOUR, NOW - 9 * HOUR, 4 * HOUR);
    assert!(retire(&mut ledger, &pool(), &j, NOW));
    assert_eq!(entry(&ledger, QuotaPeriod::Day).gpu_seconds, 2 * HOUR);
    assert_eq!(entry(&ledger, QuotaPeriod::Month).gpu_seconds, 4 * HOUR);
    // Tomorrow the day's entry no longer counts, and is dropped; the month's stays.
    let tomorrow = NOW + DAY;
    let mut p = pool();
    p.status = Some(gpufed_crds::GpuPoolStatus {
        quota_ledger: ledger.clone(),
        ..Default::default()
    });
    assert_eq!(usage(&p, tomorrow).len(), 1);
    let kept = prune(&ledger, tomorrow, |_| true);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].period, QuotaPeriod::Month);
    // A job retired tomorrow starts a fresh day entry and drops yesterday's.
    let k = finished("b", tomorrow - HOUR, tomorrow - HOUR / 2, HOUR);
    assert!(retire(&mut ledger, &pool(), &k, tomorrow));
    let day = entry(&ledger, QuotaPeriod::Day);
    assert_eq!(
        (day.gpu_seconds, unix(&day.period_start)),
        (HOUR, tomorrow - 10 * HOUR)
    );
    assert_eq!(day.jobs, vec!["uid-b".to_string()]);
    assert_eq!(entry(&ledger, QuotaPeriod::Month).gpu_seconds, 5 * HOUR);
    // Next month nothing is left.
    assert!(prune(&ledger, NOW + 31 * DAY, |_| true).is_empty());
}

#[test]
fn uids_of_jobs_gone_are_dropped_but_their_use_stays() {
    let mut ledger = vec![];
    retire(
        &mut ledger,
        &pool(),
        &finished("a", NOW - 2 * HOUR, NOW - HOUR, 2 * HOUR),
        NOW,
    );
    retire(
        &mut ledger,
        &pool(),
        &finished("b", NOW - 2 * HOUR, NOW - HOUR, HOUR),
        NOW,
    );
    let kept = prune(&ledger, NOW, |uid| uid == "uid-b");
    let day = entry(&kept, QuotaPeriod::Day);
    assert_eq!(
        (day.gpu_seconds, day.jobs.clone()),
        (3 * HOUR, vec!["uid-b".to_string()])
    );
}

#[test]
fn a_namespace_without_period_quotas_keeps_no_ledger() {
    let mut ledger = vec![];
    let mut j = finished("a", NOW - 2 * HOUR, NOW - HOUR, 2 * HOUR);
    j.metadata.namespace = Some("team-b".into());
    assert!(!retire(&mut ledger, &pool(), &j, NOW));
    assert!(ledger.is_empty());
}

#[test]
fn a_deleted_job_counts_what_it_paid_not_its_lock_and_nothing_for_a_lock_never_made() {
    let mut p = pool();
    p.spec.chain = Some(
        serde_json::from_value(serde_json::json!({
            "chainId": 31337, "rpcUrl": "http://localhost:8545",
            "token": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
            "escrow": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
            "hubKeySecretRef": {"namespace": "gpufed-system", "name": "k", "key": "k"}}))
        .unwrap(),
    );
    let mut j = finished("a", NOW - 2 * HOUR, NOW - HOUR, 2 * HOUR);
    let st = j.status.as_mut().unwrap();
    let mut settled = crate::hub::settlement::unfunded("1".into());
    settled.state = SettlementState::Settled;
    settled.locked = Some(TokenAmount::from_atto(12 * TOKEN));
    settled.paid = Some(TokenAmount::from_atto(4 * TOKEN));
    st.attempts[0].settlement = Some(Box::new(settled));
    // A second attempt that never locked its funds: the deleted job will not lock them now.
    let mut second = st.attempts[0].clone();
    second.attempt = 2;
    second.gpu_seconds = 0;
    second.settlement = Some(Box::new(crate::hub::settlement::unfunded("2".into())));
    st.attempts.push(second);
    let mut ledger = vec![];
    assert!(retire(&mut ledger, &p, &j, NOW));
    let day = entry(&ledger, QuotaPeriod::Day);
    assert_eq!(day.spent, Some(TokenAmount::from_atto(4 * TOKEN)));
    assert_eq!(day.gpu_seconds, 2 * HOUR);
}

#[test]
fn a_job_the_ledger_names_counts_through_the_ledger_only() {
    let j = finished("a", NOW - 2 * HOUR, NOW - HOUR, 2 * HOUR);
    let k = finished("b", NOW - HOUR, NOW - HOUR / 2, HOUR);
    let mut p = pool();
    let day = |p: &GpuPool, jobs: &[&ComputeJob]| -> u64 {
        period_usage::pool_usage(
            p,
            jobs.iter().map(|j| crate::hub::at_rest::JobRef::Cached(j)),
            |_| None,
            NOW,
        )
        .iter()
        .map(|u| u.gpu_seconds[Period::Day.index()])
        .sum()
    };
    assert_eq!(day(&p, &[&j, &k]), 3 * HOUR);
    // `a` is being deleted: counted in the ledger, its object not gone yet. Still 3 GPU-hours.
    let mut status = gpufed_crds::GpuPoolStatus::default();
    retire(&mut status.quota_ledger, &p, &j, NOW);
    p.status = Some(status);
    assert_eq!(day(&p, &[&j, &k]), 3 * HOUR);
    // And once it is gone.
    assert_eq!(day(&p, &[&k]), 3 * HOUR);
}
