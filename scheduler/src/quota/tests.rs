#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::decision::Decision;
use crate::input::Policy;
use crate::scheduler::schedule_batch_with_quotas;
use crate::testing::{cluster, job};

fn quota(ns: &str, cohort: Option<&str>, nominal: u64, limit: Option<u64>) -> NamespaceQuota {
    NamespaceQuota {
        namespace: ns.into(),
        cohort: cohort.map(str::to_string),
        groups: vec![GroupQuota {
            name: "gpus".into(),
            models: vec![],
            nominal,
            borrowing_limit: limit,
            per_period: None,
        }],
    }
}

fn used(ns: &str, model: &str, gpus: u64) -> Usage {
    Usage {
        namespace: ns.into(),
        model: model.into(),
        gpus,
    }
}

fn four_h100(n: usize) -> JobRequest {
    job(&format!("team-a/j{n}"))
        .gpus(4)
        .models(&["H100"])
        .order(n as u64)
        .build()
}

#[test]
fn a_namespace_without_a_cohort_holds_at_most_its_nominal_quota() {
    let book = QuotaBook::new(
        &[quota("team-a", None, 8, None)],
        &[used("team-a", "H100", 4)],
    );
    assert_eq!(book.admit(&four_h100(1)), Ok(Some(vec!["H100".into()])));
    let book = QuotaBook::new(
        &[quota("team-a", None, 8, None)],
        &[used("team-a", "H100", 6)],
    );
    let over = book.admit(&four_h100(1)).unwrap_err();
    assert_eq!(
        (over.used, over.nominal, over.need, over.borrowable),
        (6, 8, 4, 0)
    );
    assert_eq!(
        over.to_string(),
        "over quota: namespace team-a holds 6 of its 8 GPUs of group gpus and needs 4 more; \
         no cohort to borrow from"
    );
}

#[test]
fn a_namespace_borrows_only_what_its_cohort_has_idle() {
    let quotas = [
        quota("team-a", Some("research"), 4, None),
        quota("team-b", Some("research"), 8, None),
    ];
    // team-b holds 4 of its 8: 4 idle, so team-a may go to 8.
    let book = QuotaBook::new(
        &quotas,
        &[used("team-a", "H100", 4), used("team-b", "H100", 4)],
    );
    assert!(book.admit(&four_h100(1)).is_ok());
    // team-b holds 6: only 2 idle.
    let book = QuotaBook::new(
        &quotas,
        &[used("team-a", "H100", 4), used("team-b", "H100", 6)],
    );
    let over = book.admit(&four_h100(1)).unwrap_err();
    assert_eq!(over.borrowable, 2);
    assert!(
        over.to_string().ends_with("cohort research lends 2 now"),
        "{over}"
    );
}

#[test]
fn a_lender_gets_its_nominal_quota_back_for_new_jobs_even_while_lent() {
    let quotas = [
        quota("team-a", Some("research"), 4, None),
        quota("team-b", Some("research"), 8, None),
    ];
    // team-a borrowed all of team-b's quota; team-b may still start jobs within its own 8.
    let book = QuotaBook::new(&quotas, &[used("team-a", "H100", 12)]);
    let b = job("team-b/x").gpus(8).models(&["H100"]).build();
    assert!(book.admit(&b).is_ok());
    // ...but team-a may borrow no more.
    assert_eq!(book.admit(&four_h100(1)).unwrap_err().borrowable, 0);
}

#[test]
fn the_borrowing_limit_caps_what_is_held_beyond_nominal() {
    let quotas = [
        quota("team-a", Some("research"), 4, Some(2)),
        quota("team-b", Some("research"), 8, None),
    ];
    let book = QuotaBook::new(&quotas, &[used("team-a", "H100", 2)]);
    assert!(
        book.admit(&four_h100(1)).is_ok(),
        "2 + 4 = nominal 4 + 2 borrowed"
    );
    let book = QuotaBook::new(&quotas, &[used("team-a", "H100", 3)]);
    // 1 GPU of room under nominal and at most 2 borrowed: 3, not 4.
    assert_eq!(book.admit(&four_h100(1)).unwrap_err().borrowable, 2);
}

#[test]
fn model_groups_narrow_a_job_to_the_models_with_room_and_refuse_uncounted_models() {
    let q = NamespaceQuota {
        namespace: "team-a".into(),
        cohort: None,
        groups: vec![
            GroupQuota {
                name: "h100".into(),
                models: vec!["H100".into()],
                nominal: 4,
                borrowing_limit: None,
                per_period: None,
            },
            GroupQuota {
                name: "small".into(),
                models: vec!["L4".into()],
                nominal: 8,
                borrowing_limit: None,
                per_period: None,
            },
        ],
    };
    let book = QuotaBook::new(std::slice::from_ref(&q), &[used("team-a", "H100", 4)]);
    let j = job("team-a/j").gpus(2).models(&["H100", "L4"]).build();
    assert_eq!(book.admit(&j), Ok(Some(vec!["L4".into()])));
    let a100 = job("team-a/j").gpus(1).models(&["A100"]).build();
    let over = book.admit(&a100).unwrap_err();
    assert_eq!(over.group, None);
    assert!(over.to_string().contains("has no quota for A100"), "{over}");
    // Another namespace has no quota at all: not limited.
    assert_eq!(book.admit(&job("team-z/j").gpus(64).build()), Ok(None));
}

#[test]
fn jobs_placed_earlier_in_the_pass_count_against_the_quota() {
    let clusters = [cluster("c1")
        .node("n1", "H100", 81_559, 8)
        .node("n2", "H100", 81_559, 8)
        .price("H100", "2")
        .build()];
    let jobs: Vec<JobRequest> = (0..3).map(four_h100).collect();
    let mut book = QuotaBook::new(&[quota("team-a", None, 8, None)], &[]);
    let out =
        schedule_batch_with_quotas(&jobs, &clusters, &[], &Policy::default(), &mut book).unwrap();
    let kinds: Vec<&str> = out
        .iter()
        .map(|(_, d)| match d {
            Decision::Place(_) => "place",
            Decision::NoFit(_) => "nofit",
            Decision::OverQuota(_) => "over",
        })
        .collect();
    assert_eq!(kinds, ["place", "place", "over"]);
    assert_eq!(
        book.report(),
        vec![QuotaUse {
            namespace: "team-a".into(),
            group: "gpus".into(),
            used: 8,
            nominal: 8,
            borrowed: 0,
            period: None,
        }]
    );
}
