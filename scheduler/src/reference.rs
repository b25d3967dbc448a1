//! The straightforward search the indexed one replaced, kept as a reference for the property
//! tests: one pass over every cluster that has one of the job's models, each checked with every
//! filter by [`evaluate`]. Everything else (ordering, packing, reservations, reasons) is the
//! real scheduler's, so a difference between [`schedule_batch`] here and
//! [`crate::schedule_batch`] can only come from the search.

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

/// One pass over the clusters that have an accepted model (no other can fit): the best
/// candidate and the number of clusters that fit.
fn linear(s: &Scheduler<'_>, view: &JobView<'_>, banned: &[Banned]) -> (Option<Best>, usize) {
    let strategy = s.policy.strategy;
    let mut best: Option<Best> = None;
    let mut fitting = 0;
    let lists: Vec<&[usize]> = view
        .models
        .iter()
        .map(|&m| s.index.clusters_with(m))
        .collect();
    for_each_in_union(&lists, |pos| {
        let Some(cluster) = s.index.clusters.get(pos) else {
            return;
        };
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
    });
    (best, fitting)
}

/// Calls `visit` once for each value in any of the ascending `lists`, in ascending order.
fn for_each_in_union(lists: &[&[usize]], mut visit: impl FnMut(usize)) {
    if let [only] = lists {
        only.iter().for_each(|&v| visit(v));
        return;
    }
    let mut heads = vec![0usize; lists.len()];
    loop {
        let next = lists
            .iter()
            .zip(&heads)
            .filter_map(|(list, &h)| list.get(h))
            .min()
            .copied();
        let Some(v) = next else {
            return;
        };
        visit(v);
        for (list, h) in lists.iter().zip(heads.iter_mut()) {
            if list.get(*h) == Some(&v) {
                *h += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_union_of_cluster_lists_visits_each_cluster_once_in_order() {
        let mut seen = Vec::new();
        super::for_each_in_union(&[&[1, 4, 7], &[0, 4, 9], &[]], |v| seen.push(v));
        assert_eq!(seen, [0, 1, 4, 7, 9]);
        seen.clear();
        super::for_each_in_union(&[&[2, 3]], |v| seen.push(v));
        assert_eq!(seen, [2, 3]);
        seen.clear();
        super::for_each_in_union(&[], |v| seen.push(v));
        assert!(seen.is_empty());
    }
}
