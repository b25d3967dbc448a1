//! The straightforward scheduler the indexed one replaced, kept as a reference for the property
//! tests: one pass over every cluster, each checked with every filter by [`evaluate`], and for a
//! job that fits nowhere one [`Reason`] built per cluster straight from its `ClusterState`, the
//! way `Decision::NoFit` was filled before it became a compact [`NoFit`].
//! Everything else (ordering, packing, reservations) is the real scheduler's, so a difference
//! between [`schedule_batch`] here and [`crate::schedule_batch`] can only come from the search or
//! from the compact reasons.

use std::sync::Arc;

use crate::decision::{Assignment, Decision};
use crate::error::ScheduleError;
use crate::filter::{Banned, JobView, Reject, evaluate};
use crate::index::{ClusterEntry, Gate, Index};
use crate::input::{ClusterState, JobRequest, Policy, Reservation};
use crate::nofit::{NoFit, NoFitSignature};
use crate::reason::Reason;
use crate::roster::{bond_issue, mix, name_hash, pair_hash};
use crate::scheduler::{Best, Choice, Scheduler, batch_with};
use crate::score::ScoreKey;

/// A decision with a no-fit's reasons spelled out as `(cluster, Reason)` pairs, by cluster name:
/// what the reference returns, and what a [`Decision`] is compared as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expanded {
    /// Place the whole gang here.
    Place(Assignment),
    /// One reason per cluster, by cluster name.
    NoFit(Vec<(String, Reason)>),
}

impl From<&Decision> for Expanded {
    fn from(decision: &Decision) -> Expanded {
        match decision {
            Decision::Place(a) => Expanded::Place(a.clone()),
            Decision::NoFit(no_fit) => Expanded::NoFit(no_fit.to_vec()),
        }
    }
}

impl From<&NoFit> for Expanded {
    fn from(no_fit: &NoFit) -> Expanded {
        Expanded::NoFit(no_fit.to_vec())
    }
}

/// [`NoFit::signature`] the long way: every `(cluster, kind)` pair of [`NoFit::kinds`] hashed and
/// added up.
pub fn signature(no_fit: &NoFit) -> NoFitSignature {
    let sum = no_fit
        .kinds()
        .fold(mix(no_fit.len() as u64), |sum, (name, kind)| {
            sum.wrapping_add(pair_hash(name_hash(name), kind))
        });
    NoFitSignature(mix(sum))
}

/// [`crate::schedule_batch`] with the linear search and reasons built cluster by cluster.
pub fn schedule_batch(
    jobs: &[JobRequest],
    clusters: &[ClusterState],
    reservations: &[Reservation],
    policy: &Policy,
) -> Result<Vec<(String, Expanded)>, ScheduleError> {
    batch_with(jobs, clusters, reservations, policy, |s, job| {
        Ok(match s.place_with(job, linear)? {
            Choice::Place { assignment, .. } => Expanded::Place(assignment),
            Choice::NoFit { view, banned } => Expanded::NoFit(reasons(&s.index, &view, &banned)),
        })
    })
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

/// One reason per cluster, by cluster name, for a job that fits nowhere: every cluster through
/// every filter.
fn reasons(index: &Index<'_>, view: &JobView<'_>, banned: &[Banned]) -> Vec<(String, Reason)> {
    let mut out = Vec::with_capacity(index.clusters.len());
    for (pos, cluster) in index.clusters.iter().enumerate() {
        if let Err(reject) = evaluate(cluster, pos, view, banned, |_| {}) {
            out.push((
                cluster.state.name.clone(),
                reason(reject, cluster, view, index),
            ));
        }
    }
    out
}

/// Turns a [`Reject`] of `cluster` into a [`Reason`], reading the cluster's own `ClusterState`.
fn reason(
    reject: Reject,
    cluster: &ClusterEntry<'_>,
    view: &JobView<'_>,
    index: &Index<'_>,
) -> Reason {
    let job = view.job;
    let name = |id: u32| index.model_name(id).to_string();
    match reject {
        Reject::Gate(Gate::NotReady) => Reason::NotReady,
        Reject::Gate(Gate::NoInventory) => Reason::NoInventory,
        Reject::Gate(Gate::Cordoned) => Reason::Cordoned,
        Reject::Gate(Gate::Bond) => Reason::Bond(bond_issue(&cluster.state.bond)),
        Reject::Excluded => Reason::Excluded,
        Reject::FailedBefore => Reason::FailedBefore,
        Reject::Region => Reason::Region {
            region: cluster.state.region.clone(),
        },
        Reject::NoModel => {
            let mut has: Vec<String> = cluster
                .state
                .nodes
                .iter()
                .map(|n| n.model.clone())
                .collect();
            has.sort();
            has.dedup();
            Reason::NoModel {
                wanted: view.wanted(),
                has: Arc::from(has),
            }
        }
        Reject::NoPrice { model } => Reason::NoPrice { model: name(model) },
        Reject::Memory { model, has_mib } => Reason::Memory {
            model: name(model),
            has_mib,
            need_mib: job.min_gpu_memory_mib,
        },
        Reject::Price { model } => {
            let price = cluster
                .state
                .prices
                .get(index.model_name(model))
                .copied()
                .unwrap_or(0);
            Reason::Price {
                model: name(model),
                price,
                max: job.max_price.unwrap_or(price),
            }
        }
        Reject::Capacity { model, free } => Reason::Capacity {
            model: name(model),
            free,
            need: view.need,
        },
        Reject::NodeSize {
            model,
            largest_free,
        } => Reason::NodeSize {
            model: name(model),
            largest_free,
            need_per_replica: job.gpus_per_replica,
        },
        Reject::Fragmented { model, fit } => Reason::Fragmented {
            model: name(model),
            fit,
            replicas: job.replicas,
            need_per_replica: job.gpus_per_replica,
        },
    }
}
