//! The filters: whether one cluster can take one job, and if not, the first reason why.
//!
//! Order (fixed; `docs/scheduler.md` explains it): cluster health and standing first (not ready,
//! no inventory, cordoned, bond), then the job's own choices (excluded, failed before, region),
//! then per accepted model: no such GPUs, no price, memory, price cap, no node big enough for a
//! replica (however many GPUs free up), total capacity, node size, fragmentation. A cluster fits when any accepted model passes every model filter. When none
//! does, the reason kept is the one from the model that got furthest down the list (a capacity
//! problem of a model it has says more than "no A100"), earlier models in the job's list winning
//! ties.
//!
//! Checks here work on a [`JobView`] (the job's names turned into the index's integer ids) and
//! the index's aggregates, so they allocate nothing. A failure is a [`Reject`]: a small `Copy`
//! code that a [`crate::NoFit`] keeps and turns into a [`crate::Reason`] with text only when asked.

use std::sync::Arc;

use crate::index::{ClusterEntry, Gate, Index, model_mask};
use crate::input::JobRequest;
use crate::nofit::JobTerms;

/// A job with names resolved against one index.
#[derive(Debug)]
pub(crate) struct JobView<'j> {
    pub(crate) job: &'j JobRequest,
    /// Accepted models that some node of the snapshot has, deduplicated, in the job's order.
    pub(crate) models: Vec<u32>,
    /// [`model_mask`] of `models`.
    pub(crate) model_mask: u64,
    /// Accepted regions known to the snapshot, ascending and deduplicated; `None` accepts any.
    pub(crate) regions: Option<Vec<u32>>,
    /// Positions of excluded clusters.
    pub(crate) excluded: Vec<usize>,
    /// Positions of clusters where an earlier attempt failed.
    pub(crate) failed: Vec<usize>,
    /// Positions of the unverified clusters the job does not opt in to (ascending).
    pub(crate) unverified: Vec<usize>,
    /// GPUs of the whole gang.
    pub(crate) need: u64,
}

impl<'j> JobView<'j> {
    /// Resolves `job`'s names against `index`. Names the snapshot does not know match nothing.
    pub(crate) fn new(job: &'j JobRequest, index: &Index<'_>) -> JobView<'j> {
        let mut models = Vec::with_capacity(job.models.len());
        for id in job.models.iter().filter_map(|m| index.model_id(m)) {
            if !models.contains(&id) {
                models.push(id);
            }
        }
        let regions = (!job.regions.is_empty()).then(|| {
            let mut ids: Vec<u32> = job
                .regions
                .iter()
                .filter_map(|r| index.region_id(r))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        });
        let positions = |names: &[String]| -> Vec<usize> {
            names
                .iter()
                .filter_map(|n| index.cluster_position(n))
                .collect()
        };
        JobView {
            job,
            model_mask: model_mask(models.iter().copied()),
            models,
            regions,
            excluded: positions(&job.exclude),
            failed: positions(&job.failed_on),
            unverified: if job.allow_unverified {
                Vec::new()
            } else {
                index.unverified.clone()
            },
            need: job.total_gpus(),
        }
    }

    /// The job's models as given, deduplicated, in the job's order, for `NoModel` reasons.
    pub(crate) fn wanted(&self) -> Arc<[String]> {
        let mut wanted: Vec<String> = Vec::with_capacity(self.job.models.len());
        for m in &self.job.models {
            if !wanted.contains(m) {
                wanted.push(m.clone());
            }
        }
        wanted.into()
    }

    /// What a no-fit decision keeps of the job to explain itself after the pass: everything of the
    /// job that a cluster's reason depends on, so two jobs with equal terms get the same reasons
    /// from the same index.
    pub(crate) fn into_terms(self) -> JobTerms {
        let unblocked = self.unblocked_terms();
        JobTerms {
            excluded: self.excluded,
            failed: self.failed,
            unverified: self.unverified,
            ..unblocked
        }
    }

    /// The job's terms without the clusters it blocks: what the codes of its no-fit reasons
    /// depend on besides the free GPUs (a `NoFit` reads a block before a code), so the key under
    /// which jobs share them (`NoFitCache`).
    pub(crate) fn unblocked_terms(&self) -> JobTerms {
        JobTerms {
            wanted: self.wanted(),
            models: self.models.clone(),
            model_mask: self.model_mask,
            regions: self.regions.clone(),
            excluded: Vec::new(),
            failed: Vec::new(),
            unverified: Vec::new(),
            need: self.need,
            replicas: self.job.replicas,
            gpus_per_replica: self.job.gpus_per_replica,
            need_mib: self.job.min_gpu_memory_mib,
            max_price: self.job.max_price,
            max_duration_secs: self.job.max_duration_secs,
        }
    }
}

