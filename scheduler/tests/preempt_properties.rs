//! Property test of preemption (ADR 0025) against a reference model that tries every victim set.
//!
//! Random snapshots carry random running attempts (gangs of one or two nodes of one cluster, of
//! random priority and age) whose GPUs the nodes' free counts exclude. For each job the core plans
//! a preemption for, in its own order, the reference checks with the straightforward scheduler
//! (`reference::schedule_batch`) on the cluster with the GPUs of the evicted attempts added back:
//! every victim's priority is strictly below the preemptor's and it runs on the one chosen
//! cluster, no attempt is evicted twice, the preemptor fits once they go, and it fits with no
//! proper subset of them (every subset tried), nor with none. For each job the core plans nothing
//! for, no set of lower-priority attempts on any cluster (every subset tried) would make it fit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use gpufed_scheduler::reference::{self, Expanded};
use gpufed_scheduler::testing::tokens;
use gpufed_scheduler::{
    ClusterState, JobRequest, MAX_PREEMPTORS, NodeState, Policy, Reservation, Running,
    plan_preemptions,
};
use proptest::prelude::*;

use support::inputs::{MODELS, batch, reservations, snapshot};

/// Random attempts on the snapshot's nodes: each takes GPUs a node has room for (free GPUs are
/// lowered by what it takes), sometimes on a second node of the same cluster.
fn with_running(
    mut clusters: Vec<ClusterState>,
    picks: Vec<(usize, usize, usize, u32, i32, u64)>,
) -> (Vec<ClusterState>, Vec<Running>) {
    let mut running = Vec::new();
    for (i, (c, n1, n2, gpus, priority, started)) in picks.into_iter().enumerate() {
        let count = clusters.len().max(1);
        let Some(cluster) = clusters.get_mut(c % count) else {
            continue;
        };
        if cluster.nodes.is_empty() {
            continue;
        }
        let len = cluster.nodes.len();
        let mut nodes = Vec::new();
        for n in BTreeSet::from([n1 % len, n2 % len]) {
            let node = &mut cluster.nodes[n];
            let take = gpus.min(node.free_gpus);
            if take == 0 {
                continue;
            }
            node.free_gpus -= take;
            nodes.push((node.name.clone(), take));
        }
        if nodes.is_empty() {
            continue;
        }
        running.push(Running {
            job: format!("low/r{i}"),
            attempt: 1,
            priority,
            cluster: cluster.name.clone(),
            nodes,
            started,
        });
    }
    (clusters, running)
}

/// The cluster with the GPUs of `gone` added back, computed here independently of the core.
fn freed(cluster: &ClusterState, gone: &[&Running]) -> ClusterState {
    let mut back: BTreeMap<&str, u32> = BTreeMap::new();
    for r in gone.iter().filter(|r| r.cluster == cluster.name) {
        for (n, g) in &r.nodes {
            *back.entry(n).or_default() += g;
        }
    }
    let mut c = cluster.clone();
    for n in &mut c.nodes {
        n.free_gpus =
            (n.free_gpus + back.get(n.name.as_str()).copied().unwrap_or(0)).min(n.allocatable_gpus);
    }
    c
}

/// Whether the reference places `job` on `cluster` with `gone` evicted and `claimed` taken.
fn fits(
    job: &JobRequest,
    cluster: &ClusterState,
    claimed: &[Reservation],
    gone: &[&Running],
) -> bool {
    let copy = [freed(cluster, gone)];
    let out = reference::schedule_batch(
        std::slice::from_ref(job),
        &copy,
        claimed,
        &Policy::default(),
    )
    .unwrap();
    matches!(out[0].1, Expanded::Place(_))
}

/// The attempts of `a` and `b`.
fn union<'a>(a: &[&'a Running], b: &[&'a Running]) -> Vec<&'a Running> {
    a.iter().chain(b).copied().collect()
}

/// Every subset of `items` (at most 2^10 of them; the generator keeps sets small).
fn subsets<T: Copy>(items: &[T]) -> Vec<Vec<T>> {
    assert!(items.len() <= 10, "{} items", items.len());
    (0u32..(1 << items.len()))
        .map(|mask| {
            items
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, x)| *x)
                .collect()
        })
        .collect()
}

