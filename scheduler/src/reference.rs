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
use crate::period::{Period, PeriodUsage};
use crate::quota::{GroupQuota, Limit, NamespaceQuota, OverQuota, Usage, namespace_of};
use crate::reason::Reason;
use crate::roster::{bond_issue, mix, name_hash, pair_hash, verification_issue};
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
    /// The job's namespace is over quota.
    OverQuota(Box<OverQuota>),
}

impl From<&Decision> for Expanded {
    fn from(decision: &Decision) -> Expanded {
        match decision {
            Decision::Place(a) => Expanded::Place(a.clone()),
            Decision::NoFit(no_fit) => Expanded::NoFit(no_fit.to_vec()),
            Decision::OverQuota(q) => Expanded::OverQuota(q.clone()),
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
        Reject::Gate(Gate::Verification) | Reject::Unverified => {
            Reason::Verification(verification_issue(&cluster.state.verification))
        }
        Reject::Gate(Gate::Reputation) => Reason::Reputation {
            message: cluster.state.below_floor.clone().unwrap_or_default(),
        },
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
        Reject::Duration { model, .. } => {
            let limits = cluster
                .state
                .durations
                .get(index.model_name(model))
                .copied()
                .unwrap_or_default();
            Reason::Duration {
                model: name(model),
                job_secs: job.max_duration_secs,
                min_secs: limits.min_secs,
                max_secs: limits.max_secs,
            }
        }
        Reject::NodeTooSmall { model, largest } => Reason::NodeTooSmall {
            model: name(model),
            largest,
            per_replica: job.gpus_per_replica,
        },
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

/// [`crate::schedule_batch_with_quotas`] the straightforward way: before each job, every
/// namespace's GPUs held per group and every cohort's sums are recounted from `usage` and the
/// placements made so far in the pass, and each accepted model is checked against them; then the
/// reference search above decides the job on the models that pass.
pub fn schedule_batch_with_quotas(
    jobs: &[JobRequest],
    clusters: &[ClusterState],
    reservations: &[Reservation],
    policy: &Policy,
    quotas: &[NamespaceQuota],
    usage: &[Usage],
) -> Result<Vec<(String, Expanded)>, ScheduleError> {
    schedule_batch_with_period_quotas(
        jobs,
        clusters,
        reservations,
        policy,
        quotas,
        usage,
        (0, &[]),
    )
}

/// [`schedule_batch_with_quotas`] with the period limits counted at `now` from `period_usage`
/// (`(now, period_usage)`): before each job every namespace's and cohort's GPU-seconds and spend
/// in each period are recounted from it and the worst cases of the pass's placements so far.
pub fn schedule_batch_with_period_quotas(
    jobs: &[JobRequest],
    clusters: &[ClusterState],
    reservations: &[Reservation],
    policy: &Policy,
    quotas: &[NamespaceQuota],
    usage: &[Usage],
    (now, period_usage): (u64, &[PeriodUsage]),
) -> Result<Vec<(String, Expanded)>, ScheduleError> {
    let mut held: Vec<Usage> = usage.to_vec();
    let mut spent: Vec<PeriodUsage> = period_usage.to_vec();
    batch_with(jobs, clusters, reservations, policy, |s, job| {
        let ns = namespace_of(&job.key);
        let narrowed = match quota_models(quotas, &held, (now, &spent), job) {
            Err(over) => return Ok(Expanded::OverQuota(over)),
            Ok(models) => JobRequest {
                models,
                ..job.clone()
            },
        };
        Ok(match s.place_with(&narrowed, linear)? {
            Choice::Place { assignment, .. } => {
                held.push(Usage {
                    namespace: ns.to_string(),
                    model: assignment.model.clone(),
                    gpus: job.total_gpus(),
                });
                let mut worst = PeriodUsage {
                    namespace: ns.to_string(),
                    model: assignment.model.clone(),
                    ..PeriodUsage::default()
                };
                for p in Period::ALL {
                    worst.gpu_seconds[p.index()] = worst_seconds(job, p, now);
                    worst.spend[p.index()] = job.max_spend.unwrap_or(0);
                }
                spent.push(worst);
                Expanded::Place(assignment)
            }
            Choice::NoFit { view, banned } => Expanded::NoFit(reasons(&s.index, &view, &banned)),
        })
    })
}

/// The quota of `ns`: its first entry.
fn quota_of<'q>(quotas: &'q [NamespaceQuota], ns: &str) -> Option<&'q NamespaceQuota> {
    quotas.iter().find(|q| q.namespace == ns)
}

/// The group of `q` counting `model`: one naming it, else one naming no model.
fn group_for<'q>(q: &'q NamespaceQuota, model: &str) -> Option<&'q GroupQuota> {
    q.groups
        .iter()
        .find(|g| g.models.iter().any(|m| m == model))
        .or_else(|| q.groups.iter().find(|g| g.models.is_empty()))
}

