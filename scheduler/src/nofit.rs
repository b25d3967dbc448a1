//! Why a job fits nowhere, kept compact: [`NoFit`] holds a code per cluster that the job's numbers
//! matter for, and turns codes into [`Reason`]s with text only when asked.
//!
//! A pool of 10,000 clusters gives 10,000 reasons per waiting job. Most of them do not depend on
//! the job's numbers at all: a cluster that is not ready, cordoned, excluded, in another region or
//! without any of the job's models gives the same reason to every job with the same terms. So a
//! `NoFit` keeps three things: the pass's shared `Roster` (names, gates, regions, models, prices:
//! one `Arc` for every decision of the pass), the job's terms, and one 24-byte code for each open
//! cluster of an accepted region that prices one of the job's models, the only clusters whose
//! reason depends on free GPUs. Every other cluster's reason is worked out from the roster and the
//! terms when it is read, in the filters' order. Building one costs one pass over the job's index
//! rows (as the search did) and a few allocations, none of them per cluster. The codes depend only
//! on the terms and the free GPUs, and the list keeps codes for the clusters a job blocks too (read
//! after the block, so never as the reason), so the jobs of a pass with the same terms but for
//! what they block, decided at the same counts, share one list (ADR 0042): in a full pool of 1,000
//! members a list is 24 KB, and a hub with 9,000 waiting jobs held one per job.
//!
//! [`NoFit::signature`] condenses the (cluster, [`ReasonKind`]) pairs into a [`NoFitSignature`]
//! that the hub compares between passes to rewrite a waiting job's status only when the reasons
//! change in kind, not each time a free GPU count moves.

use std::fmt;
use std::sync::Arc;

use crate::filter::Reject;
use crate::index::Gate;
use crate::reason::{Reason, ReasonKind};
use crate::roster::{Facts, Roster, mix, pair_hash};

/// Why a job fits nowhere: exactly one reason per cluster of the snapshot, sorted by cluster name
/// (none when the snapshot has no clusters).
///
/// Read it with [`NoFit::iter`] / [`NoFit::get`] (each [`Reason`] is built on demand),
/// [`NoFit::kinds`] (no allocation), [`crate::explain()`] (one line of text) or
/// [`NoFit::signature`]. It stays valid after the [`crate::Scheduler`] that made it is dropped.
/// Two `NoFit`s are equal when they list the same clusters with the same reasons.
#[derive(Clone)]
pub struct NoFit {
    roster: Arc<Roster>,
    job: Box<JobTerms>,
    /// `(cluster position, reject)` of the clusters whose reason depends on the job's numbers,
    /// ascending by position, including clusters the job blocks (whose reason is the block, read
    /// first); shared by the no-fit decisions of jobs with the same terms but for what they block,
    /// made at the same free GPU counts (a full pool's waiting jobs: one list, not one per job).
    misses: Arc<[(u32, Reject)]>,
}

/// What a [`NoFit`] keeps of its job to explain itself: the terms its reasons quote and the
/// choices that decide the cluster-level ones.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct JobTerms {
    /// The job's models as given, deduplicated, in the job's order.
    pub(crate) wanted: Arc<[String]>,
    /// Ids of the accepted models the snapshot knows, in the job's order.
    pub(crate) models: Vec<u32>,
    pub(crate) model_mask: u64,
    /// Accepted region ids, ascending; `None` accepts any.
    pub(crate) regions: Option<Vec<u32>>,
    /// Positions of excluded clusters.
    pub(crate) excluded: Vec<usize>,
    /// Positions of clusters where an earlier attempt failed.
    pub(crate) failed: Vec<usize>,
    /// Positions of the unverified clusters the job does not opt in to, ascending.
    pub(crate) unverified: Vec<usize>,
    /// GPUs of the whole gang.
    pub(crate) need: u64,
    pub(crate) replicas: u32,
    pub(crate) gpus_per_replica: u32,
    /// Memory per GPU the job asks for (the advertised size), MiB.
    pub(crate) need_mib: u64,
    pub(crate) max_price: Option<u128>,
    pub(crate) max_duration_secs: u64,
}

