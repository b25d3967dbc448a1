//! Reclaiming lent quota in the scheduling loop (ADR 0025, `GpuPool.spec.reclaimWithinCohort`,
//! Kueue's `reclaimWithinCohort`).
//!
//! After the priority preemptions of a pass ([`crate::hub::scheduling::decide_with`]), a job left
//! without a cluster whose namespace belongs to a cohort and still has room in its own nominal
//! quota may take back GPUs that other namespaces of its cohort borrowed. The pure core
//! ([`gpufed_scheduler::reclaim_victims`]) picks the borrowers' attempts (never below their
//! nominal quota, lowest priority then youngest, under the pool's policy); this module finds the
//! cluster where evicting some of them lets the job fit and turns that into the same
//! [`Preempt`] plan priority preemption uses, so the victims are stopped, settled and re-queued
//! by the same code ([`crate::hub::preemption`]). Only the texts differ: they say lent quota was
//! reclaimed, by which job and from which borrower.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use gpufed_crds::{ComputeJob, GpuPool, ReclaimWithinCohort};
use gpufed_scheduler::preempt::freed;
use gpufed_scheduler::quota::namespace_of;
use gpufed_scheduler::{
    Claim, ClusterState, Decision, JobRequest, MAX_PREEMPTORS, NamespaceQuota, Policy, Preempt,
    ReclaimPolicy, Reclaimed, Reservation, Running, ScheduleError, Scheduler, Usage, Victim,
    reclaim_victims,
};

use crate::hub::snapshot;

/// The pool's reclaim policy in the scheduler's terms.
pub fn policy(pool: &GpuPool) -> ReclaimPolicy {
    match pool.spec.reclaim_within_cohort {
        ReclaimWithinCohort::Never => ReclaimPolicy::Never,
        ReclaimWithinCohort::LowerPriority => ReclaimPolicy::LowerPriority,
        ReclaimWithinCohort::Any => ReclaimPolicy::Any,
    }
}

/// One job's reclaim: the plan the preemption code carries out, and why each victim goes.
#[derive(Clone, Debug, PartialEq)]
pub struct Reclaim {
    /// Victims (all on one cluster) and where the claimant goes once they stop.
    pub plan: Preempt,
    /// For each victim of the plan, in the same order, the borrowing it ends.
    pub why: Vec<Reclaimed>,
    /// The policy it was planned under (for the texts).
    pub policy: ReclaimPolicy,
}

/// The model each job of `jobs` with an unfinished attempt runs on, by `namespace/name`.
pub fn models_of<J: std::borrow::Borrow<ComputeJob>>(jobs: &[J]) -> HashMap<String, String> {
    jobs.iter()
        .map(std::borrow::Borrow::borrow)
        .filter_map(|j| Some((snapshot::job_key(j), snapshot::quota_usage(j)?.model)))
        .collect()
}

/// The group of `namespace`'s quota that counts `model`, by name: the group naming the model, else
/// the group naming no model (as the quota book counts it).
fn group_of<'q>(quotas: &'q [NamespaceQuota], namespace: &str, model: &str) -> Option<&'q str> {
    let groups = &quotas.iter().find(|q| q.namespace == namespace)?.groups;
    groups
        .iter()
        .find(|g| g.models.iter().any(|m| m == model))
        .or_else(|| groups.iter().find(|g| g.models.is_empty()))
        .map(|g| g.name.as_str())
}

