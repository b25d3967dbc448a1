//! The indexed candidate search: the best (cluster, model) for a job, and how many clusters fit.
//!
//! It reads only the index's [`Row`]s of the job's models in the job's regions (all regions when
//! it names none): clusters that are open (ready, inventory, not cordoned, bond) and price the
//! model. Each row is rejected from its own figures when the model's free GPUs on all nodes, or
//! on its fullest node, are fewer than the job needs, or the price is above the cap: no tier of
//! fewer nodes can do better, so such a cluster does not fit. A row that passes decides the fit by
//! itself ([`row_verdict`]) when no node of the model has the memory the job needs (a memory
//! reject), or when every node has it and a replica needs at most 8 GPUs (or the gang is one
//! replica, or replicas of one GPU): the row records the model's least and most memory per GPU
//! and how many replicas of each of those sizes its nodes hold. Any other job (some nodes with
//! enough memory, wider replicas, a refused candidate) reads the cluster's memory tier exactly as
//! the filters do. So the cost of a decision is the number of rows of its models and regions, a
//! few integers each, read in order from one array, rather than every cluster with a pointer chase
//! for each.
//!
//! The result is exactly what a pass over every cluster with the filters gives (`reference.rs`
//! keeps that pass; the property tests compare the two): the same best key (keys end with cluster
//! position and model id, so the visiting order does not matter) and the same count, each fitting
//! cluster counted once even when several of the job's models fit it (a bit per cluster marks the
//! ones counted, for a job with several models).
//!
//! For a job that fits nowhere, [`misses`] reads the same rows once more and records why each of
//! those clusters does not fit, from the row alone as far as it can: those are the only clusters
//! whose reason depends on free GPUs, so a [`crate::NoFit`] works out every other cluster's reason
//! later.

use crate::filter::{Banned, Fit, JobView, Reject, model_outcome};
use crate::index::{Index, Row, RowFit};
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
        counted: if view.models.len() > 1 {
            vec![0; index.clusters.len().div_ceil(64)]
        } else {
            Vec::new()
        },
        best: None,
        fitting: 0,
    };
    for &model in &view.models {
        for rows in row_lists(index, view, model) {
            search.rows(rows, model);
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

/// What the row of `model` alone says about the job: fits (`Ok`) or the first model filter it
/// fails, exactly as `filter::check_model` on the cluster's tiers would say. No node has the
/// memory the job needs (`threshold`) when the largest does not; when every node has it, the
/// row's figures are those of the job's tier. `None` when only some nodes have it, or when the fit
/// depends on a replica size the row does not record. The caller makes sure no candidate of this
/// job was banned.
fn row_verdict(
    row: &Row,
    view: &JobView<'_>,
    threshold: u64,
    model: u32,
) -> Option<Result<(), Reject>> {
    let job = view.job;
    if threshold > row.max_mem_mib {
        return Some(Err(Reject::Memory {
            model,
            has_mib: row.max_mem_mib,
        }));
    }
    if threshold > row.min_mem_mib {
        return None;
    }
    let gpus = job.gpus_per_replica;
    Some(if job.max_price.is_some_and(|max| row.price > max) {
        Err(Reject::Price { model })
    } else if row.max_size < gpus {
        Err(Reject::NodeTooSmall {
            model,
            largest: row.max_size,
        })
    } else if row.free < view.need {
        Err(Reject::Capacity {
            model,
            free: row.free,
        })
    } else if row.max_free < gpus {
        Err(Reject::NodeSize {
            model,
            largest_free: row.max_free,
        })
    } else if job.replicas == 1 || gpus == 1 {
        // One replica fits on the fullest node; one-GPU replicas fit wherever the GPUs add up.
        Ok(())
    } else {
        let replicas = u64::from(job.replicas);
        match row.replicas_fit(gpus)? {
            RowFit::Exactly(fit) if fit < replicas => Err(Reject::Fragmented { model, fit }),
            RowFit::AtLeast(fit) if fit < replicas => return None,
            RowFit::Exactly(_) | RowFit::AtLeast(_) => Ok(()),
        }
    })
}

/// One job's search in progress.
struct Search<'s, 'a, 'j> {
    index: &'s Index<'a>,
    strategy: Strategy,
    view: &'s JobView<'j>,
    banned: &'s [Banned],
    threshold: u64,
    /// With several models: bit `pos` set once the cluster at `pos` is counted as fitting.
    counted: Vec<u64>,
    best: Option<Best>,
    fitting: usize,
}

impl Search<'_, '_, '_> {
    /// Visits the rows of `model`.
    fn rows(&mut self, rows: &[Row], model: u32) {
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
            if self.first_fit(pos) {
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

    /// The fit of `model` on the cluster at `pos`, from its row when the row decides.
    fn fit(&self, row: &Row, pos: usize, model: u32) -> Option<Fit> {
        let verdict = if self.banned.is_empty() && !self.index.row_limits_duration(row) {
            row_verdict(row, self.view, self.threshold, model)
        } else {
            None
        };
        match verdict {
            Some(Ok(())) => Some(Fit {
                model_pos: row.model_pos as usize,
                model,
                price: row.price,
                free: row.free,
            }),
            Some(Err(_)) => None,
            None => {
                let cluster = self.index.clusters.get(pos)?;
                model_outcome(cluster, pos, row.model_pos as usize, self.view, self.banned).ok()
            }
        }
    }

    /// Whether this is the first of the job's models found to fit the cluster at `pos`: always
    /// with one model (a cluster has one row per model); else the cluster's bit says.
    fn first_fit(&mut self, pos: usize) -> bool {
        if self.counted.is_empty() {
            return true;
        }
        let bit = 1u64 << (pos % 64);
        match self.counted.get_mut(pos / 64) {
            Some(word) if *word & bit == 0 => {
                *word |= bit;
                true
            }
            Some(_) => false,
            None => true,
        }
    }
}

/// For a job that fits nowhere: why each cluster that has a row of one of its models (open, in an
/// accepted region, pricing the model) fails, ascending by cluster position, one entry per
/// cluster. With several of the job's models, a cluster keeps the reject that got furthest down
/// the filters, the earlier model in the job's list winning ties, as the filters do. Rows decide
/// as in the search ([`row_verdict`]).
///
/// Clusters the job blocks (excluded, failed on, unverified ones it does not opt in to) get an
/// entry too: a [`crate::NoFit`] checks those before the entry, so the list depends on neither,
/// and jobs that differ only in what they block share it (`NoFitCache`).
pub(crate) fn misses(
    index: &Index<'_>,
    view: &JobView<'_>,
    banned: &[Banned],
) -> Vec<(u32, Reject)> {
    let threshold = view.job.memory_threshold_mib();
    let mut out: Vec<(u32, Reject)> = Vec::new();
    for &model in &view.models {
        for rows in row_lists(index, view, model) {
            for row in rows {
                let pos = row.cluster as usize;
                let verdict = if banned.is_empty() && !index.row_limits_duration(row) {
                    row_verdict(row, view, threshold, model)
                } else {
                    None
                };
                let reject = match verdict {
                    Some(verdict) => verdict.err(),
                    None => index.clusters.get(pos).and_then(|cluster| {
                        model_outcome(cluster, pos, row.model_pos as usize, view, banned).err()
                    }),
                };
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