/// A fingerprint of a [`NoFit`]'s (cluster name, [`ReasonKind`]) pairs and of nothing else: free
/// GPU counts, prices and bond amounts do not enter it.
///
/// The hub keeps the signature of the explanation it last wrote for a waiting job and rewrites the
/// job's status only when the new one differs, so a busy pool does not cost a status write per
/// job per pass while counts move. Equal signatures mean equal pairs except with a chance of about
/// 2^-64 per comparison. The value is computed the same way in every process (no random seed), so
/// it may be stored; it changes when the crate's [`ReasonKind`]s change, which costs one rewrite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NoFitSignature(pub u64);

impl fmt::Display for NoFitSignature {
    /// 16 lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl NoFit {
    pub(crate) fn new(roster: Arc<Roster>, job: JobTerms, misses: Arc<[(u32, Reject)]>) -> NoFit {
        NoFit {
            roster,
            job: Box::new(job),
            misses,
        }
    }

    /// Whether `other` reads its per-cluster reasons from the same list as this one (made for
    /// jobs with the same terms at the same free GPU counts).
    #[cfg(test)]
    pub(crate) fn shares_reasons_with(&self, other: &NoFit) -> bool {
        Arc::ptr_eq(&self.misses, &other.misses)
    }

    /// Number of clusters, each with one reason.
    pub fn len(&self) -> usize {
        self.roster.len()
    }

    /// Whether the snapshot had no clusters.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name and reason of the `i`th cluster by name.
    pub fn get(&self, i: usize) -> Option<(&str, Reason)> {
        let facts = self.roster.facts(i)?;
        let miss = u32::try_from(i).ok().and_then(|at| {
            let found = self
                .misses
                .binary_search_by_key(&at, |(pos, _)| *pos)
                .ok()?;
            self.misses.get(found).map(|(_, r)| *r)
        });
        let reject = self.reject(i, facts, miss);
        Some((self.roster.name(i), self.reason(i, facts, reject)))
    }