/// For each of `claimants` (jobs left without a cluster and not preempting), the borrowers'
/// attempts of `running` whose eviction gives it back GPUs of its nominal quota and lets it fit
/// one cluster, if any. `model_of` maps a running job (`namespace/name`) to the model its attempt
/// runs on (which quota group it counts in); `taken` are the GPUs the pass had taken. Claimants
/// are looked at by priority, then order, then key, at most [`MAX_PREEMPTORS`]; an attempt is
/// evicted for one claimant only. Victims are a subset of what `reclaim_victims` allows, so a
/// borrower never falls below its nominal quota and the policy is respected.
#[allow(clippy::too_many_arguments)]
pub fn plan_reclaims(
    claimants: &[JobRequest],
    quotas: &[NamespaceQuota],
    clusters: &[ClusterState],
    taken: &[Reservation],
    running: &[Running],
    model_of: &HashMap<String, String>,
    policy: ReclaimPolicy,
    placement: &Policy,
) -> Result<Vec<Reclaim>, ScheduleError> {
    if policy == ReclaimPolicy::Never {
        return Ok(vec![]);
    }
    let order = gpufed_scheduler::input::queue_order(claimants);
    let mut claimed: Vec<Reservation> = taken.to_vec();
    let mut gone: Vec<&Running> = vec![];
    let mut evicted: BTreeSet<(String, u32)> = BTreeSet::new();
    let mut out = vec![];
    for job in order.into_iter().take(MAX_PREEMPTORS) {
        job.validate()?;
        let ns = namespace_of(&job.key);
        let Some(own) = quotas
            .iter()
            .find(|q| q.namespace == ns && q.cohort.is_some())
        else {
            continue;
        };
        let gpus = u64::from(job.replicas) * u64::from(job.gpus_per_replica);
        let mut found: Option<Reclaim> = None;
        for group in own.groups.iter().filter(|g| {
            g.models.is_empty()
                || job.models.is_empty()
                || g.models.iter().any(|m| job.models.contains(m))
        }) {
            let in_group: Vec<Running> = running
                .iter()
                .filter(|r| !evicted.contains(&(r.job.clone(), r.attempt)))
                .filter(|r| {
                    model_of.get(&r.job).is_some_and(|m| {
                        group_of(quotas, namespace_of(&r.job), m) == Some(group.name.as_str())
                    })
                })
                .cloned()
                .collect();
            for shortfall in 1..=gpus {
                let claim = Claim {
                    job: &job.key,
                    priority: job.priority,
                    group: &group.name,
                    gpus,
                    shortfall,
                };
                let Some(victims) = reclaim_victims(&claim, quotas, &in_group, policy) else {
                    continue;
                };
                found = fit_on_one_cluster(
                    job, clusters, &claimed, &gone, &in_group, &victims, placement,
                )?
                .map(|(plan, why)| Reclaim { plan, why, policy });
                if found.is_some() {
                    break;
                }
            }
            if found.is_some() {
                break;
            }
        }
        let Some(r) = found else {
            continue;
        };
        for v in &r.plan.victims {
            evicted.insert((v.job.clone(), v.attempt));
            if let Some(run) = running
                .iter()
                .find(|x| x.job == v.job && x.attempt == v.attempt)
            {
                gone.push(run);
            }
        }
        claimed.extend(
            r.plan
                .assignment
                .nodes
                .iter()
                .map(|(node, replicas)| Reservation {
                    cluster: r.plan.assignment.cluster.clone(),
                    node: node.clone(),
                    gpus: replicas.saturating_mul(job.gpus_per_replica),
                }),
        );
        out.push(r);
    }
    Ok(out)
}

/// The first cluster (fewest GPUs evicted, then name) where evicting the `victims` that run there
/// lets `job` fit, with `gone` gone and `claimed` taken.
fn fit_on_one_cluster(
    job: &JobRequest,
    clusters: &[ClusterState],
    claimed: &[Reservation],
    gone: &[&Running],
    running: &[Running],
    victims: &[Reclaimed],
    placement: &Policy,
) -> Result<Option<(Preempt, Vec<Reclaimed>)>, ScheduleError> {
    let mut best: Option<(u64, Preempt, Vec<Reclaimed>)> = None;
    for cluster in clusters {
        let here: Vec<(&Running, &Reclaimed)> = victims
            .iter()
            .filter_map(|v| {
                running
                    .iter()
                    .find(|r| r.job == v.job && r.attempt == v.attempt && r.cluster == cluster.name)
                    .map(|r| (r, v))
            })
            .collect();
        if here.is_empty() {
            continue;
        }
        let all: Vec<&Running> = gone
            .iter()
            .copied()
            .chain(here.iter().map(|(r, _)| *r))
            .collect();
        let copy = [freed(cluster, &all)];
        let held: Vec<Reservation> = claimed
            .iter()
            .filter(|r| r.cluster == cluster.name)
            .cloned()
            .collect();
        let Decision::Place(assignment) = Scheduler::new(&copy, &held, placement)?.place(job)?
        else {
            continue;
        };
        let evicting: u64 = here.iter().map(|(r, _)| r.gpus()).sum();
        if best
            .as_ref()
            .is_some_and(|(b, p, _)| (*b, p.cluster.as_str()) <= (evicting, cluster.name.as_str()))
        {
            continue;
        }
        let plan = Preempt {
            job: job.key.clone(),
            cluster: cluster.name.clone(),
            victims: here
                .iter()
                .map(|(r, _)| Victim {
                    job: r.job.clone(),
                    attempt: r.attempt,
                    priority: r.priority,
                    gpus: r.gpus(),
                })
                .collect(),
            assignment,
        };
        best = Some((
            evicting,
            plan,
            here.iter().map(|(_, v)| (*v).clone()).collect(),
        ));
    }
    Ok(best.map(|(_, p, w)| (p, w)))
}

