#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::quota::GroupQuota;

fn quota(ns: &str, cohort: Option<&str>, nominal: u64) -> NamespaceQuota {
    NamespaceQuota {
        namespace: ns.into(),
        cohort: cohort.map(Into::into),
        groups: vec![GroupQuota {
            name: "h100".into(),
            nominal,
            ..GroupQuota::default()
        }],
    }
}

fn run(job: &str, attempt: u32, priority: i32, gpus: u32, started: u64) -> Running {
    Running {
        job: job.into(),
        attempt,
        priority,
        cluster: "a".into(),
        nodes: vec![("n1".into(), gpus)],
        started,
    }
}

fn claim(job: &str, priority: i32, gpus: u64, shortfall: u64) -> Claim<'_> {
    Claim {
        job,
        priority,
        group: "h100",
        gpus,
        shortfall,
    }
}

fn jobs(v: &[Reclaimed]) -> Vec<&str> {
    v.iter().map(|r| r.job.as_str()).collect()
}

/// team-a and team-b of cohort `research`, nominal 2 each; team-b holds all 4 GPUs.
fn borrowed() -> (Vec<NamespaceQuota>, Vec<Running>) {
    (
        vec![
            quota("team-a", Some("research"), 2),
            quota("team-b", Some("research"), 2),
        ],
        vec![
            run("team-b/old", 1, 0, 1, 10),
            run("team-b/mid", 1, 0, 1, 20),
            run("team-b/new", 1, 0, 1, 30),
            run("team-b/newest", 1, 0, 1, 40),
        ],
    )
}

#[test]
fn never_policy_reclaims_nothing() {
    let (q, r) = borrowed();
    assert_eq!(
        reclaim_victims(&claim("team-a/j", 0, 2, 2), &q, &r, ReclaimPolicy::Never),
        None
    );
}

#[test]
fn any_takes_newest_borrowed_attempts_at_equal_priority() {
    let (q, r) = borrowed();
    let v = reclaim_victims(&claim("team-a/j", 0, 2, 2), &q, &r, ReclaimPolicy::Any).unwrap();
    assert_eq!(jobs(&v), ["team-b/newest", "team-b/new"]);
    assert_eq!(
        v[0].to_string(),
        "reclaimed by team-a's quota: team-b borrowed 2 GPUs beyond its nominal 2 in cohort research"
    );
}

#[test]
fn lower_priority_policy_spares_equal_priority() {
    let (q, r) = borrowed();
    assert_eq!(
        reclaim_victims(
            &claim("team-a/j", 0, 2, 2),
            &q,
            &r,
            ReclaimPolicy::LowerPriority
        ),
        None
    );
    let v = reclaim_victims(
        &claim("team-a/j", 1, 2, 2),
        &q,
        &r,
        ReclaimPolicy::LowerPriority,
    )
    .unwrap();
    assert_eq!(jobs(&v), ["team-b/newest", "team-b/new"]);
}

#[test]
fn never_drives_the_borrower_below_nominal() {
    let (q, r) = borrowed();
    // team-b borrows only 2: asking 3 back would take it below its nominal 2.
    assert_eq!(
        reclaim_victims(&claim("team-a/j", 0, 2, 3), &q, &r, ReclaimPolicy::Any),
        None
    );
    // A 2-GPU gang of a borrower holding 3 of nominal 2 cannot go: it would leave 1 < 2.
    let r = vec![
        run("team-b/gang", 1, 0, 2, 40),
        run("team-b/single", 1, 0, 1, 10),
    ];
    let v = reclaim_victims(&claim("team-a/j", 0, 1, 1), &q, &r, ReclaimPolicy::Any).unwrap();
    assert_eq!(jobs(&v), ["team-b/single"]);
}

#[test]
fn whole_gang_goes_together() {
    let q = vec![
        quota("team-a", Some("research"), 4),
        quota("team-b", Some("research"), 0),
    ];
    let mut gang = run("team-b/gang", 2, 0, 2, 40);
    gang.nodes.push(("n2".into(), 2));
    let v = reclaim_victims(&claim("team-a/j", 0, 1, 1), &q, &[gang], ReclaimPolicy::Any).unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].gpus, 4);
    assert_eq!(v[0].attempt, 2);
}

