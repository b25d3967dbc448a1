//! The entry points: place one job, or a batch of pending jobs in priority order.
//!
//! A [`Scheduler`] owns the working copy of one snapshot. Each placement it makes is subtracted
//! from that copy before the next job is looked at, exactly as a [`Reservation`] from an earlier
//! pass is, so a burst of jobs never over-commits a cluster before its member reports back.
//!
//! Picking a cluster reads only the index rows of the job's models and regions, keeping only the
//! best key (`scan.rs`); nothing is allocated per cluster. A job that fits nowhere reads the same
//! rows once more to record the reasons that depend on free GPUs; its [`NoFit`] works out every
//! other cluster's reason when it is read.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::auction::{clearing_price, runner_up};
use crate::decision::{Assignment, Decision};
use crate::error::ScheduleError;
use crate::filter::{Banned, Fit, JobView, Reject};
use crate::index::Index;
use crate::input::{ClusterState, JobRequest, Policy, Reservation, Strategy};
use crate::nofit::{JobTerms, NoFit};
use crate::packing::pack;
use crate::quota::QuotaBook;
use crate::scan::{misses, scan};
use crate::score::ScoreKey;

/// A scheduling pass over one snapshot: places jobs one after another, each seeing the GPUs taken
/// by the ones before.
#[derive(Debug)]
pub struct Scheduler<'a> {
    pub(crate) index: Index<'a>,
    pub(crate) policy: Policy,
    /// Reasons of the no-fit decisions made since free GPUs last changed.
    nofits: NoFitCache,
}

/// The per-cluster reasons ([`misses`]) of the no-fit decisions made at one state of the index,
/// by the job's terms less the clusters it blocks (a `NoFit` reads those before the list). They
/// depend on nothing else, so while nothing is placed (a full pool) every waiting job with the
/// same terms shares one list instead of building its own: at 1,000 members a list is 24 KB, and
/// 9,000 waiting jobs held one each until the pass wrote their reasons. Jobs that lost attempts
/// on different members still share.
#[derive(Debug, Default)]
struct NoFitCache {
    /// [`Index::changes`] when the lists were worked out.
    at: u64,
    lists: HashMap<JobTerms, Arc<[(u32, Reject)]>>,
}

/// The most term sets the cache keeps at one state of the index; more distinct jobs in a row
/// start it again (each list is still shared by the decisions already made).
const NOFIT_TERMS_KEPT: usize = 256;

impl NoFitCache {
    /// The reasons for `view` at the index's current state, worked out once per distinct terms
    /// less what the job blocks ([`JobView::unblocked_terms`]).
    fn reasons(&mut self, index: &Index<'_>, view: &JobView<'_>) -> Arc<[(u32, Reject)]> {
        if self.at != index.changes || self.lists.len() >= NOFIT_TERMS_KEPT {
            self.lists.clear();
            self.at = index.changes;
        }
        Arc::clone(
            self.lists
                .entry(view.unblocked_terms())
                .or_insert_with(|| misses(index, view, &[]).into()),
        )
    }
}

/// How a candidate search finds the best (cluster, model) for a job and counts the clusters that
/// fit: the indexed scan, or the linear one the tests compare it with.
pub(crate) type Scan = fn(&Scheduler<'_>, &JobView<'_>, &[Banned]) -> (Option<Best>, usize);

/// What [`Scheduler::choose`] found: a placement and what it takes, or the job as resolved
/// against the index and the candidates refused while packing, to build the reasons from.
pub(crate) enum Choice<'j> {
    Place {
        assignment: Assignment,
        cluster: usize,
        model_pos: usize,
        picks: Vec<(usize, u32)>,
    },
    NoFit {
        view: JobView<'j>,
        banned: Vec<Banned>,
    },
}

/// The best candidate of one scan.
#[derive(Clone, Copy)]
pub(crate) struct Best {
    pub(crate) key: ScoreKey,
    pub(crate) cluster: usize,
    pub(crate) fit: Fit,
}

