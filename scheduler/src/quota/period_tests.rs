//! GPU-hours and spend per period in the quota book (ADR 0019).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::money::ONE_TOKEN;
use crate::testing::job;

/// 2026-12-04T10:00:00Z, a Friday.
const NOW: u64 = 1_796_378_400;
const HOUR: u64 = 3600;

fn hours_quota(ns: &str, cohort: Option<&str>, period: Period, hours: u64) -> NamespaceQuota {
    NamespaceQuota {
        namespace: ns.into(),
        cohort: cohort.map(str::to_string),
        groups: vec![GroupQuota {
            name: "gpus".into(),
            models: vec![],
            nominal: 100,
            borrowing_limit: None,
            per_period: Some(PeriodQuota {
                period,
                gpu_seconds: Some(hours * HOUR),
                spend: None,
            }),
        }],
    }
}

fn spend_quota(ns: &str, tokens: u128) -> NamespaceQuota {
    let mut q = hours_quota(ns, Some("research"), Period::Month, 0);
    if let Some(g) = q.groups.first_mut() {
        g.per_period = Some(PeriodQuota {
            period: Period::Month,
            gpu_seconds: None,
            spend: Some(tokens * ONE_TOKEN),
        });
    }
    q
}

/// `gpu_seconds` in every period.
fn spent(ns: &str, gpu_seconds: u64, tokens: u128) -> PeriodUsage {
    PeriodUsage {
        namespace: ns.into(),
        model: "H100".into(),
        gpu_seconds: [gpu_seconds; 3],
        spend: [tokens * ONE_TOKEN; 3],
    }
}

#[test]
fn a_day_window_is_what_the_book_counts_against() {
    assert_eq!(Period::Day.window(NOW), (NOW - 10 * HOUR, NOW + 14 * HOUR));
}

#[test]
fn a_job_whose_worst_case_exceeds_the_gpu_hours_left_waits_with_the_numbers() {
    let quotas = [hours_quota("team-a", None, Period::Day, 8)];
    let book = QuotaBook::new(&quotas, &[]).with_periods(NOW, &[spent("team-a", 6 * HOUR, 0)]);
    // 2 GPUs × 1h = 2 GPU-hours: exactly what is left.
    let fits = job("team-a/a").gpus(2).max_duration(HOUR).build();
    assert!(book.admit(&fits).is_ok());
    // 4 GPUs × 1h does not fit.
    let big = job("team-a/b").gpus(4).max_duration(HOUR).build();
    let over = book.admit(&big).unwrap_err();
    assert_eq!(
        (over.used, over.nominal, over.need, over.borrowable),
        (6 * HOUR, 8 * HOUR, 4 * HOUR, 0)
    );
    assert_eq!(
        over.to_string(),
        "over quota: namespace team-a has used or committed 6.00 of its 8.00 GPU-hours of group \
         gpus this day (since 2026-12-04T00:00:00Z) and needs up to 4.00 more (GPUs × maxDuration \
         within the day); 2.00 left until 2026-12-05T00:00:00Z; no cohort to borrow from"
    );
}

#[test]
fn the_worst_case_is_cut_at_the_end_of_the_period() {
    // 30 minutes before midnight, a 1-GPU job of 10h counts 0.5 GPU-hours against today.
    let late = NOW + 13 * HOUR + HOUR / 2;
    let quotas = [hours_quota("team-a", None, Period::Day, 1)];
    let book = QuotaBook::new(&quotas, &[]).with_periods(late, &[spent("team-a", HOUR / 2, 0)]);
    let long = job("team-a/a").max_duration(10 * HOUR).build();
    assert!(book.admit(&long).is_ok());
    let mut book = book;
    book.charge_job(&long, "H100");
    let used = book.report()[0].period.clone().unwrap();
    assert_eq!(used.gpu_seconds, HOUR);
    assert_eq!(used.start, NOW - 10 * HOUR);
}

#[test]
fn placements_of_a_pass_are_charged_their_worst_case_so_a_burst_never_overshoots() {
    let quotas = [hours_quota("team-a", None, Period::Week, 3)];
    let mut book = QuotaBook::new(&quotas, &[]).with_periods(NOW, &[]);
    let one = |n: usize| job(&format!("team-a/j{n}")).max_duration(HOUR).build();
    for n in 0..3 {
        assert!(book.admit(&one(n)).is_ok(), "job {n}");
        book.charge_job(&one(n), "H100");
    }
    assert!(book.admit(&one(3)).is_err());
}

#[test]
fn gpu_hours_are_borrowed_only_from_idle_hours_of_the_cohort() {
    let quotas = [
        hours_quota("team-a", Some("research"), Period::Day, 2),
        hours_quota("team-b", Some("research"), Period::Day, 4),
        // Another period does not lend to a Day quota.
        hours_quota("team-c", Some("research"), Period::Week, 100),
    ];
    let usage = [spent("team-a", 2 * HOUR, 0), spent("team-b", HOUR, 0)];
    let book = QuotaBook::new(&quotas, &[]).with_periods(NOW, &usage);
    // team-b leaves 3 GPU-hours idle: team-a may borrow them, not more.
    let three = job("team-a/a").gpus(3).max_duration(HOUR).build();
    assert!(book.admit(&three).is_ok());
    let four = job("team-a/b").gpus(4).max_duration(HOUR).build();
    let over = book.admit(&four).unwrap_err();
    assert_eq!(over.borrowable, 3 * HOUR);
    assert!(
        over.to_string()
            .ends_with("cohort research lends 3.00 GPU-hours now"),
        "{over}"
    );
}

#[test]
fn spend_is_never_borrowed_and_an_unbounded_job_is_told_to_set_a_price_cap() {
    let quotas = [spend_quota("team-a", 100), spend_quota("team-b", 1000)];
    let book = QuotaBook::new(&quotas, &[]).with_periods(NOW, &[spent("team-a", 0, 90)]);
    let ten = job("team-a/a").max_spend("10").build();
    assert!(book.admit(&ten).is_ok());
    // team-b's idle 1000 tokens are not lent.
    let twenty = job("team-a/b").max_spend("20").build();
    let over = book.admit(&twenty).unwrap_err();
    assert_eq!(
        over.to_string(),
        "over quota: namespace team-a has spent or locked 90.00 of its 100.00 tokens of group \
         gpus this month (since 2026-12-01T00:00:00Z) and this job locks up to 20.00 \
         (maxPricePerGpuHour × GPUs × maxDuration); 10.00 left until 2027-01-01T00:00:00Z; spend \
         is never borrowed"
    );
    let unbounded = job("team-a/c").build();
    let text = book.admit(&unbounded).unwrap_err().to_string();
    assert!(text.contains("set spec.maxPricePerGpuHour"), "{text}");
}

#[test]
fn the_gpu_limit_is_reported_before_the_period_limits() {
    let mut q = hours_quota("team-a", None, Period::Day, 0);
    if let Some(g) = q.groups.first_mut() {
        g.nominal = 1;
    }
    let book = QuotaBook::new(&[q], &[]).with_periods(NOW, &[]);
    let over = book.admit(&job("team-a/a").gpus(2).build()).unwrap_err();
    assert_eq!(over.limit, Limit::Gpus);
}
