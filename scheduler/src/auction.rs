//! Price discovery for pools with strategy `Auction` (ADR 0024): within one scheduling pass the
//! eligible offers for a job are its bids, a sealed-bid reverse auction per job.
//!
//! The winner is chosen exactly as `CheapestFit` chooses (lowest ask, then more free GPUs, then
//! name), so the auction never changes *where* a job goes, only what it pays. The job pays the
//! second price: the lowest ask of any other cluster that fits the job at that moment of the pass
//! (same filters, same GPUs already taken by the jobs before it). With no other fitting cluster it
//! pays the winner's own ask. Every fitting cluster asks at most the job's `max_price` (the price
//! filter drops the others), so the price is never above the tenant's limit and never below the
//! winner's ask.
//!
//! Why second price: a provider's ask decides only *whether* it wins, never what it is paid while
//! it wins, so asking its true cost is its best strategy for each job (Vickrey). A pay-as-bid rule
//! would reward providers for guessing the next ask and shading up to it. Why per job rather than
//! one uniform price per model per pass: jobs of one pass differ in size, region, memory and
//! limits, so they do not face the same set of bids; a uniform price would charge some jobs above
//! the asks of every cluster they could use, or need the limit of the marginal job to set it.

use crate::filter::{Banned, JobView};
use crate::scheduler::{Scan, Scheduler};

/// The price per GPU-hour a job pays to a winner that asked `ask`, when the lowest ask of the other
/// fitting clusters is `runner_up` and the job pays at most `limit`: the runner-up's ask, never
/// below `ask` and never above `limit`, and `ask` itself without a runner-up. `ask` is within
/// `limit` (the price filter saw to it), so the result is too.
pub fn clearing_price(ask: u128, runner_up: Option<u128>, limit: Option<u128>) -> u128 {
    let second = runner_up.map_or(ask, |r| r.max(ask));
    match limit {
        Some(max) => second.min(max).max(ask),
        None => second,
    }
}

/// The lowest ask of a cluster other than `winner` (index position) that fits `view` now, by the
/// same search that found the winner.
pub(crate) fn runner_up(
    s: &Scheduler<'_>,
    view: &JobView<'_>,
    banned: &[Banned],
    winner: usize,
    scan: Scan,
) -> Option<u128> {
    let mut others = JobView::new(view.job, &s.index);
    others.excluded.push(winner);
    let (best, _) = scan(s, &others, banned);
    best.map(|b| b.fit.price)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{Policy, Strategy};
    use crate::scheduler::{schedule, schedule_batch};
    use crate::testing::{cluster, job, tokens};
    use crate::{Assignment, ClusterState, Decision};

    const GIB: u64 = 1024;

    fn h100(name: &str, price: &str, gpus: u32) -> ClusterState {
        cluster(name)
            .price("H100", price)
            .node("n1", "H100", 80 * GIB, gpus)
            .build()
    }

    fn auction() -> Policy {
        Policy {
            strategy: Strategy::Auction,
        }
    }

    fn placed(d: &Decision) -> &Assignment {
        d.assignment().unwrap()
    }

    #[test]
    fn the_lowest_ask_wins_and_is_paid_the_next_lowest() {
        let clusters = [
            h100("alpha", "2.40", 8),
            h100("beta", "2.00", 8),
            h100("gamma", "3.10", 8),
        ];
        let j = job("a/j").models(&["H100"]).gpus(4).build();
        let d = schedule(&j, &clusters, &[], &auction()).unwrap();
        let a = placed(&d);
        assert_eq!(a.cluster, "beta");
        assert_eq!((a.ask, a.price), (tokens("2.00"), tokens("2.40")));
        // The same pool under CheapestFit pays the ask.
        let cheapest = Policy::default();
        let d = schedule(&j, &clusters, &[], &cheapest).unwrap();
        assert_eq!(
            (placed(&d).ask, placed(&d).price),
            (tokens("2.00"), tokens("2.00"))
        );
    }

    #[test]
    fn clusters_above_the_limit_or_too_small_do_not_set_the_price() {
        let clusters = [
            h100("alpha", "2.00", 8),
            h100("beta", "2.90", 8),
            h100("gamma", "2.50", 2),
        ];
        // gamma cannot hold 4 GPUs; beta asks above the limit: alpha is alone and pays its ask.
        let j = job("a/j")
            .models(&["H100"])
            .gpus(4)
            .max_price("2.80")
            .build();
        let d = schedule(&j, &clusters, &[], &auction()).unwrap();
        assert_eq!(
            (placed(&d).cluster.as_str(), placed(&d).price),
            ("alpha", tokens("2.00"))
        );
    }

    #[test]
    fn jobs_earlier_in_the_pass_take_their_gpus_out_of_the_bidding() {
        let clusters = [
            h100("alpha", "2.00", 4),
            h100("beta", "2.40", 4),
            h100("gamma", "3.00", 4),
        ];
        let first = job("a/first").models(&["H100"]).gpus(4).order(1).build();
        let second = job("a/second").models(&["H100"]).gpus(4).order(2).build();
        let third = job("a/third").models(&["H100"]).gpus(4).order(3).build();
        let out = schedule_batch(&[first, second, third], &clusters, &[], &auction()).unwrap();
        let got: Vec<(&str, u128)> = out
            .iter()
            .map(|(_, d)| (placed(d).cluster.as_str(), placed(d).price))
            .collect();
        // alpha is full after the first job, beta after the second; gamma is then alone.
        assert_eq!(
            got,
            [
                ("alpha", tokens("2.40")),
                ("beta", tokens("3.00")),
                ("gamma", tokens("3.00"))
            ]
        );
    }

    #[test]
    fn the_job_pays_the_runner_up_ask_within_its_limit() {
        assert_eq!(clearing_price(200, Some(260), Some(300)), 260);
        assert_eq!(clearing_price(200, Some(260), None), 260);
        // Alone: the winner's own ask.
        assert_eq!(clearing_price(200, None, Some(300)), 200);
        assert_eq!(clearing_price(200, None, None), 200);
        // Never above the limit, never below the ask.
        assert_eq!(clearing_price(200, Some(400), Some(300)), 300);
        assert_eq!(clearing_price(200, Some(100), Some(300)), 200);
    }
}