#[test]
fn never_a_non_borrower_or_another_cohort() {
    let q = vec![
        quota("team-a", Some("research"), 4),
        quota("team-b", Some("research"), 4),
        quota("team-c", Some("other"), 0),
        quota("team-d", None, 0),
    ];
    let r = vec![
        run("team-b/within", 1, 0, 4, 40),
        run("team-c/borrows", 1, 0, 2, 40),
        run("team-d/alone", 1, 0, 2, 40),
    ];
    assert_eq!(
        reclaim_victims(&claim("team-a/j", 0, 1, 1), &q, &r, ReclaimPolicy::Any),
        None
    );
}

#[test]
fn claimant_beyond_its_nominal_reclaims_nothing() {
    let (q, r) = borrowed();
    assert_eq!(
        reclaim_victims(&claim("team-a/j", 0, 3, 3), &q, &r, ReclaimPolicy::Any),
        None
    );
    let mut r = r;
    r.push(run("team-a/running", 1, 0, 2, 5));
    assert_eq!(
        reclaim_victims(&claim("team-a/j", 0, 1, 1), &q, &r, ReclaimPolicy::Any),
        None
    );
}

#[test]
fn lowest_priority_first_then_newest() {
    let (q, _) = borrowed();
    let r = vec![
        run("team-b/high-new", 1, 5, 1, 90),
        run("team-b/low-old", 1, -1, 1, 10),
        run("team-b/mid-new", 1, 0, 1, 80),
        run("team-b/mid-old", 1, 0, 1, 20),
        run("team-b/high-old", 1, 5, 1, 5),
    ];
    let v = reclaim_victims(&claim("team-a/j", 0, 2, 2), &q, &r, ReclaimPolicy::Any).unwrap();
    assert_eq!(jobs(&v), ["team-b/low-old", "team-b/mid-new"]);
}

/// Exhaustive small cases against the invariants: victims only of borrowers of the cohort,
/// no borrower ends below nominal, the claimant stays within nominal, enough is freed.
#[test]
fn invariants_over_small_cases() {
    let q = vec![
        quota("team-a", Some("research"), 3),
        quota("team-b", Some("research"), 2),
        quota("team-c", Some("research"), 1),
    ];
    let mut checked = 0;
    for seed in 0u64..4096 {
        let mut s = seed;
        let mut next = |m: u64| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) % m
        };
        let n = 1 + next(5) as usize;
        let r: Vec<Running> = (0..n)
            .map(|i| {
                let ns = ["team-a", "team-b", "team-c"][next(3) as usize];
                run(
                    &format!("{ns}/j{i}"),
                    1,
                    next(3) as i32,
                    1 + next(3) as u32,
                    next(100),
                )
            })
            .collect();
        let gpus = 1 + next(3);
        let c = claim("team-a/new", next(3) as i32, gpus, gpus);
        for policy in [ReclaimPolicy::LowerPriority, ReclaimPolicy::Any] {
            let Some(v) = reclaim_victims(&c, &q, &r, policy) else {
                continue;
            };
            checked += 1;
            let used = |ns: &str| -> u64 {
                r.iter()
                    .filter(|x| namespace_of(&x.job) == ns)
                    .map(Running::gpus)
                    .sum()
            };
            assert!(used("team-a") + gpus <= 3, "claimant ends within nominal");
            assert!(v.iter().map(|x| x.gpus).sum::<u64>() >= c.shortfall);
            for ns in ["team-b", "team-c"] {
                let nominal = if ns == "team-b" { 2 } else { 1 };
                let gone: u64 = v.iter().filter(|x| x.borrower == ns).map(|x| x.gpus).sum();
                if gone > 0 {
                    assert!(used(ns) > nominal, "victim {ns} was borrowing");
                }
                assert!(
                    used(ns) - gone >= nominal.min(used(ns)),
                    "{ns} below nominal"
                );
            }
            for x in &v {
                assert_ne!(x.borrower, "team-a");
                if policy == ReclaimPolicy::LowerPriority {
                    assert!(x.priority < c.priority);
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} cases reclaimed");
}