impl JobView<'_> {
    /// Whether the job excludes the cluster at `pos`, failed there before, or does not opt in to
    /// its unverified GPUs.
    #[inline]
    pub(crate) fn blocks(&self, pos: usize) -> bool {
        self.unverified.binary_search(&pos).is_ok()
            || self.excluded.contains(&pos)
            || self.failed.contains(&pos)
    }
}

/// A model of a cluster that fits a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fit {
    /// Position in [`ClusterEntry::models`].
    pub(crate) model_pos: usize,
    /// Model id.
    pub(crate) model: u32,
    /// Price per GPU-hour.
    pub(crate) price: u128,
    /// Free GPUs of the model on nodes with enough memory, before placing.
    pub(crate) free: u64,
}

/// A (cluster, model) that passed the filters but could not be packed; see `scheduler.rs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Banned {
    pub(crate) cluster: usize,
    pub(crate) model: u32,
    pub(crate) fit: u64,
}

/// Why a cluster failed, without text; variants in filter order. Only what belongs to the cluster
/// and can change within a pass is kept, in 16 bytes: the job's terms and the names are looked up
/// when a [`crate::Reason`] is built, and so is the cluster's price of a `Price` reject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reject {
    Gate(Gate),
    /// Its GPUs are not verified yet and the job does not opt in to unverified members.
    Unverified,
    Excluded,
    FailedBefore,
    Region,
    NoModel,
    NoPrice {
        model: u32,
    },
    Memory {
        model: u32,
        has_mib: u64,
    },
    Price {
        model: u32,
    },
    /// The offer's job lengths, seconds, saturated to `u32` (`u32::MAX`: none).
    Duration {
        model: u32,
        min_secs: u32,
        max_secs: u32,
    },
    NodeTooSmall {
        model: u32,
        largest: u32,
    },
    Capacity {
        model: u32,
        free: u64,
    },
    NodeSize {
        model: u32,
        largest_free: u32,
    },
    Fragmented {
        model: u32,
        fit: u64,
    },
}

impl Reject {
    /// How far down the model filters this got; higher is more informative.
    pub(crate) fn depth(self) -> u8 {
        match self {
            Reject::Gate(_)
            | Reject::Unverified
            | Reject::Excluded
            | Reject::FailedBefore
            | Reject::Region
            | Reject::NoModel => 0,
            Reject::NoPrice { .. } => 1,
            Reject::Memory { .. } => 2,
            Reject::Price { .. } => 3,
            Reject::Duration { .. } => 4,
            Reject::NodeTooSmall { .. } => 5,
            Reject::Capacity { .. } => 6,
            Reject::NodeSize { .. } => 7,
            Reject::Fragmented { .. } => 8,
        }
    }
}

