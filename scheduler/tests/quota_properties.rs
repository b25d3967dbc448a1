//! Property tests of the quota filter (ADR 0019) over random snapshots, batches of several
//! namespaces, quotas and cohorts: the pass agrees with the straightforward reference
//! (`reference::schedule_batch_with_quotas`, which recounts every namespace and cohort before each
//! job), no namespace holds more than its nominal quota except by borrowing, borrowing happens only
//! from idle quota of its cohort, the clusters are never over-committed, and a pass without quotas
//! is the plain scheduler. With GPU-hours and spend per period: the pass agrees with the
//! reference, no namespace's GPU-hours exceed its period quota except by borrowing idle GPU-hours
//! of its cohort, and spend never exceeds its quota (it is never borrowed).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;

use gpufed_scheduler::reference::{self, Expanded};
use gpufed_scheduler::{
    Decision, GroupQuota, JobRequest, NamespaceQuota, Period, PeriodQuota, PeriodUsage, Policy,
    QuotaBook, Usage, schedule_batch, schedule_batch_with_quotas,
};
use proptest::prelude::*;

use support::inputs::{MODELS, long_batch, reservations, wide_snapshot};
use support::oracle::Oracle;

const NAMESPACES: [&str; 4] = ["team-a", "team-b", "team-c", "team-d"];

/// Quotas for some of the namespaces: one or two groups (an `H100` group and a catch-all, or the
/// catch-all alone), small nominal quotas so that jobs hit them, some namespaces in one cohort.
fn quotas() -> impl Strategy<Value = Vec<NamespaceQuota>> {
    let one = (
        prop::bool::weighted(0.85),
        prop::option::weighted(0.6, Just("research")),
        prop::bool::ANY,
        0u64..=12,
        0u64..=12,
        prop::option::weighted(0.3, 0u64..=6),
    );
    prop::collection::vec(one, NAMESPACES.len()).prop_map(|each| {
        each.into_iter()
            .zip(NAMESPACES)
            .filter(|((has, ..), _)| *has)
            .map(|((_, cohort, split, big, rest, limit), ns)| {
                let mut groups = vec![];
                if split {
                    groups.push(GroupQuota {
                        name: "h100".into(),
                        models: vec!["H100".into()],
                        nominal: big,
                        borrowing_limit: limit,
                        per_period: None,
                    });
                }
                groups.push(GroupQuota {
                    name: "other".into(),
                    models: vec![],
                    nominal: rest,
                    borrowing_limit: limit,
                    per_period: None,
                });
                NamespaceQuota {
                    namespace: ns.into(),
                    cohort: cohort.map(str::to_string),
                    groups,
                }
            })
            .collect()
    })
}

/// GPUs held before the pass, within each namespace's nominal quota or not (a lender that took
/// its quota back while others still hold what they borrowed).
fn usage() -> impl Strategy<Value = Vec<Usage>> {
    prop::collection::vec((0..NAMESPACES.len(), 0..MODELS.len(), 0u64..=8), 0..=6).prop_map(|v| {
        v.into_iter()
            .map(|(n, m, gpus)| Usage {
                namespace: NAMESPACES[n].into(),
                model: MODELS[m].into(),
                gpus,
            })
            .collect()
    })
}

/// Period limits for the quotas' groups: a period each, GPU-hours of a few hours, and spend of
/// some tokens, each sometimes absent.
fn with_periods(quotas: Vec<NamespaceQuota>) -> impl Strategy<Value = Vec<NamespaceQuota>> {
    let n: usize = quotas.iter().map(|q| q.groups.len()).sum();
    let one = (
        prop::bool::weighted(0.8),
        0usize..3,
        prop::option::weighted(0.8, 0u64..=12 * 3600),
        prop::option::weighted(0.4, 0u128..=100),
    );
    prop::collection::vec(one, n).prop_map(move |limits| {
        let mut quotas = quotas.clone();
        let mut it = limits.into_iter();
        for g in quotas.iter_mut().flat_map(|q| q.groups.iter_mut()) {
            let Some((has, p, gpu_seconds, spend)) = it.next() else {
                break;
            };
            g.per_period = has.then_some(PeriodQuota {
                period: Period::ALL[p],
                gpu_seconds,
                spend,
            });
        }
        quotas
    })
}