impl<'a> Scheduler<'a> {
    /// Indexes `clusters` with `reservations` (GPUs promised to placements the members have not
    /// reported yet) already taken. Fails on duplicate cluster or node names.
    pub fn new(
        clusters: &'a [ClusterState],
        reservations: &[Reservation],
        policy: &Policy,
    ) -> Result<Scheduler<'a>, ScheduleError> {
        Ok(Scheduler {
            index: Index::build(clusters, reservations)?,
            policy: *policy,
            nofits: NoFitCache::default(),
        })
    }

    /// Decides where `job` goes and, if it is placed, takes its GPUs from the working copy.
    pub fn place(&mut self, job: &JobRequest) -> Result<Decision, ScheduleError> {
        let choice = self.place_with(job, indexed)?;
        Ok(decision(&self.index, Some(&mut self.nofits), choice))
    }

    /// Chooses with `scan` and, if the job is placed, takes its GPUs from the working copy.
    pub(crate) fn place_with<'j>(
        &mut self,
        job: &'j JobRequest,
        scan: Scan,
    ) -> Result<Choice<'j>, ScheduleError> {
        let choice = self.choose(job, scan)?;
        if let Choice::Place {
            cluster,
            model_pos,
            picks,
            ..
        } = &choice
        {
            self.index
                .commit(*cluster, *model_pos, job.gpus_per_replica, picks);
        }
        Ok(choice)
    }

    /// Decides where `job` would go without taking its GPUs.
    pub fn evaluate(&self, job: &JobRequest) -> Result<Decision, ScheduleError> {
        let choice = self.choose(job, indexed)?;
        Ok(decision(&self.index, None, choice))
    }

    fn choose<'j>(&self, job: &'j JobRequest, scan: Scan) -> Result<Choice<'j>, ScheduleError> {
        job.validate()?;
        let view = JobView::new(job, &self.index);
        let mut banned: Vec<Banned> = Vec::new();
        loop {
            let (best, fitting) = scan(self, &view, &banned);
            let candidate = best.and_then(|b| {
                let cluster = self.index.clusters.get(b.cluster)?;
                Some((b, cluster, cluster.models.get(b.fit.model_pos)?))
            });
            let Some((best, cluster, model)) = candidate else {
                return Ok(Choice::NoFit { view, banned });
            };
            let picks = pack(
                &cluster.nodes,
                model,
                job.memory_threshold_mib(),
                job.gpus_per_replica,
                job.replicas,
                self.policy.strategy,
            );
            let placed: u32 = picks.iter().map(|(_, r)| r).sum();
            if placed < job.replicas {
                // The filters and the packer count replicas the same way, so this does not happen;
                // if it ever did, refusing the candidate keeps the gang all-or-nothing.
                banned.push(Banned {
                    cluster: best.cluster,
                    model: best.fit.model,
                    fit: u64::from(placed),
                });
                continue;
            }
            let price = match self.policy.strategy {
                Strategy::Auction => clearing_price(
                    best.fit.price,
                    runner_up(self, &view, &banned, best.cluster, scan),
                    job.max_price,
                ),
                Strategy::CheapestFit | Strategy::BinPack | Strategy::Spread => best.fit.price,
            };
            let assignment = Assignment {
                cluster: cluster.state.name.clone(),
                model: self.index.model_name(best.fit.model).to_string(),
                price,
                ask: best.fit.price,
                nodes: picks
                    .iter()
                    .filter_map(|&(i, r)| cluster.nodes.get(i).map(|n| (n.state.name.clone(), r)))
                    .collect(),
                free_after: best.fit.free.saturating_sub(view.need),
                fitting_clusters: fitting,
            };
            return Ok(Choice::Place {
                assignment,
                cluster: best.cluster,
                model_pos: best.fit.model_pos,
                picks,
            });
        }
    }
}

/// The decision of a choice: a job that fits nowhere gets its compact reasons, shared through
/// `nofits` with the other jobs of the same terms decided at the same free GPU counts. A job with
/// candidates refused while packing (`banned`, its own) and a one-off decision (no `nofits`)
/// work theirs out alone.
fn decision(index: &Index<'_>, nofits: Option<&mut NoFitCache>, choice: Choice<'_>) -> Decision {
    match choice {
        Choice::Place { assignment, .. } => Decision::Place(assignment),
        Choice::NoFit { view, banned } => {
            let misses = match nofits {
                Some(cache) if banned.is_empty() => cache.reasons(index, &view),
                _ => misses(index, &view, &banned).into(),
            };
            Decision::NoFit(NoFit::new(
                Arc::clone(&index.roster),
                view.into_terms(),
                misses,
            ))
        }
    }
}