fn running_picks() -> impl Strategy<Value = Vec<(usize, usize, usize, u32, i32, u64)>> {
    prop::collection::vec(
        (
            0usize..7,
            0usize..6,
            0usize..6,
            1u32..=4,
            -2i32..=1,
            0u64..50,
        ),
        0..10,
    )
}

/// Checks the core's plans for `jobs` against the reference (see the module doc).
fn check(
    clusters: &[ClusterState],
    running: &[Running],
    jobs: &[JobRequest],
    taken: &[Reservation],
) -> Result<usize, TestCaseError> {
    let plans = plan_preemptions(jobs, clusters, taken, running, &Policy::default()).unwrap();
    let mut order: Vec<&JobRequest> = jobs.iter().collect();
    order.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.order.cmp(&b.order))
            .then(a.key.cmp(&b.key))
    });
    let mut claimed = taken.to_vec();
    let mut gone: Vec<&Running> = Vec::new();
    let mut next = plans.iter().peekable();
    for job in order.into_iter().take(MAX_PREEMPTORS) {
        let evicted: BTreeSet<(&str, u32)> =
            gone.iter().map(|r| (r.job.as_str(), r.attempt)).collect();
        match next.peek() {
            Some(plan) if plan.job == job.key => {
                let plan = next.next().unwrap();
                let cluster = clusters.iter().find(|c| c.name == plan.cluster).unwrap();
                let victims: Vec<&Running> = plan
                    .victims
                    .iter()
                    .map(|v| {
                        running
                            .iter()
                            .find(|r| r.job == v.job && r.attempt == v.attempt)
                            .unwrap()
                    })
                    .collect();
                prop_assert!(!victims.is_empty());
                for c in clusters {
                    prop_assert!(
                        !fits(job, c, &claimed, &gone),
                        "{} fits {} without evicting anyone",
                        job.key,
                        c.name
                    );
                }
                for v in &victims {
                    prop_assert!(
                        v.priority < job.priority,
                        "{} evicts {} of priority {}",
                        job.key,
                        v.job,
                        v.priority
                    );
                    prop_assert_eq!(&v.cluster, &plan.cluster);
                    prop_assert!(
                        !evicted.contains(&(v.job.as_str(), v.attempt)),
                        "{} evicted twice",
                        v.job
                    );
                }
                prop_assert!(
                    fits(job, cluster, &claimed, &union(&gone, &victims)),
                    "{} does not fit after eviction",
                    job.key
                );
                for subset in subsets(&victims) {
                    if subset.len() < victims.len() {
                        prop_assert!(
                            !fits(job, cluster, &claimed, &union(&gone, &subset)),
                            "{} fits with {} of its {} victims",
                            job.key,
                            subset.len(),
                            victims.len()
                        );
                    }
                }
                prop_assert_eq!(&plan.assignment.cluster, &plan.cluster);
                claimed.extend(plan.assignment.nodes.iter().map(|(n, r)| Reservation {
                    cluster: plan.cluster.clone(),
                    node: n.clone(),
                    gpus: r * job.gpus_per_replica,
                }));
                gone.extend(victims);
            }
            _ => {
                if clusters.iter().any(|c| fits(job, c, &claimed, &gone)) {
                    // Placed without evicting anyone: no plan is right.
                    continue;
                }
                for cluster in clusters {
                    let candidates: Vec<&Running> = running
                        .iter()
                        .filter(|r| r.cluster == cluster.name && r.priority < job.priority)
                        .filter(|r| !evicted.contains(&(r.job.as_str(), r.attempt)))
                        .collect();
                    if candidates.is_empty() {
                        continue;
                    }
                    for subset in subsets(&candidates) {
                        let all: Vec<&Running> = gone.iter().chain(&subset).copied().collect();
                        prop_assert!(
                            !fits(job, cluster, &claimed, &all),
                            "{} would fit on {} by evicting {} attempts, but nothing was planned",
                            job.key,
                            cluster.name,
                            subset.len()
                        );
                    }
                }
            }
        }
    }
    prop_assert!(next.next().is_none(), "plans out of order");
    Ok(plans.len())
}

