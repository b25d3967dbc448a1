#![allow(clippy::unwrap_used, clippy::expect_used)]

use gpufed_crds::testing::job;
use gpufed_crds::{
    AttemptPhase, AttemptRecord, ComputeJobStatus, JobPhase, Settlement, TokenAmount,
};
use k8s_openapi::jiff::Timestamp;

use super::*;

/// 2026-12-04T10:00:00Z, a Friday.
const NOW: u64 = 1_796_378_400;
const HOUR: u64 = 3600;
const TOKEN: u128 = gpufed_scheduler::ONE_TOKEN;

/// What `j`'s attempts count at `now`, read from the cached job; the same must come out of the
/// record the hub keeps of it at rest (ADR 0041), which the helper checks.
fn job_usage(j: &ComputeJob, now: u64, chain: bool) -> Vec<PeriodUsage> {
    let cached = super::job_usage(JobRef::Cached(j), now, chain);
    let mut with_uid = j.clone();
    with_uid.metadata.uid = Some("uid-1".into());
    let record = crate::hub::at_rest::JobAtRest::of(&with_uid).unwrap();
    assert_eq!(
        super::job_usage(JobRef::AtRest(&record), now, chain),
        cached,
        "the record counts what the job counts"
    );
    cached
}

fn at(secs: u64) -> Time {
    Time(Timestamp::from_second(secs as i64).unwrap())
}

fn attempt(n: u32, phase: AttemptPhase) -> AttemptRecord {
    serde_json::from_value(serde_json::json!({
        "attempt": n, "cluster": "alpha", "placement": format!("p{n}"), "model": "H100",
        "pricePerGpuHour": "2", "phase": phase,
    }))
    .unwrap()
}

/// A 4-GPU job of `maxDuration` 2h and price cap 3 in `team-a` with `attempts`.
fn with_attempts(attempts: Vec<AttemptRecord>, phase: JobPhase) -> ComputeJob {
    let mut j = job("j").gpus(4).max_duration("2h").max_price("3").build();
    j.metadata.namespace = Some("team-a".into());
    j.status = Some(ComputeJobStatus {
        phase,
        attempt: attempts.len() as u32,
        attempts,
        ..ComputeJobStatus::default()
    });
    j
}

#[test]
fn a_finished_attempt_counts_its_use_inside_each_period() {
    // Ran 03:00 to 04:00 today on 4 GPUs; the member reported 3.5 GPU-hours.
    let mut a = attempt(1, AttemptPhase::Succeeded);
    a.start_time = Some(at(NOW - 7 * HOUR));
    a.finish_time = Some(at(NOW - 6 * HOUR));
    a.gpu_seconds = 12_600;
    let u = &job_usage(&with_attempts(vec![a], JobPhase::Succeeded), NOW, false)[0];
    assert_eq!(u.gpu_seconds, [12_600; 3]);
    assert_eq!(u.spend, [0; 3]);
}

#[test]
fn an_attempt_that_ran_across_midnight_counts_only_its_part_of_the_day() {
    // Ran from 23:00 yesterday to 01:00 today on 4 GPUs: 8 GPU-hours, 4 of them today.
    let mut a = attempt(1, AttemptPhase::Succeeded);
    a.start_time = Some(at(NOW - 11 * HOUR));
    a.finish_time = Some(at(NOW - 9 * HOUR));
    a.gpu_seconds = 8 * HOUR;
    let u = &job_usage(&with_attempts(vec![a], JobPhase::Succeeded), NOW, false)[0];
    assert_eq!(u.gpu_seconds[Period::Day.index()], 4 * HOUR);
    assert_eq!(u.gpu_seconds[Period::Week.index()], 8 * HOUR);
}

#[test]
fn a_running_attempt_counts_its_worst_case_cut_at_the_period_end() {
    // Started an hour ago with maxDuration 2h: 4 GPUs × 2h committed.
    let mut a = attempt(1, AttemptPhase::Running);
    a.start_time = Some(at(NOW - HOUR));
    let u = &job_usage(
        &with_attempts(vec![a.clone()], JobPhase::Running),
        NOW,
        false,
    )[0];
    assert_eq!(u.gpu_seconds, [8 * HOUR; 3]);
    // Started 30 minutes before midnight: only 30 minutes of it fall in today.
    let late = NOW + 13 * HOUR + HOUR / 2;
    a.start_time = Some(at(late));
    let u = &job_usage(
        &with_attempts(vec![a.clone()], JobPhase::Running),
        late,
        false,
    )[0];
    assert_eq!(u.gpu_seconds[Period::Day.index()], 2 * HOUR);
    // Still running three hours past its start (the member is late to stop it): the use so far.
    a.start_time = Some(at(NOW - 3 * HOUR));
    let u = &job_usage(&with_attempts(vec![a], JobPhase::Running), NOW, false)[0];
    assert_eq!(u.gpu_seconds[Period::Day.index()], 12 * HOUR);
}

#[test]
fn spend_is_the_lock_until_settled_then_what_was_paid() {
    let mut a = attempt(1, AttemptPhase::Running);
    a.placed_time = Some(at(NOW - HOUR));
    // No settlement yet in a pool with a chain: the lock it will make (3 × 4 GPUs × 2h = 24).
    let u = &job_usage(
        &with_attempts(vec![a.clone()], JobPhase::Running),
        NOW,
        true,
    )[0];
    assert_eq!(u.spend, [24 * TOKEN; 3]);
    a.settlement = Some(Box::new(Settlement {
        state: SettlementState::Settled,
        locked: Some(TokenAmount::from_atto(24 * TOKEN)),
        paid: Some(TokenAmount::from_atto(5 * TOKEN)),
        ..Settlement::default()
    }));
    a.phase = AttemptPhase::Succeeded;
    let u = &job_usage(
        &with_attempts(vec![a.clone()], JobPhase::Succeeded),
        NOW,
        true,
    )[0];
    assert_eq!(u.spend, [5 * TOKEN; 3]);
    // Placed last month (2026-11-29): neither this week's nor this month's spend.
    a.placed_time = Some(at(NOW - 5 * 24 * HOUR));
    let u = &job_usage(&with_attempts(vec![a], JobPhase::Succeeded), NOW, true)[0];
    assert_eq!(u.spend[Period::Month.index()], 0);
    assert_eq!(u.spend[Period::Week.index()], 0);
}

#[test]
fn a_decision_in_flight_counts_its_worst_case_from_now() {
    let j = with_attempts(vec![], JobPhase::Pending);
    let u = in_flight_usage(&j, "H100", NOW, true);
    assert_eq!(u.gpu_seconds, [8 * HOUR; 3]);
    assert_eq!(u.spend, [24 * TOKEN; 3]);
    assert_eq!(in_flight_usage(&j, "H100", NOW, false).spend, [0; 3]);
}