    /// Every cluster's name and reason, by name. Each [`Reason`] is built as it is read (most
    /// allocate a model name); [`NoFit::kinds`] does not allocate.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Reason)> + '_ {
        self.rejects()
            .map(|(pos, facts, reject)| (self.roster.name(pos), self.reason(pos, facts, reject)))
    }

    /// Every cluster's name and reason kind, by name, without building the reasons.
    pub fn kinds(&self) -> impl Iterator<Item = (&str, ReasonKind)> + '_ {
        self.rejects()
            .map(|(pos, facts, reject)| (self.roster.name(pos), Self::kind(facts, reject)))
    }

    /// Calls `f` with each cluster's position, facts and reason kind, in position order.
    pub(crate) fn each_kind_at(&self, mut f: impl FnMut(usize, &Facts, ReasonKind)) {
        for (pos, facts, reject) in self.rejects() {
            f(pos, facts, Self::kind(facts, reject));
        }
    }

    /// The reasons as `(cluster, Reason)` pairs, by cluster name.
    pub fn to_vec(&self) -> Vec<(String, Reason)> {
        self.iter().map(|(c, r)| (c.to_string(), r)).collect()
    }

    /// The [`NoFitSignature`] of these reasons, without visiting every cluster.
    ///
    /// The signature is `mix(mix(len) + Σ pair_hash(name, kind))` over every cluster. The roster
    /// holds the sum over the gated clusters, and per region the sums over its open clusters as if
    /// each gave `Region` or `NoModel`: every open cluster outside the job's regions does give
    /// `Region`, and inside them `NoModel`, except the clusters the job blocks, those with a code
    /// (they price one of its models), and those that have one of its models without a price
    /// (`NoPrice`). Those few get their term swapped. The cost is the number of codes, a few
    /// nanoseconds each, instead of the number of clusters.
    pub fn signature(&self) -> NoFitSignature {
        let roster = &*self.roster;
        let job = &*self.job;
        let accepted = |region: u32| job.regions.as_ref().is_none_or(|r| r.contains(&region));
        let mut sum = mix(self.len() as u64).wrapping_add(roster.gated_sum);
        for (region, &(outside, inside)) in (0u32..).zip(&roster.region_sums) {
            sum = sum.wrapping_add(if accepted(region) { inside } else { outside });
        }
        let mut swap = |pos: usize, kind: ReasonKind| {
            if let Some(facts) = roster.facts(pos)
                && facts.gate.is_none()
            {
                let assumed = if accepted(facts.region) {
                    ReasonKind::NoModel
                } else {
                    ReasonKind::Region
                };
                sum = sum
                    .wrapping_sub(pair_hash(facts.name_hash, assumed))
                    .wrapping_add(pair_hash(facts.name_hash, kind));
            }
        };
        // Blocked clusters, once each: not opted in to first, then an exclusion, then a failure.
        let mut blocked: Vec<(usize, ReasonKind)> = job
            .unverified
            .iter()
            .map(|&pos| (pos, ReasonKind::Unverified))
            .chain(job.excluded.iter().map(|&pos| (pos, ReasonKind::Excluded)))
            .chain(
                job.failed
                    .iter()
                    .map(|&pos| (pos, ReasonKind::FailedBefore)),
            )
            .collect();
        blocked.sort_by_key(|&(pos, _)| pos);
        blocked.dedup_by_key(|&mut (pos, _)| pos);
        for &(pos, kind) in &blocked {
            swap(pos, kind);
        }
        // The codes of the clusters not blocked (a blocked one's reason is the block, above).
        for &(pos, reject) in self.misses.iter() {
            let pos = pos as usize;
            if blocked.binary_search_by_key(&pos, |&(at, _)| at).is_ok() {
                continue;
            }
            if let Some(facts) = roster.facts(pos) {
                swap(pos, Self::kind(facts, reject));
            }
        }
        // Open clusters in the job's regions with one of its models, none of them priced.
        let regions = job
            .regions
            .clone()
            .unwrap_or_else(|| (0..roster.regions()).collect());
        for (nth, &model) in job.models.iter().enumerate() {
            for &region in &regions {
                for &pos in roster.unpriced(model, region) {
                    let pos = pos as usize;
                    let has = roster.models(pos);
                    let counted_or_priced = job.unverified.binary_search(&pos).is_ok()
                        || job.excluded.contains(&pos)
                        || job.failed.contains(&pos)
                        || job.models.iter().any(|&m| roster.price(pos, m).is_some())
                        || job
                            .models
                            .iter()
                            .take(nth)
                            .any(|m| has.binary_search(m).is_ok());
                    if !counted_or_priced {
                        swap(pos, ReasonKind::NoPrice);
                    }
                }
            }
        }
        NoFitSignature(mix(sum))
    }

    /// Each cluster's position, facts and reject, in position order.
    fn rejects(&self) -> impl Iterator<Item = (usize, &Facts, Reject)> + '_ {
        let mut misses = self.misses.iter().peekable();
        (0..self.roster.len()).filter_map(move |pos| {
            let facts = self.roster.facts(pos)?;
            let miss = misses
                .next_if(|(at, _)| *at as usize == pos)
                .map(|(_, r)| *r);
            Some((pos, facts, self.reject(pos, facts, miss)))
        })
    }

    /// The first filter the cluster at `pos` fails, in the order of `filter::evaluate`: the
    /// cluster-level ones from the roster and the job's choices, then the model-level one the
    /// search recorded (`miss`), or else `NoModel` / `NoPrice`, the only model-level reasons of a
    /// cluster that prices none of the job's models.
    #[inline(always)]
    fn reject(&self, pos: usize, facts: &Facts, miss: Option<Reject>) -> Reject {
        let job = &self.job;
        if let Some(gate) = facts.gate {
            return Reject::Gate(gate);
        }
        if job.unverified.binary_search(&pos).is_ok() {
            return Reject::Unverified;
        }
        if job.excluded.contains(&pos) {
            return Reject::Excluded;
        }
        if job.failed.contains(&pos) {
            return Reject::FailedBefore;
        }
        if let Some(regions) = &job.regions
            && !regions.contains(&facts.region)
        {
            return Reject::Region;
        }
        if let Some(miss) = miss {
            return miss;
        }
        if facts.model_mask & job.model_mask == 0 {
            return Reject::NoModel;
        }
        let has = self.roster.models(pos);
        job.models
            .iter()
            .find(|m| has.binary_search(m).is_ok())
            .map_or(Reject::NoModel, |&model| Reject::NoPrice { model })
    }

    #[inline(always)]
    fn kind(facts: &Facts, reject: Reject) -> ReasonKind {
        match reject {
            Reject::Gate(_) => facts.gate_kind.unwrap_or(ReasonKind::BondUnknown),
            Reject::Unverified => ReasonKind::Unverified,
            Reject::Excluded => ReasonKind::Excluded,
            Reject::FailedBefore => ReasonKind::FailedBefore,
            Reject::Region => ReasonKind::Region,
            Reject::NoModel => ReasonKind::NoModel,
            Reject::NoPrice { .. } => ReasonKind::NoPrice,
            Reject::Memory { .. } => ReasonKind::Memory,
            Reject::Price { .. } => ReasonKind::Price,
            Reject::Duration { .. } => ReasonKind::Duration,
            Reject::NodeTooSmall { .. } => ReasonKind::NodeTooSmall,
            Reject::Capacity { .. } => ReasonKind::Capacity,
            Reject::NodeSize { .. } => ReasonKind::NodeSize,
            Reject::Fragmented { .. } => ReasonKind::Fragmented,
        }
    }

    /// The [`Reason`] of `reject` for the cluster at `pos`, with the details a person needs.
    fn reason(&self, pos: usize, facts: &Facts, reject: Reject) -> Reason {
        let job = &self.job;
        let name = |id: u32| self.roster.model_name(id).to_string();
        match reject {
            Reject::Gate(Gate::NotReady) => Reason::NotReady,
            Reject::Gate(Gate::NoInventory) => Reason::NoInventory,
            Reject::Gate(Gate::Cordoned) => Reason::Cordoned,
            Reject::Gate(Gate::Bond) => Reason::Bond(self.roster.bond(pos)),
            Reject::Gate(Gate::Verification) | Reject::Unverified => {
                Reason::Verification(self.roster.verification(pos))
            }
            Reject::Gate(Gate::Reputation) => Reason::Reputation {
                message: self.roster.reputation(pos),
            },
            Reject::Excluded => Reason::Excluded,
            Reject::FailedBefore => Reason::FailedBefore,
            Reject::Region => Reason::Region {
                region: self.roster.region_name(facts.region).to_string(),
            },
            Reject::NoModel => Reason::NoModel {
                wanted: Arc::clone(&job.wanted),
                has: self.roster.has(pos),
            },
            Reject::NoPrice { model } => Reason::NoPrice { model: name(model) },
            Reject::Memory { model, has_mib } => Reason::Memory {
                model: name(model),
                has_mib,
                need_mib: job.need_mib,
            },
            Reject::Price { model } => {
                let price = self.roster.price(pos, model).unwrap_or(0);
                Reason::Price {
                    model: name(model),
                    price,
                    max: job.max_price.unwrap_or(price),
                }
            }
            Reject::Duration {
                model,
                min_secs,
                max_secs,
            } => Reason::Duration {
                model: name(model),
                job_secs: job.max_duration_secs,
                min_secs: u64::from(min_secs),
                max_secs: if max_secs == u32::MAX {
                    u64::MAX
                } else {
                    u64::from(max_secs)
                },
            },
            Reject::NodeTooSmall { model, largest } => Reason::NodeTooSmall {
                model: name(model),
                largest,
                per_replica: job.gpus_per_replica,
            },
            Reject::Capacity { model, free } => Reason::Capacity {
                model: name(model),
                free,
                need: job.need,
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
}

impl PartialEq for NoFit {
    fn eq(&self, other: &NoFit) -> bool {
        if Arc::ptr_eq(&self.roster, &other.roster)
            && self.job == other.job
            && self.misses == other.misses
        {
            return true;
        }
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for NoFit {}

impl fmt::Debug for NoFit {
    /// The `(cluster, Reason)` pairs, as a list.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests;
