//! The straightforward search the indexed one replaced, kept as a reference for the property
//! tests: one pass over every cluster, each checked with every filter by [`evaluate`].
//! Everything else (ordering, packing, reservations, reasons) is the real scheduler's, so a
//! difference between [`schedule_batch`] here and [`crate::schedule_batch`] can only come from
//! the search.

use crate::decision::Decision;
use crate::error::ScheduleError;
use crate::filter::{Banned, JobView, evaluate};
use crate::input::{ClusterState, JobRequest, Policy, Reservation};
use crate::scheduler::{Best, Scheduler, batch_with};
use crate::score::ScoreKey;

/// [`crate::schedule_batch`] with the linear search.
pub fn schedule_batch(
    jobs: &[JobRequest],
    clusters: &[ClusterState],
    reservations: &[Reservation],
    policy: &Policy,
) -> Result<Vec<(String, Decision)>, ScheduleError> {
    batch_with(jobs, clusters, reservations, policy, linear)
}

/// One pass over every cluster, each checked with every filter: the best candidate and the
/// number of clusters that fit.
fn linear(s: &Scheduler<'_>, view: &JobView<'_>, banned: &[Banned]) -> (Option<Best>, usize) {
    let strategy = s.policy.strategy;
    let mut best: Option<Best> = None;
    let mut fitting = 0;
    for (pos, cluster) in s.index.clusters.iter().enumerate() {
        let outcome = evaluate(cluster, pos, view, banned, |fit| {
            let key = ScoreKey::new(strategy, fit.price, fit.free, view.need, pos, fit.model);
            if best.as_ref().is_none_or(|b| key < b.key) {
                best = Some(Best {
                    key,
                    cluster: pos,
                    fit,
                });
            }
        });
        if outcome.is_ok() {
            fitting += 1;
        }
    }
    (best, fitting)
}
