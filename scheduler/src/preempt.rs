//! Preemption (ADR 0025): which running attempts of lower priority a pending job would evict to
//! fit, when it fits nowhere as things stand.
//!
//! It runs after the pass ([`crate::schedule_batch`] or [`crate::schedule_batch_fair`]) on the
//! jobs the pass left without a cluster and whose pool and priority class allow preemption. The
//! caller passes what the pass took (reservations plus its placements) so the GPUs the pass gave
//! away are not counted twice, and the attempts running now.
//!
//! **Rule.** Victims are attempts whose job has a *strictly lower* priority than the preemptor,
//! evicted as whole gangs, all on one cluster (a gang never spans clusters). On each cluster the
//! candidates are taken youngest first (latest `started`) until the job fits; then, from the
//! oldest of them to the youngest, any victim the job still fits without is spared. What is left
//! is *inclusion-minimal*: the job fits, and fits without none of them. Among clusters, the one
//! evicting the fewest GPUs wins, then the fewest attempts, then the cluster name. An exact
//! minimum number of GPUs would be a knapsack over the attempts of a cluster (exponential); the
//! property test's reference does try every victim set, to check the rule's guarantees.
//!
//! **Held for the preemptor.** The freed GPUs are nobody's in this pass: the victims still run
//! until their members stop them. A later preemptor of the same call neither evicts the same
//! attempts again nor counts on the GPUs an earlier one will use there; it may use what an
//! earlier one's victims free beyond that one's need.
//!
//! Whether a job fits once some attempts are gone is decided by the real scheduler on a copy of
//! that one cluster with the victims' GPUs added back to its nodes' free GPUs, so every filter
//! (model, memory, price, region, bond, exclusions, failed clusters) applies as in the pass.
//! Fitting is monotone in free GPUs (a replica fits a node when the node has enough free), which
//! is what makes dropping spare victims one at a time reach a minimal set.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use crate::decision::{Assignment, Decision};
use crate::error::ScheduleError;
use crate::input::{ClusterState, JobRequest, Policy, Reservation};
use crate::scheduler::Scheduler;

/// At most this many preemptors are looked at per call (highest priority, then oldest, first):
/// each costs a few single-cluster searches per candidate cluster.
pub const MAX_PREEMPTORS: usize = 16;

/// An attempt that holds GPUs now: what the hub knows of a placed or running attempt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Running {
    /// The job, `namespace/name`.
    pub job: String,
    /// Its attempt number.
    pub attempt: u32,
    /// The job's priority.
    pub priority: i32,
    /// The member cluster it runs on.
    pub cluster: String,
    /// GPUs it holds per node, as placed.
    pub nodes: Vec<(String, u32)>,
    /// When it was placed, in any increasing unit (seconds since the epoch); larger is younger.
    pub started: u64,
}

impl Running {
    /// GPUs it holds, all nodes.
    pub fn gpus(&self) -> u64 {
        self.nodes.iter().map(|(_, g)| u64::from(*g)).sum()
    }
}

/// One attempt to evict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Victim {
    /// The job, `namespace/name`.
    pub job: String,
    /// The attempt.
    pub attempt: u32,
    /// The job's priority (always below the preemptor's).
    pub priority: i32,
    /// GPUs it frees.
    pub gpus: u64,
}

/// A job that fits only if some lower-priority attempts go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preempt {
    /// The preemptor, `namespace/name`.
    pub job: String,
    /// The cluster the victims run on and the preemptor would go to.
    pub cluster: String,
    /// The attempts to evict, youngest first.
    pub victims: Vec<Victim>,
    /// Where the preemptor would be placed once they are gone (its nodes are held in this call).
    pub assignment: Assignment,
}

impl Preempt {
    /// GPUs the victims free, all of them.
    pub fn freed_gpus(&self) -> u64 {
        self.victims.iter().map(|v| v.gpus).sum()
    }
}

/// For each of `preemptors` (jobs the pass left without a cluster that may preempt), the
/// lower-priority attempts of `running` whose eviction lets it fit, if any, by the rule of this
/// module. A job that fits some cluster without evicting anyone gets no plan. `taken` are the GPUs
/// the pass's working copy had taken at its end (reservations and the pass's own placements).
/// Preemptors are looked at by priority, then `order`, then key; at most [`MAX_PREEMPTORS`]. Fails
/// on an invalid job or duplicate cluster or node names.
pub fn plan_preemptions(
    preemptors: &[JobRequest],
    clusters: &[ClusterState],
    taken: &[Reservation],
    running: &[Running],
    policy: &Policy,
) -> Result<Vec<Preempt>, ScheduleError> {
    let order = crate::input::queue_order(preemptors);
    let mut claimed: Vec<Reservation> = taken.to_vec();
    let mut evicted: BTreeSet<(&str, u32)> = BTreeSet::new();
    let mut gone: Vec<&Running> = Vec::new();
    let mut plans = Vec::new();
    for job in order.into_iter().take(MAX_PREEMPTORS) {
        job.validate()?;
        if fits_anywhere(job, clusters, &claimed, &gone, policy)? {
            // It fits without evicting anyone (GPUs the pass held for another job, or freed by an
            // earlier preemptor's victims beyond its need): evict nobody.
            continue;
        }
        let mut best: Option<(Vec<&Running>, Assignment)> = None;
        for cluster in clusters {
            let candidates: Vec<&Running> = youngest_first(
                running
                    .iter()
                    .filter(|r| r.cluster == cluster.name && r.priority < job.priority)
                    .filter(|r| !evicted.contains(&(r.job.as_str(), r.attempt)))
                    .collect(),
            );
            if candidates.is_empty() {
                continue;
            }
            let Some((victims, assignment)) =
                victims_on(job, cluster, &claimed, &gone, &candidates, policy)?
            else {
                continue;
            };
            if best
                .as_ref()
                .is_none_or(|(b, a)| rank(&victims, &assignment.cluster) < rank(b, &a.cluster))
            {
                best = Some((victims, assignment));
            }
        }
        let Some((victims, assignment)) = best else {
            continue;
        };
        for v in &victims {
            evicted.insert((v.job.as_str(), v.attempt));
            gone.push(v);
        }
        claimed.extend(assignment.nodes.iter().map(|(node, replicas)| Reservation {
            cluster: assignment.cluster.clone(),
            node: node.clone(),
            gpus: replicas.saturating_mul(job.gpus_per_replica),
        }));
        plans.push(Preempt {
            job: job.key.clone(),
            cluster: assignment.cluster.clone(),
            victims: victims
                .iter()
                .map(|r| Victim {
                    job: r.job.clone(),
                    attempt: r.attempt,
                    priority: r.priority,
                    gpus: r.gpus(),
                })
                .collect(),
            assignment,
        });
    }
    Ok(plans)
}