/// A small pool kept busy: 1 to 3 ready clusters pricing every model, 1 to 3 nodes each, all
/// GPUs free before the running attempts take theirs, so most jobs fit only by evicting.
fn contended() -> impl Strategy<Value = Vec<ClusterState>> {
    prop::collection::vec(
        prop::collection::vec((0..MODELS.len(), 1u32..=8), 1..=3),
        1..=3,
    )
    .prop_map(|clusters| {
        clusters
            .into_iter()
            .enumerate()
            .map(|(i, nodes)| ClusterState {
                name: format!("c{i}"),
                region: "eu-west".into(),
                ready: true,
                has_inventory: true,
                prices: MODELS
                    .iter()
                    .map(|m| (m.to_string(), tokens("1")))
                    .collect(),
                nodes: nodes
                    .into_iter()
                    .enumerate()
                    .map(|(n, (m, gpus))| NodeState {
                        name: format!("n{n}"),
                        model: MODELS[m].into(),
                        gpu_memory_mib: 80 * 1024,
                        allocatable_gpus: gpus,
                        free_gpus: gpus,
                        ready: true,
                        ..NodeState::default()
                    })
                    .collect(),
                ..ClusterState::default()
            })
            .collect()
    })
}

/// Enough attempts to fill most of a busy pool.
fn busy_picks() -> impl Strategy<Value = Vec<(usize, usize, usize, u32, i32, u64)>> {
    prop::collection::vec(
        (
            0usize..3,
            0usize..3,
            0usize..3,
            1u32..=4,
            -2i32..=1,
            0u64..50,
        ),
        4..10,
    )
}

/// Jobs a busy pool could take: no price cap, region or memory floor.
fn busy_jobs() -> impl Strategy<Value = Vec<JobRequest>> {
    batch().prop_map(|jobs| {
        jobs.into_iter()
            .map(|j| JobRequest {
                max_price: None,
                regions: vec![],
                min_gpu_memory_mib: 0,
                ..j
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn preemption_evicts_only_lower_priorities_minimally_and_whenever_it_helps(
        snap in snapshot(),
        picks in running_picks(),
        jobs in batch(),
        taken in reservations(),
    ) {
        let (clusters, running) = with_running(snap, picks);
        check(&clusters, &running, &jobs, &taken)?;
    }

    #[test]
    fn in_a_busy_pool_preemption_is_planned_and_checked_the_same_way(
        snap in contended(),
        picks in busy_picks(),
        jobs in busy_jobs(),
    ) {
        let (clusters, running) = with_running(snap, picks);
        check(&clusters, &running, &jobs, &[])?;
    }
}

/// The busy pool is not a vacuous test: most of its cases plan preemptions, some of several
/// victims, which the reference then checks.
#[test]
fn the_busy_pool_plans_preemptions_in_most_cases() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut cases, mut planned, mut several) = (0, 0, 0);
    for _ in 0..200 {
        let (snap, picks, jobs) = (contended(), busy_picks(), busy_jobs())
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let (clusters, running) = with_running(snap, picks);
        let plans = plan_preemptions(&jobs, &clusters, &[], &running, &Policy::default()).unwrap();
        cases += 1;
        planned += usize::from(!plans.is_empty());
        several += usize::from(plans.iter().any(|p| p.victims.len() > 1));
    }
    assert!(
        planned * 3 > cases,
        "{planned} of {cases} cases plan a preemption"
    );
    assert!(
        several * 20 > cases,
        "{several} of {cases} cases evict several attempts"
    );
}
