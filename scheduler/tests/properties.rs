//! Property tests of the scheduler's invariants over random snapshots, reservations and batches:
//! no over-commit, price caps, all-or-nothing gangs, only eligible clusters, determinism, one
//! reason per cluster, agreement with a naive reference scheduler, and agreement of the indexed
//! search and the compact no-fit reasons with the linear scheduler they replaced
//! (`gpufed_scheduler::reference`), down to the explanation text.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use gpufed_scheduler::reference::Expanded;
use gpufed_scheduler::{
    ClusterState, Decision, JobRequest, NoFit, Policy, Reservation, Strategy, explain, reference,
    schedule, schedule_batch,
};
use proptest::prelude::*;

use support::inputs::{
    batch, long_batch, repeated_batch, reservations, shuffle, shuffled, snapshot, wide_snapshot,
};
use support::oracle::Oracle;

fn strategy() -> impl proptest::strategy::Strategy<Value = Strategy> {
    prop_oneof![
        Just(Strategy::CheapestFit),
        Just(Strategy::BinPack),
        Just(Strategy::Spread),
        Just(Strategy::Auction)
    ]
}

/// Replays a batch's decisions against the oracle, checking every invariant on the way.
fn check_batch(
    jobs: &[JobRequest],
    clusters: &[ClusterState],
    held: &[Reservation],
    strategy: Strategy,
) -> Result<(), TestCaseError> {
    let policy = Policy { strategy };
    let out = schedule_batch(jobs, clusters, held, &policy).unwrap();
    prop_assert_eq!(out.len(), jobs.len());
    let mut oracle = Oracle::new(clusters, held);
    let mut names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    for (key, decision) in &out {
        let job = jobs.iter().find(|j| &j.key == key).unwrap();
        let expected = oracle.best(job, strategy);
        match decision {
            Decision::NoFit(reasons) => {
                prop_assert_eq!(expected, None, "{} fits somewhere", key);
                let listed: Vec<&str> = reasons.iter().map(|(c, _)| c).collect();
                prop_assert_eq!(&listed, &names, "one reason per cluster, by name");
                for (i, (name, reason)) in reasons.iter().enumerate() {
                    prop_assert_eq!(reasons.get(i), Some((name, reason.clone())));
                    let c = oracle.cluster(name).unwrap();
                    let kind = reason.kind().as_str();
                    match Oracle::cluster_gate(c, job) {
                        Some(gate) => prop_assert_eq!(kind, gate, "{}", name),
                        None => prop_assert!(
                            [
                                "NoModel",
                                "NoPrice",
                                "Memory",
                                "Price",
                                "Duration",
                                "NodeTooSmall",
                                "Capacity",
                                "NodeSize",
                                "Fragmented"
                            ]
                            .contains(&kind),
                            "{}: {}",
                            name,
                            kind
                        ),
                    }
                }
            }
            Decision::Place(a) => {
                let want = expected.expect("the oracle finds no fit");
                prop_assert_eq!((&a.cluster, &a.model), (&want.cluster, &want.model));
                prop_assert_eq!(a.ask, want.price);
                // What the job pays: the ask, except under Auction (auction_properties.rs).
                if strategy != Strategy::Auction {
                    prop_assert_eq!(a.price, a.ask);
                }
                prop_assert_eq!(a.fitting_clusters, oracle.fitting_clusters(job));
                let need = u64::from(job.replicas) * u64::from(job.gpus_per_replica);
                prop_assert_eq!(a.free_after, want.free - need);

                let c = oracle.cluster(&a.cluster).unwrap().clone();
                prop_assert!(
                    c.ready && !c.cordoned && c.has_inventory && c.bond.allows_placement()
                );
                prop_assert!(job.regions.is_empty() || job.regions.contains(&c.region));
                prop_assert!(!job.exclude.contains(&c.name) && !job.failed_on.contains(&c.name));
                prop_assert!(job.models.contains(&a.model));
                prop_assert_eq!(c.prices.get(&a.model), Some(&a.ask));
                prop_assert!(a.ask <= a.price);
                prop_assert!(job.max_price.is_none_or(|max| a.price <= max));

                prop_assert_eq!(a.replicas(), job.replicas, "all or nothing");
                let mut seen: Vec<&str> = Vec::new();
                for (node, replicas) in &a.nodes {
                    prop_assert!(*replicas > 0);
                    prop_assert!(!seen.contains(&node.as_str()), "node listed twice");
                    seen.push(node);
                    let n = c.nodes.iter().find(|n| &n.name == node).unwrap();
                    prop_assert_eq!(&n.model, &a.model);
                    prop_assert!(n.gpu_memory_mib >= job.memory_threshold_mib());
                    let gpus = replicas * job.gpus_per_replica;
                    if let Err(over) = oracle.take(&a.cluster, node, gpus) {
                        return Err(TestCaseError::fail(format!("over-commit: {over}")));
                    }
                }
            }
            Decision::OverQuota(q) => {
                return Err(TestCaseError::fail(format!("no quotas given: {q}")));
            }
        }
    }
    Ok(())
}

/// Decides a whole batch with the indexed scheduler and with the linear reference, and compares
/// them ([`check_against_reference`]).
fn check_batch_against_reference(
    jobs: &[JobRequest],
    clusters: &[ClusterState],
    held: &[Reservation],
    strategy: Strategy,
) -> Result<(), TestCaseError> {
    let policy = Policy { strategy };
    let indexed = schedule_batch(jobs, clusters, held, &policy).unwrap();
    let linear = reference::schedule_batch(jobs, clusters, held, &policy).unwrap();
    check_against_reference(&indexed, &linear)
}

