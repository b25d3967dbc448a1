//! The indexed candidate search: the best (cluster, model) for a job, and how many clusters fit.
//!
//! It reads only the index's [`Row`]s of the job's models in the job's regions (all regions when
//! it names none): clusters that are open (ready, inventory, not cordoned, bond) and price the
//! model. Each row is rejected from its own figures when the model's free GPUs on all nodes, or
//! on its fullest node, are fewer than the job needs, or the price is above the cap: no tier of
//! fewer nodes can do better, so such a cluster does not fit. A row that passes decides the fit by
//! itself for the usual job (one replica, or one GPU per replica, with a memory need every node of
//! the model meets); any other job reads the cluster's memory tier exactly as the filters do. So
//! the cost of a decision is the number of rows of its models and regions, a few integers each,
//! read in order from one array, rather than every cluster with a pointer chase for each.
//!
//! The result is exactly what a pass over every cluster with the filters gives (`reference.rs`
//! keeps that pass; the property tests compare the two): the same best key (keys
//! end with cluster position and model id, so the visiting order does not matter) and the same
//! count, each fitting cluster counted once even when several of the job's models fit it.
//!
//! For a job that fits nowhere, [`misses`] reads the same rows once more and records why each of
//! those clusters does not fit, mostly from the row alone: those are the only clusters whose reason
//! depends on free GPUs, so a [`crate::NoFit`] works out every other cluster's reason later.

use crate::filter::{Banned, Fit, JobView, Reject, model_outcome};
use crate::index::{Index, Row};
use crate::input::Strategy;
use crate::scheduler::Best;
use crate::score::ScoreKey;

/// The best candidate for `view` and the number of clusters that fit it.
pub(crate) fn scan(
    index: &Index<'_>,
    strategy: Strategy,
    view: &JobView<'_>,
    banned: &[Banned],
) -> (Option<Best>, usize) {
    let mut search = Search {
        index,
        strategy,
        view,
        banned,
        threshold: view.job.memory_threshold_mib(),
        // One replica fits wherever the fullest node holds it; one-GPU replicas fit wherever the
        // free GPUs add up. Either way the row's figures decide.
        row_decides: banned.is_empty()
            && (view.job.replicas == 1 || view.job.gpus_per_replica == 1),
        best: None,
        fitting: 0,
    };
    for (nth, &model) in view.models.iter().enumerate() {
        for rows in row_lists(index, view, model) {
            search.rows(rows, nth, model);
        }
    }
    (search.best, search.fitting)
}

/// The row lists of `model` in the job's regions (every region when it names none).
fn row_lists<'i>(
    index: &'i Index<'_>,
    view: &'i JobView<'_>,
    model: u32,
) -> impl Iterator<Item = &'i [Row]> + 'i {
    let every = match &view.regions {
        Some(_) => 0..0,
        None => 0..index.regions(),
    };
    let named = view.regions.as_deref().unwrap_or(&[]).iter().copied();
    named
        .chain(every)
        .map(move |region| index.rows(model, region))
}