/// GPUs `ns` holds in its group named `group`, recounted from `held`.
fn held_in(quotas: &[NamespaceQuota], held: &[Usage], ns: &str, group: &str) -> u64 {
    let Some(q) = quota_of(quotas, ns) else {
        return 0;
    };
    held.iter()
        .filter(|u| u.namespace == ns)
        .filter(|u| group_for(q, &u.model).is_some_and(|g| g.name == group))
        .map(|u| u.gpus)
        .sum()
}

/// The job's GPU-seconds from `now` to the end of the period, at most its maxDuration.
fn worst_seconds(job: &JobRequest, p: Period, now: u64) -> u64 {
    let end = p.window(now).1;
    job.total_gpus() * job.max_duration_secs.min(end - now)
}

/// GPU-seconds and spend of `ns` in its group named `group` in `p`, recounted from `spent`.
fn spent_in(
    quotas: &[NamespaceQuota],
    spent: &[PeriodUsage],
    ns: &str,
    group: &str,
    p: Period,
) -> (u64, u128) {
    let Some(q) = quota_of(quotas, ns) else {
        return (0, 0);
    };
    spent
        .iter()
        .filter(|u| u.namespace == ns)
        .filter(|u| group_for(q, &u.model).is_some_and(|g| g.name == group))
        .fold((0, 0), |(s, m), u| {
            (s + u.gpu_seconds[p.index()], m + u.spend[p.index()])
        })
}

/// Why `job` does not fit the period limits of group `g` of `q`, if it does not: the limit and
/// (used, nominal, need, borrowable) GPU-seconds.
fn period_refusal(
    quotas: &[NamespaceQuota],
    spent: &[PeriodUsage],
    now: u64,
    q: &NamespaceQuota,
    g: &GroupQuota,
    job: &JobRequest,
) -> Option<(Limit, [u64; 4])> {
    let pq = g.per_period?;
    let p = pq.period;
    let window = p.window(now);
    let (used, money) = spent_in(quotas, spent, &q.namespace, &g.name, p);
    let need = worst_seconds(job, p, now);
    if let Some(nominal) = pq.gpu_seconds {
        // The cohort's members counting GPU-hours in a group of this name over this period.
        let (mut sum, mut held) = (0u64, 0u64);
        if let Some(c) = &q.cohort {
            let mut seen: Vec<&str> = vec![];
            for member in quotas {
                if seen.contains(&member.namespace.as_str()) {
                    continue;
                }
                seen.push(&member.namespace);
                if member.cohort.as_deref() != Some(c.as_str()) {
                    continue;
                }
                for mg in member.groups.iter().filter(|mg| mg.name == g.name) {
                    if let Some(s) = mg
                        .per_period
                        .filter(|x| x.period == p)
                        .and_then(|x| x.gpu_seconds)
                    {
                        sum += s;
                        held += spent_in(quotas, spent, &member.namespace, &g.name, p).0;
                    }
                }
            }
        }
        let ok = used + need <= nominal || (q.cohort.is_some() && held + need <= sum);
        if !ok {
            let borrowable = sum
                .saturating_sub(held)
                .saturating_sub(nominal.saturating_sub(used));
            let limit = Limit::GpuHours { period: p, window };
            return Some((limit, [used, nominal, need, borrowable]));
        }
    }
    let limit = pq.spend?;
    match job.max_spend {
        Some(m) if money + m <= limit => None,
        need => Some((
            Limit::Spend {
                period: p,
                window,
                spent: money,
                limit,
                need,
            },
            [0; 4],
        )),
    }
}