/// Compares a batch's decisions with the reference's, reasons and explanations included, and
/// checks that the no-fit signatures follow the (cluster, kind) pairs and nothing else.
fn check_against_reference(
    indexed: &[(String, Decision)],
    linear: &[(String, Expanded)],
) -> Result<(), TestCaseError> {
    let expanded: Vec<(String, Expanded)> = indexed
        .iter()
        .map(|(key, d)| (key.clone(), Expanded::from(d)))
        .collect();
    prop_assert_eq!(&expanded, linear);
    let mut no_fits: Vec<&NoFit> = Vec::new();
    for ((_, decision), (_, spelled)) in indexed.iter().zip(linear) {
        if let (Decision::NoFit(no_fit), Expanded::NoFit(list)) = (decision, spelled) {
            prop_assert_eq!(
                explain(no_fit),
                explain(list),
                "the same text from either form"
            );
            let kinds: Vec<_> = no_fit.kinds().collect();
            let from_reasons: Vec<_> = list.iter().map(|(c, r)| (c.as_str(), r.kind())).collect();
            prop_assert_eq!(kinds, from_reasons);
            prop_assert_eq!(
                no_fit.signature(),
                reference::signature(no_fit),
                "{:?}",
                no_fit
            );
            no_fits.push(no_fit);
        }
    }
    for a in &no_fits {
        for b in &no_fits {
            let same_kinds = a.kinds().eq(b.kinds());
            prop_assert_eq!(
                same_kinds,
                a.signature() == b.signature(),
                "{:?} / {:?}",
                a,
                b
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn batches_agree_with_the_reference_and_keep_every_invariant(
        clusters in snapshot(),
        held in reservations(),
        jobs in batch(),
        strategy in strategy(),
    ) {
        check_batch(&jobs, &clusters, &held, strategy)?;
    }

    #[test]
    fn the_indexed_search_decides_exactly_what_the_linear_reference_decides(
        clusters in snapshot(),
        held in reservations(),
        jobs in batch(),
        strategy in strategy(),
    ) {
        // Whole batches, so every decision also depends on the GPUs the earlier ones took: the
        // index's rows must follow each placement exactly as the clusters' tiers do.
        check_batch_against_reference(&jobs, &clusters, &held, strategy)?;
    }

    #[test]
    fn the_indexed_search_matches_the_reference_on_wide_pools_and_long_batches(
        clusters in wide_snapshot(),
        held in reservations(),
        jobs in long_batch(),
        strategy in strategy(),
    ) {
        check_batch_against_reference(&jobs, &clusters, &held, strategy)?;
    }

    #[test]
    fn jobs_with_the_same_terms_get_the_reasons_each_would_get_alone(
        clusters in snapshot(),
        held in reservations(),
        jobs in repeated_batch(),
        strategy in strategy(),
    ) {
        // Copies of a job decided at the same free GPU counts share one list of reasons; a copy
        // decided after a placement changed the counts must not get the earlier copies' list.
        check_batch_against_reference(&jobs, &clusters, &held, strategy)?;
        check_batch(&jobs, &clusters, &held, strategy)?;
        check_one_at_a_time(&jobs, &clusters, &held, strategy)?;
    }

    #[test]
    fn decisions_do_not_depend_on_input_order_or_repetition(
        clusters in snapshot(),
        held in reservations(),
        jobs in batch(),
        strategy in strategy(),
        seed in any::<u64>(),
    ) {
        let policy = Policy { strategy };
        let first = schedule_batch(&jobs, &clusters, &held, &policy).unwrap();
        let again = schedule_batch(&jobs, &clusters, &held, &policy).unwrap();
        prop_assert_eq!(&first, &again);
        let mut seed2 = seed;
        let mut held2 = held.clone();
        shuffle(&mut held2, &mut seed2);
        let mut jobs2 = jobs.clone();
        shuffle(&mut jobs2, &mut seed2);
        let other = schedule_batch(&jobs2, &shuffled(&clusters, seed), &held2, &policy).unwrap();
        prop_assert_eq!(&first, &other);
        for ((_, a), (_, b)) in first.iter().zip(&other) {
            if let (Decision::NoFit(a), Decision::NoFit(b)) = (a, b) {
                prop_assert_eq!(a.signature(), b.signature(), "the same reasons, another pass");
            }
        }
    }

    #[test]
    fn a_batch_equals_one_job_at_a_time_with_earlier_placements_reserved(
        clusters in snapshot(),
        held in reservations(),
        jobs in batch(),
        strategy in strategy(),
    ) {
        check_one_at_a_time(&jobs, &clusters, &held, strategy)?;
    }
}

/// Each decision of a batch is the one the job gets alone with the earlier placements reserved.
fn check_one_at_a_time(
    jobs: &[JobRequest],
    clusters: &[ClusterState],
    held: &[Reservation],
    strategy: Strategy,
) -> Result<(), TestCaseError> {
    let policy = Policy { strategy };
    let out = schedule_batch(jobs, clusters, held, &policy).unwrap();
    let mut reserved = held.to_vec();
    for (key, decision) in out {
        let job = jobs.iter().find(|j| j.key == key).unwrap();
        let alone = schedule(job, clusters, &reserved, &policy).unwrap();
        prop_assert_eq!(&alone, &decision);
        if let Decision::Place(a) = decision {
            for (node, replicas) in a.nodes {
                reserved.push(Reservation {
                    cluster: a.cluster.clone(),
                    node,
                    gpus: replicas * job.gpus_per_replica,
                });
            }
        }
    }
    Ok(())
}
