//! Property tests of the `Auction` strategy (ADR 0024) over random snapshots, reservations and
//! batches, against the naive oracle replayed job by job: the winner is the lowest fitting ask,
//! the price is the lowest ask of any other fitting cluster at that point of the pass (the
//! winner's own ask when there is none), never above the tenant's limit, never below the
//! provider's ask, no over-commit; and a winner that raises its ask while it still wins is paid
//! the same (its ask decides whether it wins, not what it is paid).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use gpufed_scheduler::{
    ClusterState, Decision, JobRequest, Policy, Reservation, Strategy, schedule, schedule_batch,
};
use proptest::prelude::*;

use support::inputs::{batch, long_batch, reservations, snapshot, wide_snapshot};
use support::oracle::Oracle;

const AUCTION: Policy = Policy {
    strategy: Strategy::Auction,
};

/// The reference clearing rule, written from the ADR rather than from `auction.rs`: the lowest
/// ask among the other clusters' fitting offers, or the winner's own.
fn reference_price(oracle: &Oracle, job: &JobRequest, winner: &str, ask: u128) -> u128 {
    oracle
        .candidates(job)
        .into_iter()
        .filter(|c| c.cluster != winner)
        .map(|c| c.price)
        .min()
        .unwrap_or(ask)
}

fn check_auction(
    jobs: &[JobRequest],
    clusters: &[ClusterState],
    held: &[Reservation],
) -> Result<(), TestCaseError> {
    let out = schedule_batch(jobs, clusters, held, &AUCTION).unwrap();
    let mut oracle = Oracle::new(clusters, held);
    for (key, decision) in &out {
        let job = jobs.iter().find(|j| &j.key == key).unwrap();
        let expected = oracle.best(job, Strategy::CheapestFit);
        let a = match decision {
            Decision::Place(a) => a,
            Decision::NoFit(_) => {
                prop_assert_eq!(expected, None, "{} fits somewhere", key);
                continue;
            }
            Decision::OverQuota(q) => return Err(TestCaseError::fail(format!("no quotas: {q}"))),
        };
        let want = expected.expect("the oracle finds no fit");
        // The winner is the cheapest fitting offer, as under CheapestFit.
        prop_assert_eq!((&a.cluster, &a.model), (&want.cluster, &want.model));
        let c = oracle.cluster(&a.cluster).unwrap().clone();
        prop_assert_eq!(c.prices.get(&a.model), Some(&a.ask), "ask is the offer's");
        // The clearing rule.
        prop_assert_eq!(a.price, reference_price(&oracle, job, &a.cluster, a.ask));
        // Individually rational: the provider gets at least its ask, the tenant pays at most
        // its limit.
        prop_assert!(a.price >= a.ask);
        prop_assert!(job.max_price.is_none_or(|max| a.price <= max));
        // No over-commit.
        for (node, replicas) in &a.nodes {
            if let Err(over) = oracle.take(&a.cluster, node, replicas * job.gpus_per_replica) {
                return Err(TestCaseError::fail(format!("over-commit: {over}")));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn auction_batches_clear_by_the_second_price_rule_and_keep_every_invariant(
        clusters in snapshot(),
        held in reservations(),
        jobs in batch(),
    ) {
        check_auction(&jobs, &clusters, &held)?;
    }

    #[test]
    fn auction_clears_by_the_rule_on_wide_pools_and_long_batches(
        clusters in wide_snapshot(),
        held in reservations(),
        jobs in long_batch(),
    ) {
        check_auction(&jobs, &clusters, &held)?;
    }

    #[test]
    fn a_winner_that_asks_more_but_still_wins_is_paid_the_same(
        clusters in wide_snapshot(),
        held in reservations(),
        jobs in batch(),
        raise in 0u128..1000,
    ) {
        let job = &jobs[0];
        let Decision::Place(a) = schedule(job, &clusters, &held, &AUCTION).unwrap() else {
            return Ok(());
        };
        // Raise the winner's ask to somewhere strictly below the price it was paid (below the
        // runner-up, so it still wins every tie-break it won before). Every model of the job that
        // the winner offers below that goes up to it too: otherwise the winner would simply win
        // again with another model at its old ask (a cluster offering A100 and H100 at 1.10 and
        // the job taking either).
        prop_assume!(a.price > a.ask);
        let higher = a.ask + raise % (a.price - a.ask);
        let mut raised = clusters.clone();
        for c in raised.iter_mut().filter(|c| c.name == a.cluster) {
            for (model, ask) in c.prices.iter_mut() {
                if (job.models.is_empty() || job.models.contains(model)) && *ask < higher {
                    *ask = higher;
                }
            }
        }
        let Decision::Place(b) = schedule(job, &raised, &held, &AUCTION).unwrap() else {
            return Err(TestCaseError::fail("the raised winner no longer fits"));
        };
        prop_assert_eq!((&b.cluster, b.ask), (&a.cluster, higher));
        prop_assert_eq!(b.price, a.price, "the price does not depend on the winner's ask");
    }
}