/// The indexed scan, as a [`Scan`].
fn indexed(s: &Scheduler<'_>, view: &JobView<'_>, banned: &[Banned]) -> (Option<Best>, usize) {
    scan(&s.index, s.policy.strategy, view, banned)
}

/// Decides where one job goes, given the snapshot, the GPUs already promised, and the policy.
pub fn schedule(
    job: &JobRequest,
    clusters: &[ClusterState],
    reservations: &[Reservation],
    policy: &Policy,
) -> Result<Decision, ScheduleError> {
    Scheduler::new(clusters, reservations, policy)?.evaluate(job)
}

/// Places a batch of pending jobs: higher `priority` first, then smaller `order` (older), then key.
/// Each placement's GPUs are taken before the next job is decided. Results come in that order.
/// Every job is checked before any is placed, so an error leaves nothing half-done.
pub fn schedule_batch(
    jobs: &[JobRequest],
    clusters: &[ClusterState],
    reservations: &[Reservation],
    policy: &Policy,
) -> Result<Vec<(String, Decision)>, ScheduleError> {
    batch_with(jobs, clusters, reservations, policy, |s, job| s.place(job))
}

/// [`schedule_batch`] with the quota filter in the same pass: a job whose namespace has no room
/// in `quotas` for an accepted model is decided without that model, and one with no model left is
/// [`Decision::OverQuota`]. Each placement is charged to `quotas` before the next job is decided,
/// so `quotas` ends the pass holding what the pass placed (see [`QuotaBook::report`]).
pub fn schedule_batch_with_quotas(
    jobs: &[JobRequest],
    clusters: &[ClusterState],
    reservations: &[Reservation],
    policy: &Policy,
    quotas: &mut QuotaBook,
) -> Result<Vec<(String, Decision)>, ScheduleError> {
    if quotas.is_empty() {
        return schedule_batch(jobs, clusters, reservations, policy);
    }
    batch_with(jobs, clusters, reservations, policy, |s, job| {
        place_within_quota(s, job, quotas, |s, job| s.place(job))
    })
}

/// Decides `job` with `decide` on the models its quota has room for, and charges a placement.
pub(crate) fn place_within_quota(
    s: &mut Scheduler<'_>,
    job: &JobRequest,
    quotas: &mut QuotaBook,
    decide: impl FnOnce(&mut Scheduler<'_>, &JobRequest) -> Result<Decision, ScheduleError>,
) -> Result<Decision, ScheduleError> {
    let decision = match quotas.admit(job) {
        Err(over) => return Ok(Decision::OverQuota(over)),
        Ok(None) => decide(s, job)?,
        Ok(Some(models)) if models.len() == job.models.len() => decide(s, job)?,
        Ok(Some(models)) => {
            let narrowed = JobRequest {
                models,
                ..job.clone()
            };
            decide(s, &narrowed)?
        }
    };
    if let Decision::Place(a) = &decision {
        quotas.charge_job(job, &a.model);
    }
    Ok(decision)
}

/// [`schedule_batch`] with each job decided by `decide`.
pub(crate) fn batch_with<T>(
    jobs: &[JobRequest],
    clusters: &[ClusterState],
    reservations: &[Reservation],
    policy: &Policy,
    mut decide: impl FnMut(&mut Scheduler<'_>, &JobRequest) -> Result<T, ScheduleError>,
) -> Result<Vec<(String, T)>, ScheduleError> {
    let mut keys = BTreeSet::new();
    for job in jobs {
        job.validate()?;
        if !keys.insert(job.key.as_str()) {
            return Err(ScheduleError::DuplicateJob {
                key: job.key.clone(),
            });
        }
    }
    let order = crate::input::queue_order(jobs);
    let mut scheduler = Scheduler::new(clusters, reservations, policy)?;
    order
        .into_iter()
        .map(|job| Ok((job.key.clone(), decide(&mut scheduler, job)?)))
        .collect()
}

#[cfg(test)]
mod tests;