/// The job's models its quota allows, or the refusal of its first model.
fn quota_models(
    quotas: &[NamespaceQuota],
    held: &[Usage],
    (now, spent): (u64, &[PeriodUsage]),
    job: &JobRequest,
) -> Result<Vec<String>, Box<OverQuota>> {
    let ns = namespace_of(&job.key);
    let Some(q) = quota_of(quotas, ns) else {
        return Ok(job.models.clone());
    };
    let need = job.total_gpus();
    let mut allowed = vec![];
    let mut refusals = vec![];
    for model in &job.models {
        let Some(g) = group_for(q, model) else {
            refusals.push(OverQuota {
                namespace: ns.to_string(),
                group: None,
                model: model.clone(),
                used: 0,
                nominal: 0,
                need,
                cohort: None,
                borrowable: 0,
                limit: Limit::Gpus,
            });
            continue;
        };
        let used = held_in(quotas, held, ns, &g.name);
        // The cohort's members (first entries only), their nominal quotas and GPUs held.
        let (mut cohort_nominal, mut cohort_held) = (0u64, 0u64);
        if let Some(c) = &q.cohort {
            let mut seen: Vec<&str> = vec![];
            for member in quotas {
                if seen.contains(&member.namespace.as_str()) {
                    continue;
                }
                seen.push(&member.namespace);
                if member.cohort.as_deref() != Some(c.as_str()) {
                    continue;
                }
                for mg in member.groups.iter().filter(|mg| mg.name == g.name) {
                    cohort_nominal += mg.nominal;
                }
                cohort_held += held_in(quotas, held, &member.namespace, &g.name);
            }
        }
        let borrowed_after = (used + need).saturating_sub(g.nominal);
        let within_limit = g
            .borrowing_limit
            .is_none_or(|limit| borrowed_after <= limit);
        let ok = used + need <= g.nominal
            || (q.cohort.is_some() && cohort_held + need <= cohort_nominal && within_limit);
        if ok {
            match period_refusal(quotas, spent, now, q, g, job) {
                None => allowed.push(model.clone()),
                Some((limit, [used, nominal, need, borrowable])) => refusals.push(OverQuota {
                    namespace: ns.to_string(),
                    group: Some(g.name.clone()),
                    model: model.clone(),
                    used,
                    nominal,
                    need,
                    cohort: q.cohort.clone(),
                    borrowable,
                    limit,
                }),
            }
        } else {
            let idle = cohort_nominal.saturating_sub(cohort_held);
            let own = g.nominal.saturating_sub(used);
            let mut borrowable = if q.cohort.is_some() {
                idle.saturating_sub(own)
            } else {
                0
            };
            if let Some(limit) = g.borrowing_limit {
                borrowable = borrowable.min(limit.saturating_sub(used.saturating_sub(g.nominal)));
            }
            refusals.push(OverQuota {
                namespace: ns.to_string(),
                group: Some(g.name.clone()),
                model: model.clone(),
                used,
                nominal: g.nominal,
                need,
                cohort: q.cohort.clone(),
                borrowable,
                limit: Limit::Gpus,
            });
        }
    }
    if allowed.is_empty()
        && let Some(first) = refusals.into_iter().next()
    {
        return Err(Box::new(first));
    }
    Ok(allowed)
}