/// For a job that fits nowhere: why each cluster that has a row of one of its models (open, in an
/// accepted region, pricing the model) and that the job does not exclude fails, ascending by
/// cluster position, one entry per cluster. With several of the job's models, a cluster keeps the
/// reject that got furthest down the filters, the earlier model in the job's list winning ties,
/// as the filters do.
///
/// A row decides by itself whenever the job's memory need is met by every node of the model
/// (then the row's figures are the job's tier): price, total free GPUs, fullest node. Only a
/// fragmentation check, a memory tier or a banned candidate reads the cluster's tiers.
pub(crate) fn misses(
    index: &Index<'_>,
    view: &JobView<'_>,
    banned: &[Banned],
) -> Vec<(u32, Reject)> {
    let job = view.job;
    let threshold = job.memory_threshold_mib();
    let mut out: Vec<(u32, Reject)> = Vec::new();
    for &model in &view.models {
        for rows in row_lists(index, view, model) {
            for row in rows {
                let pos = row.cluster as usize;
                if view.blocks(pos) {
                    continue;
                }
                let quick = if banned.is_empty() && threshold <= row.min_mem_mib {
                    if job.max_price.is_some_and(|max| row.price > max) {
                        Some(Reject::Price { model })
                    } else if row.free < view.need {
                        Some(Reject::Capacity {
                            model,
                            free: row.free,
                        })
                    } else if row.max_free < job.gpus_per_replica {
                        Some(Reject::NodeSize {
                            model,
                            largest_free: row.max_free,
                        })
                    } else {
                        None
                    }
                } else {
                    None
                };
                let reject = quick.or_else(|| {
                    let cluster = index.clusters.get(pos)?;
                    model_outcome(cluster, pos, row.model_pos as usize, view, banned).err()
                });
                if let Some(reject) = reject {
                    out.push((row.cluster, reject));
                }
            }
        }
    }
    // Each list is ascending and the lists of one model are disjoint (one region each), so a stable
    // sort only merges runs; equal positions (several models) stay in the job's model order.
    if !out.is_sorted_by_key(|&(pos, _)| pos) {
        out.sort_by_key(|&(pos, _)| pos);
    }
    if view.models.len() > 1 {
        out.dedup_by(|later, kept| {
            if later.0 != kept.0 {
                return false;
            }
            if later.1.depth() > kept.1.depth() {
                kept.1 = later.1;
            }
            true
        });
    }
    out
}

/// One job's search in progress.
struct Search<'s, 'a, 'j> {
    index: &'s Index<'a>,
    strategy: Strategy,
    view: &'s JobView<'j>,
    banned: &'s [Banned],
    threshold: u64,
    row_decides: bool,
    best: Option<Best>,
    fitting: usize,
}

impl Search<'_, '_, '_> {
    /// Visits the rows of `model`, the `nth` of the job's models.
    fn rows(&mut self, rows: &[Row], nth: usize, model: u32) {
        let job = self.view.job;
        let need = self.view.need;
        let per_replica = job.gpus_per_replica;
        for row in rows {
            if row.free < need
                || row.max_free < per_replica
                || job.max_price.is_some_and(|max| row.price > max)
            {
                continue;
            }
            let pos = row.cluster as usize;
            if self.view.blocks(pos) {
                continue;
            }
            let Some(fit) = self.fit(row, pos, model) else {
                continue;
            };
            if nth == 0 || !self.earlier_model_fits(pos, nth) {
                self.fitting += 1;
            }
            let key = ScoreKey::new(self.strategy, fit.price, fit.free, need, pos, model);
            if self.best.as_ref().is_none_or(|b| key < b.key) {
                self.best = Some(Best {
                    key,
                    cluster: pos,
                    fit,
                });
            }
        }
    }

    /// The fit of a row that passed the quick checks, if the model fits.
    fn fit(&self, row: &Row, pos: usize, model: u32) -> Option<Fit> {
        let model_pos = row.model_pos as usize;
        if self.row_decides && self.threshold <= row.min_mem_mib {
            return Some(Fit {
                model_pos,
                model,
                price: row.price,
                free: row.free,
            });
        }
        let cluster = self.index.clusters.get(pos)?;
        model_outcome(cluster, pos, model_pos, self.view, self.banned).ok()
    }

    /// Whether one of the job's models before the `nth` fits the cluster at `pos`, which was then
    /// counted already.
    fn earlier_model_fits(&self, pos: usize, nth: usize) -> bool {
        let Some(cluster) = self.index.clusters.get(pos) else {
            return false;
        };
        self.view.models.iter().take(nth).any(|&earlier| {
            cluster
                .models
                .iter()
                .position(|m| m.model == earlier)
                .is_some_and(|at| model_outcome(cluster, pos, at, self.view, self.banned).is_ok())
        })
    }
}