/// Checks `cluster` (at position `pos`) against `view`, calling `on_fit` for each accepted model
/// that fits. Returns the most informative reason when none does.
///
/// This is every filter in its documented order, in one place. The scheduler itself does the same
/// work split in two (the index rows in `scan.rs`, the cluster-level reasons in `nofit.rs`), and
/// the linear reference built on this function checks both.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn evaluate(
    cluster: &ClusterEntry<'_>,
    pos: usize,
    view: &JobView<'_>,
    banned: &[Banned],
    mut on_fit: impl FnMut(Fit),
) -> Result<(), Reject> {
    if let Some(gate) = cluster.gate {
        return Err(Reject::Gate(gate));
    }
    if view.unverified.binary_search(&pos).is_ok() {
        return Err(Reject::Unverified);
    }
    if view.excluded.contains(&pos) {
        return Err(Reject::Excluded);
    }
    if view.failed.contains(&pos) {
        return Err(Reject::FailedBefore);
    }
    if let Some(regions) = &view.regions
        && !regions.contains(&cluster.region)
    {
        return Err(Reject::Region);
    }
    if cluster.model_mask & view.model_mask == 0 {
        return Err(Reject::NoModel);
    }
    let mut best = Reject::NoModel;
    let mut fits = false;
    for &model in &view.models {
        let Some(model_pos) = cluster.models.iter().position(|m| m.model == model) else {
            continue;
        };
        match model_outcome(cluster, pos, model_pos, view, banned) {
            Ok(fit) => {
                fits = true;
                on_fit(fit);
            }
            Err(reject) if reject.depth() > best.depth() => best = reject,
            Err(_) => {}
        }
    }
    if fits { Ok(()) } else { Err(best) }
}

/// Whether model `model_pos` of `cluster` (at position `pos`) fits `view`, by the model filters
/// alone: the cluster-level ones are the caller's.
pub(crate) fn model_outcome(
    cluster: &ClusterEntry<'_>,
    pos: usize,
    model_pos: usize,
    view: &JobView<'_>,
    banned: &[Banned],
) -> Result<Fit, Reject> {
    let Some(entry) = cluster.models.get(model_pos) else {
        return Err(Reject::NoModel);
    };
    let model = entry.model;
    if let Some(b) = banned.iter().find(|b| b.cluster == pos && b.model == model) {
        return Err(Reject::Fragmented { model, fit: b.fit });
    }
    check_model(entry, model, model_pos, view)
}

fn check_model(
    entry: &crate::index::ModelEntry,
    model: u32,
    model_pos: usize,
    view: &JobView<'_>,
) -> Result<Fit, Reject> {
    let job = view.job;
    let Some(price) = entry.price else {
        return Err(Reject::NoPrice { model });
    };
    let Some(tier) = entry.tier(job.memory_threshold_mib()) else {
        return Err(Reject::Memory {
            model,
            has_mib: entry.max_mem_mib(),
        });
    };
    if job.max_price.is_some_and(|max| price > max) {
        return Err(Reject::Price { model });
    }
    if let Some(d) = entry.durations
        && !d.takes(job.max_duration_secs)
    {
        return Err(Reject::Duration {
            model,
            min_secs: u32::try_from(d.min_secs).unwrap_or(u32::MAX),
            max_secs: u32::try_from(d.max_secs).unwrap_or(u32::MAX),
        });
    }
    let per_replica = job.gpus_per_replica;
    if tier.max_size < per_replica {
        return Err(Reject::NodeTooSmall {
            model,
            largest: tier.max_size,
        });
    }
    if tier.free < view.need {
        return Err(Reject::Capacity {
            model,
            free: tier.free,
        });
    }
    if tier.max_free < per_replica {
        return Err(Reject::NodeSize {
            model,
            largest_free: tier.max_free,
        });
    }
    let replicas = u64::from(job.replicas);
    let fit = tier.replicas_fit(per_replica, replicas);
    if fit < replicas {
        return Err(Reject::Fragmented { model, fit });
    }
    Ok(Fit {
        model_pos,
        model,
        price,
        free: tier.free,
    })
}

#[cfg(test)]
mod tests;