/// Whether `job` fits some cluster as things stand (with `gone` gone and `claimed` taken).
fn fits_anywhere(
    job: &JobRequest,
    clusters: &[ClusterState],
    claimed: &[Reservation],
    gone: &[&Running],
    policy: &Policy,
) -> Result<bool, ScheduleError> {
    for cluster in clusters {
        if fits_without(job, cluster, claimed, gone, &[], policy)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// How a victim set ranks among clusters: fewer GPUs, then fewer attempts, then cluster name.
fn rank<'a>(victims: &[&Running], cluster: &'a str) -> (u64, usize, &'a str) {
    (
        victims.iter().map(|r| r.gpus()).sum(),
        victims.len(),
        cluster,
    )
}

/// `attempts` youngest first: latest `started`, then job key and attempt (for a total order).
fn youngest_first(mut attempts: Vec<&Running>) -> Vec<&Running> {
    attempts.sort_by_key(|r| (Reverse(r.started), r.job.clone(), Reverse(r.attempt)));
    attempts
}

/// The inclusion-minimal victim set on `cluster` (candidates youngest first) and where the job
/// would go, or `None` when evicting every candidate is not enough. The job does not fit there
/// without evicting someone (checked by the caller).
fn victims_on<'r>(
    job: &JobRequest,
    cluster: &ClusterState,
    claimed: &[Reservation],
    gone: &[&Running],
    candidates: &[&'r Running],
    policy: &Policy,
) -> Result<Option<(Vec<&'r Running>, Assignment)>, ScheduleError> {
    let mut prefix = 0;
    let mut found = None;
    while prefix < candidates.len() {
        prefix += 1;
        if let Some(a) = fits_without(job, cluster, claimed, gone, &candidates[..prefix], policy)? {
            found = Some(a);
            break;
        }
    }
    let Some(mut assignment) = found else {
        return Ok(None);
    };
    let mut victims: Vec<&Running> = candidates[..prefix].to_vec();
    // Spare the oldest first: try each victim from the oldest to the youngest.
    let mut i = victims.len();
    while i > 0 {
        i -= 1;
        let mut fewer = victims.clone();
        fewer.remove(i);
        if fewer.is_empty() {
            continue;
        }
        if let Some(a) = fits_without(job, cluster, claimed, gone, &fewer, policy)? {
            victims = fewer;
            assignment = a;
        }
    }
    Ok(Some((victims, assignment)))
}

/// Where `job` would go on `cluster` if `victims` were gone, with the attempts earlier
/// preemptors evict (`gone`) gone too and the GPUs `claimed` by the pass and those preemptors
/// taken.
pub(crate) fn fits_without(
    job: &JobRequest,
    cluster: &ClusterState,
    claimed: &[Reservation],
    gone: &[&Running],
    victims: &[&Running],
    policy: &Policy,
) -> Result<Option<Assignment>, ScheduleError> {
    let all: Vec<&Running> = gone.iter().chain(victims).copied().collect();
    let copy = [freed(cluster, &all)];
    let held: Vec<Reservation> = claimed
        .iter()
        .filter(|r| r.cluster == cluster.name)
        .cloned()
        .collect();
    let mut scheduler = Scheduler::new(&copy, &held, policy)?;
    Ok(match scheduler.place(job)? {
        Decision::Place(a) => Some(a),
        Decision::NoFit(_) | Decision::OverQuota(_) => None,
    })
}

/// `cluster` with the GPUs of `victims` added back to its nodes' free GPUs (never above the node's
/// allocatable GPUs).
pub fn freed(cluster: &ClusterState, victims: &[&Running]) -> ClusterState {
    let mut back: BTreeMap<&str, u64> = BTreeMap::new();
    for v in victims.iter().filter(|v| v.cluster == cluster.name) {
        for (node, gpus) in &v.nodes {
            *back.entry(node.as_str()).or_default() += u64::from(*gpus);
        }
    }
    let mut copy = cluster.clone();
    for n in &mut copy.nodes {
        let add = back.get(n.name.as_str()).copied().unwrap_or(0);
        let free = u64::from(n.free_gpus).saturating_add(add);
        n.free_gpus = u32::try_from(free)
            .unwrap_or(u32::MAX)
            .min(n.allocatable_gpus);
    }
    copy
}

#[cfg(test)]
mod tests;