/// Why a job that fits its namespace's nominal quota still has no room, when other namespaces of
/// its cohort borrowed that quota: `team-a is within its nominal quota of 8 GPUs in group all,
/// lent within cohort research: team-b holds 16 GPUs, 8 beyond its nominal 8; the pool's
/// reclaimWithinCohort is Never: lent GPUs come back only as the borrowers' jobs end`, with a
/// fingerprint of the namespaces and group named (so the text is rewritten when they change, not
/// when the counts do). `None` when no borrowing stands in the job's way. `usage`: the GPUs each
/// namespace holds by model.
pub fn borrowing_note(
    job: &JobRequest,
    quotas: &[NamespaceQuota],
    usage: &[Usage],
    policy: ReclaimPolicy,
) -> Option<(String, u64)> {
    let ns = namespace_of(&job.key);
    let own = quotas.iter().find(|q| q.namespace == ns)?;
    let cohort = own.cohort.as_deref()?;
    let gpus = u64::from(job.replicas) * u64::from(job.gpus_per_replica);
    let used = |namespace: &str, group: &str| -> u64 {
        usage
            .iter()
            .filter(|u| u.namespace == namespace)
            .filter(|u| group_of(quotas, namespace, &u.model) == Some(group))
            .map(|u| u.gpus)
            .sum()
    };
    for group in own.groups.iter().filter(|g| {
        g.models.is_empty()
            || job.models.is_empty()
            || g.models.iter().any(|m| job.models.contains(m))
    }) {
        if used(ns, &group.name).saturating_add(gpus) > group.nominal {
            continue;
        }
        let borrowers: Vec<(String, String)> = quotas
            .iter()
            .filter(|q| q.namespace != ns && q.cohort.as_deref() == Some(cohort))
            .filter_map(|q| {
                let nominal = q.groups.iter().find(|g| g.name == group.name)?.nominal;
                let holds = used(&q.namespace, &group.name);
                (holds > nominal).then(|| {
                    (
                        q.namespace.clone(),
                        format!(
                            "{} holds {holds} GPUs, {} beyond its nominal {nominal}",
                            q.namespace,
                            holds - nominal
                        ),
                    )
                })
            })
            .collect();
        if borrowers.is_empty() {
            continue;
        }
        let why = match policy {
            ReclaimPolicy::Never => {
                "the pool's reclaimWithinCohort is Never: lent GPUs come back only as the \
                 borrowers' jobs end"
            }
            ReclaimPolicy::LowerPriority => {
                "the pool's reclaimWithinCohort is LowerPriority and no borrowed attempt of lower \
                 priority frees room on one cluster"
            }
            ReclaimPolicy::Any => {
                "reclaimWithinCohort is Any but no borrowed attempt the borrowers can spare frees \
                 room on one cluster"
            }
        };
        let texts: Vec<&str> = borrowers.iter().map(|(_, t)| t.as_str()).collect();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for part in
            std::iter::once(group.name.as_str()).chain(borrowers.iter().map(|(n, _)| n.as_str()))
        {
            for b in part.bytes().chain([0]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        return Some((
            format!(
                "{ns} is within its nominal quota of {} GPUs in group {}, lent within cohort \
                 {cohort}: {}; {why}",
                group.nominal,
                group.name,
                texts.join(", "),
            ),
            h,
        ));
    }
    None
}

fn policy_name(policy: ReclaimPolicy) -> &'static str {
    match policy {
        ReclaimPolicy::Never => "Never",
        ReclaimPolicy::LowerPriority => "LowerPriority",
        ReclaimPolicy::Any => "Any",
    }
}

/// What a reclaimed attempt says: `lent quota reclaimed by team-a/urgent (reclaimWithinCohort:
/// Any): team-b borrowed 2 GPUs beyond its nominal 2 in cohort research; team-a/urgent needs 2
/// GPUs of team-a's nominal quota on alpha; stopping with a 30s grace period`.
pub fn victim_message(r: &Reclaim, why: &Reclaimed, gpus: u64, grace: u32) -> String {
    format!(
        "lent quota reclaimed by {} (reclaimWithinCohort: {}): {} borrowed {} GPUs beyond its \
         nominal {} in cohort {}; {} needs {gpus} GPUs of {}'s nominal quota on {}; stopping with \
         a {grace}s grace period",
        r.plan.job,
        policy_name(r.policy),
        why.borrower,
        why.borrowed,
        why.nominal,
        why.cohort,
        r.plan.job,
        why.claimant,
        r.plan.cluster,
    )
}

/// What the claimant's explanation says while its victims stop: `no cluster has room as things
/// stand; reclaiming 2 GPUs of team-a's nominal quota lent within cohort research
/// (reclaimWithinCohort: Any) on alpha: team-b/low attempt 1 (team-b borrowed 2 GPUs, 2 GPUs), …;
/// placed once they stop (grace 30s, ADR 0025)`.
pub fn claimant_text(r: &Reclaim, grace: Duration) -> String {
    let victims: Vec<String> = r
        .why
        .iter()
        .map(|v| {
            format!(
                "{} attempt {} (priority {}, {} GPU{}; {} borrowed {} beyond its nominal {})",
                v.job,
                v.attempt,
                v.priority,
                v.gpus,
                if v.gpus == 1 { "" } else { "s" },
                v.borrower,
                v.borrowed,
                v.nominal,
            )
        })
        .collect();
    let freed = r.plan.freed_gpus();
    let (claimant, cohort) = r
        .why
        .first()
        .map(|v| (v.claimant.as_str(), v.cohort.as_str()))
        .unwrap_or_default();
    format!(
        "no cluster has room as things stand; reclaiming {freed} GPU{} of {claimant}'s nominal \
         quota lent within cohort {cohort} (reclaimWithinCohort: {}) on {}: {}; placed once they \
         stop (grace {}s, ADR 0025)",
        if freed == 1 { "" } else { "s" },
        policy_name(r.policy),
        r.plan.cluster,
        victims.join(", "),
        grace.as_secs(),
    )
}