/// GPU-seconds and tokens used or committed before the pass.
fn period_usage() -> impl Strategy<Value = Vec<PeriodUsage>> {
    let one = (
        0..NAMESPACES.len(),
        0..MODELS.len(),
        (0u64..=6 * 3600, 0u64..=6 * 3600, 0u64..=6 * 3600),
        (0u128..=60, 0u128..=60, 0u128..=60),
    );
    prop::collection::vec(one, 0..=6).prop_map(|v| {
        v.into_iter()
            .map(|(n, m, (d, w, mo), (sd, sw, smo))| PeriodUsage {
                namespace: NAMESPACES[n].into(),
                model: MODELS[m].into(),
                gpu_seconds: [d, w, mo],
                spend: [sd, sw, smo],
            })
            .collect()
    })
}

/// The batch spread over the namespaces.
fn spread(mut jobs: Vec<JobRequest>, seed: usize) -> Vec<JobRequest> {
    for (i, j) in jobs.iter_mut().enumerate() {
        let ns = NAMESPACES[(i + seed) % NAMESPACES.len()];
        j.key = format!("{ns}/j{i}");
    }
    jobs
}

/// The group of `q` counting `model`.
fn group<'q>(q: &'q NamespaceQuota, model: &str) -> Option<&'q GroupQuota> {
    q.groups
        .iter()
        .find(|g| g.models.iter().any(|m| m == model))
        .or_else(|| q.groups.iter().find(|g| g.models.is_empty()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_quota_pass_agrees_with_the_reference_and_keeps_every_quota(
        clusters in wide_snapshot(),
        held in reservations(),
        jobs in long_batch(),
        seed in 0usize..4,
        quotas in quotas(),
        usage in usage(),
    ) {
        let jobs = spread(jobs, seed);
        let policy = Policy::default();
        let mut book = QuotaBook::new(&quotas, &usage);
        let out = schedule_batch_with_quotas(&jobs, &clusters, &held, &policy, &mut book).unwrap();
        let expected =
            reference::schedule_batch_with_quotas(&jobs, &clusters, &held, &policy, &quotas, &usage)
                .unwrap();
        let got: Vec<(String, Expanded)> =
            out.iter().map(|(k, d)| (k.clone(), Expanded::from(d))).collect();
        prop_assert_eq!(&got, &expected);

        // Replay: held per (namespace, group) and per (cohort, group), from the usage and the
        // placements in decision order.
        let quota_of = |ns: &str| quotas.iter().find(|q| q.namespace == ns);
        let mut ns_held: BTreeMap<(String, String), u64> = BTreeMap::new();
        let mut cohort_held: BTreeMap<(String, String), u64> = BTreeMap::new();
        let charge = |ns: &str, model: &str, gpus: u64,
                          ns_held: &mut BTreeMap<(String, String), u64>,
                          cohort_held: &mut BTreeMap<(String, String), u64>| {
            if let Some(q) = quota_of(ns)
                && let Some(g) = group(q, model)
            {
                *ns_held.entry((ns.into(), g.name.clone())).or_default() += gpus;
                if let Some(c) = &q.cohort {
                    *cohort_held.entry((c.clone(), g.name.clone())).or_default() += gpus;
                }
            }
        };
        for u in &usage {
            charge(&u.namespace, &u.model, u.gpus, &mut ns_held, &mut cohort_held);
        }
        let cohort_nominal = |c: &str, g: &str| -> u64 {
            quotas
                .iter()
                .filter(|q| q.cohort.as_deref() == Some(c))
                .flat_map(|q| q.groups.iter().filter(|x| x.name == g))
                .map(|x| x.nominal)
                .sum()
        };
        let mut oracle = Oracle::new(&clusters, &held);
        for (key, decision) in &out {
            let job = jobs.iter().find(|j| &j.key == key).unwrap();
            let ns = key.split_once('/').unwrap().0;
            let Decision::Place(a) = decision else { continue };
            // Totals never exceed the pool: the oracle refuses an over-commit.
            for (node, replicas) in &a.nodes {
                oracle
                    .take(&a.cluster, node, replicas * job.gpus_per_replica)
                    .map_err(TestCaseError::fail)?;
            }
            let need = job.total_gpus();
            if let Some(q) = quota_of(ns) {
                let g = group(q, &a.model);
                prop_assert!(g.is_some(), "{} placed on {} that its quota does not count", key, a.model);
                let g = g.unwrap();
                let before = ns_held.get(&(ns.to_string(), g.name.clone())).copied().unwrap_or(0);
                if before + need > g.nominal {
                    // Beyond nominal: only by borrowing idle quota of the cohort.
                    let c = q.cohort.as_deref();
                    prop_assert!(c.is_some(), "{} exceeds its nominal quota without a cohort", key);
                    let c = c.unwrap();
                    let in_cohort =
                        cohort_held.get(&(c.to_string(), g.name.clone())).copied().unwrap_or(0);
                    prop_assert!(
                        in_cohort + need <= cohort_nominal(c, &g.name),
                        "{} borrowed more than its cohort had idle", key
                    );
                    if let Some(limit) = g.borrowing_limit {
                        prop_assert!(before + need - g.nominal <= limit, "{} over its borrowing limit", key);
                    }
                }
            }
            charge(ns, &a.model, need, &mut ns_held, &mut cohort_held);
        }
        // The book's report is what the replay counted.
        for r in book.report() {
            let counted = ns_held.get(&(r.namespace.clone(), r.group.clone())).copied().unwrap_or(0);
            prop_assert_eq!(r.used, counted, "{}/{}", r.namespace, r.group);
        }
    }

    #[test]
    fn without_quotas_the_pass_is_the_plain_scheduler(
        clusters in wide_snapshot(),
        held in reservations(),
        jobs in long_batch(),
        usage in usage(),
    ) {
        let jobs = spread(jobs, 0);
        let policy = Policy::default();
        let mut book = QuotaBook::new(&[], &usage);
        let with = schedule_batch_with_quotas(&jobs, &clusters, &held, &policy, &mut book).unwrap();
        prop_assert_eq!(with, schedule_batch(&jobs, &clusters, &held, &policy).unwrap());
    }
}

/// Gives the jobs various maxDurations (10 minutes to 10 hours) and escrow locks (some unbounded).
fn durations(mut jobs: Vec<JobRequest>, seed: usize) -> Vec<JobRequest> {
    for (i, j) in jobs.iter_mut().enumerate() {
        j.max_duration_secs = [600, 3600, 7200, 36_000][(i * 7 + seed) % 4];
        j.max_spend = [None, Some(5), Some(20), Some(40)][(i * 3 + seed) % 4];
    }
    jobs
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn period_quotas_agree_with_the_reference_and_are_exceeded_only_by_borrowing_idle_hours(
        clusters in wide_snapshot(),
        held in reservations(),
        jobs in long_batch(),
        seed in 0usize..4,
        quotas in quotas().prop_flat_map(with_periods),
        usage in usage(),
        spent in period_usage(),
        // Any time in 2026 (so the worst case is often cut at a period's end).
        now in 1_767_225_600u64..1_798_761_600,
    ) {
        let jobs = durations(spread(jobs, seed), seed);
        let policy = Policy::default();
        let mut book = QuotaBook::new(&quotas, &usage).with_periods(now, &spent);
        let out = schedule_batch_with_quotas(&jobs, &clusters, &held, &policy, &mut book).unwrap();
        let expected = reference::schedule_batch_with_period_quotas(
            &jobs, &clusters, &held, &policy, &quotas, &usage, (now, &spent),
        )
        .unwrap();
        let got: Vec<(String, Expanded)> =
            out.iter().map(|(k, d)| (k.clone(), Expanded::from(d))).collect();
        prop_assert_eq!(&got, &expected);

        // Replay GPU-seconds and spend per (namespace, group) in the group's period.
        let quota_of = |ns: &str| quotas.iter().find(|q| q.namespace == ns);
        let mut used: BTreeMap<(String, String), (u64, u128)> = BTreeMap::new();
        for u in &spent {
            if let Some(q) = quota_of(&u.namespace)
                && let Some(g) = group(q, &u.model)
                && let Some(pq) = g.per_period
            {
                let e = used.entry((u.namespace.clone(), g.name.clone())).or_default();
                e.0 += u.gpu_seconds[pq.period.index()];
                e.1 += u.spend[pq.period.index()];
            }
        }
        // GPU-seconds quotas of a cohort's members per (cohort, group, period).
        let hours_members = |c: &str, g: &str, p: Period| -> Vec<(String, u64)> {
            quotas
                .iter()
                .filter(|q| q.cohort.as_deref() == Some(c))
                .flat_map(|q| q.groups.iter().filter(|x| x.name == g).map(move |x| (q, x)))
                .filter_map(|(q, x)| {
                    let pq = x.per_period.filter(|pq| pq.period == p)?;
                    Some((q.namespace.clone(), pq.gpu_seconds?))
                })
                .collect()
        };
        for (key, decision) in &out {
            let Decision::Place(a) = decision else { continue };
            let job = jobs.iter().find(|j| &j.key == key).unwrap();
            let ns = key.split_once('/').unwrap().0;
            let Some(q) = quota_of(ns) else { continue };
            let g = group(q, &a.model).unwrap();
            let Some(pq) = g.per_period else { continue };
            let (start, end) = pq.period.window(now);
            prop_assert!(start <= now && now < end);
            let need = job.total_gpus() * job.max_duration_secs.min(end - now);
            let (before, money) = used.get(&(ns.to_string(), g.name.clone())).copied().unwrap_or((0, 0));
            if let Some(limit) = pq.gpu_seconds
                && before + need > limit
            {
                // Beyond its GPU-hours: only from idle GPU-hours of its cohort.
                let c = q.cohort.as_deref();
                prop_assert!(c.is_some(), "{} exceeds its GPU-hours without a cohort", key);
                let members = hours_members(c.unwrap(), &g.name, pq.period);
                let sum: u64 = members.iter().map(|(_, s)| s).sum();
                let in_cohort: u64 = members
                    .iter()
                    .map(|(m, _)| used.get(&(m.clone(), g.name.clone())).map_or(0, |u| u.0))
                    .sum();
                prop_assert!(in_cohort + need <= sum, "{} borrowed more GPU-hours than idle", key);
            }
            if let Some(limit) = pq.spend {
                let lock = job.max_spend;
                prop_assert!(lock.is_some(), "{} placed without a bound on its spend", key);
                prop_assert!(money + lock.unwrap() <= limit, "{} spends beyond its quota", key);
            }
            let e = used.entry((ns.to_string(), g.name.clone())).or_default();
            e.0 += need;
            e.1 += job.max_spend.unwrap_or(0);
        }
        for r in book.report() {
            if let Some(p) = r.period {
                let counted = used.get(&(r.namespace.clone(), r.group.clone())).copied().unwrap_or((0, 0));
                prop_assert_eq!((p.gpu_seconds, p.spend), counted, "{}/{}", r.namespace, r.group);
            }
        }
    }
}
