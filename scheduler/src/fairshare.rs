//! Fair share between tenant namespaces, and a hold for the head of the queue so that a large gang
//! is never starved by a stream of small jobs (ADR 0025).
//!
//! **Order.** Jobs of a higher priority are still decided first. Among jobs of one priority the
//! pass fills progressively (dominant-resource fair sharing): it repeatedly takes the namespace
//! whose *weighted dominant share* is lowest and decides its oldest job, counting each placement
//! before the next pick. A namespace's dominant share is the largest fraction it holds of any GPU
//! model's capacity in the pool (each model is one resource); dividing by its weight lets the pool
//! admin give a team twice the share of another. When supply exceeds demand every job is placed
//! anyway and the order does not matter; when it does not, GPUs go to the namespaces furthest below
//! their share.
//!
//! **Hold.** Fair order alone can starve a gang that needs a whole node (or many): every GPU that
//! frees is taken at once by some small job. So the first job in the pass's order that fits no
//! free node, but would fit if the pool were empty, becomes the *holder*: the nodes it would be
//! placed on in an empty pool are held for it (no later job of the pass is placed on them) while
//! their running attempts end. The hub remembers the holder between passes and passes it back in;
//! while it is of the highest priority waiting it is decided before every other job, so it keeps
//! its nodes (the empty-pool placement depends on the inventory, not on what is free) and takes
//! them as soon as they are free. Its wait, once it holds, is bounded by the longest remaining
//! `maxDuration` of the attempts on its held nodes, plus one pass. The holder is chosen in fair
//! order, not by age, so holding never hands a full pool back to first come, first served: in a
//! full pool the next free GPUs go to the job fair share would pick anyway. A job of one GPU never
//! holds: a GPU frees whole, so no stream of small jobs can take part of what it needs, and fair
//! order alone serves it. Holding for it would only let it take a GPU out of fair order whenever
//! the shares moved after the hold was chosen (a decision write that lost a race and gave its GPU
//! back: the next pass handed that GPU to the holder, not to the namespace now furthest below its
//! share).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::decision::Decision;
use crate::error::ScheduleError;
use crate::input::{ClusterState, JobRequest, Policy, Reservation};
use crate::quota::{QuotaBook, Usage, namespace_of};
use crate::scheduler::{Scheduler, place_within_quota};

/// The pool's fair-share settings: a weight per namespace (default 1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FairShare {
    /// Weight by namespace; a namespace not listed weighs 1. A weight of 0 counts as 1.
    pub weights: BTreeMap<String, u32>,
}

impl FairShare {
    /// The weight of `namespace` (at least 1).
    pub fn weight(&self, namespace: &str) -> u32 {
        self.weights.get(namespace).copied().unwrap_or(1).max(1)
    }
}

/// One namespace's share of the pool after a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    /// The namespace.
    pub namespace: String,
    /// Its weight.
    pub weight: u32,
    /// GPUs it holds, all models.
    pub gpus: u64,
    /// The model of its dominant share (`None` when it holds no GPU of a model the pool offers).
    pub dominant_model: Option<String>,
    /// Its dominant share in thousandths of that model's capacity (rounded down), before weight.
    pub dominant_per_mille: u64,
}

/// The nodes held for the head of the queue while their attempts end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// The job the nodes are held for (`namespace/name`).
    pub job: String,
    /// The cluster they are on.
    pub cluster: String,
    /// The model the job would run on there.
    pub model: String,
    /// The nodes held, with the GPUs the job would use on each.
    pub nodes: Vec<(String, u32)>,
}

/// What the pool holds before a pass: every namespace's GPUs (all namespaces, with a quota or not)
/// and the job that held nodes after the previous pass.
#[derive(Clone, Copy, Debug, Default)]
pub struct Before<'a> {
    /// GPUs each namespace holds, by model.
    pub usage: &'a [Usage],
    /// The previous pass's [`Hold::job`], which the hub remembers.
    pub holder: Option<&'a str>,
}

/// What a fair pass decided.
#[derive(Clone, Debug, Default)]
pub struct FairPass {
    /// Every job's decision, in the order they were decided.
    pub decisions: Vec<(String, Decision)>,
    /// The hold for the head of the queue, if one is needed after this pass.
    pub hold: Option<Hold>,
    /// Each namespace's share after the pass: those holding GPUs or with jobs in the batch.
    pub shares: Vec<Share>,
}

/// A namespace's GPUs by model.
#[derive(Clone, Debug, Default)]
struct Holding {
    by_model: BTreeMap<String, u64>,
}

/// Capacity of each model in the pool: healthy allocatable GPUs of ready nodes of ready, uncordoned
/// clusters that price the model.
fn capacity(clusters: &[ClusterState]) -> HashMap<String, u64> {
    let mut cap: HashMap<String, u64> = HashMap::new();
    for c in clusters.iter().filter(|c| c.ready && !c.cordoned) {
        for n in c.nodes.iter().filter(|n| n.ready) {
            if c.prices.contains_key(&n.model) {
                *cap.entry(n.model.clone()).or_default() +=
                    u64::from(n.allocatable_gpus.saturating_sub(n.unhealthy_gpus));
            }
        }
    }
    cap
}

/// A share as the fraction `num / den` (exact, compared by cross-multiplication).
#[derive(Clone, Copy, Debug)]
struct Fraction {
    num: u128,
    den: u128,
}

impl Fraction {
    const ZERO: Fraction = Fraction { num: 0, den: 1 };

    /// GPU counts and capacities are far below 2^40 and weights at most 1000, so the products fit
    /// a `u128`; saturating keeps absurd inputs from overflowing.
    fn cmp(&self, other: &Fraction) -> Ordering {
        (self.num.saturating_mul(other.den)).cmp(&other.num.saturating_mul(self.den))
    }
}

impl Holding {
    /// The dominant share and its model: the largest `held / capacity` over models with capacity.
    fn dominant(&self, cap: &HashMap<String, u64>) -> (Fraction, Option<&str>) {
        let mut best = (Fraction::ZERO, None);
        for (model, &held) in &self.by_model {
            let Some(&c) = cap.get(model).filter(|c| **c > 0) else {
                continue;
            };
            let f = Fraction {
                num: u128::from(held),
                den: u128::from(c),
            };
            if held > 0 && f.cmp(&best.0) == Ordering::Greater {
                best = (f, Some(model.as_str()));
            }
        }
        best
    }

    /// The dominant share divided by `weight`.
    fn weighted(&self, cap: &HashMap<String, u64>, weight: u32) -> Fraction {
        let (f, _) = self.dominant(cap);
        Fraction {
            num: f.num,
            den: f.den.saturating_mul(u128::from(weight.max(1))),
        }
    }
}

/// Most jobs that fit no free node looked at, per pass, for one that would fit an empty pool:
/// jobs that fit nowhere even then are skipped, and this bounds the work they cost a pass.
const HOLDER_CANDIDATES: usize = 16;

/// Places a batch in fair-share order (see the module docs) with the quota filter of
/// [`crate::schedule_batch_with_quotas`], given what the pool holds `before` the pass.
/// Each placement is charged to `quotas` and to its namespace's share before the next job is
/// decided. Every job is checked before any is placed, so an error leaves nothing half-done.
pub fn schedule_batch_fair(
    jobs: &[JobRequest],
    clusters: &[ClusterState],
    reservations: &[Reservation],
    policy: &Policy,
    quotas: &mut QuotaBook,
    fair: &FairShare,
    before: Before<'_>,
) -> Result<FairPass, ScheduleError> {
    let Before { usage, holder } = before;
    let mut keys = BTreeSet::new();
    for job in jobs {
        job.validate()?;
        if !keys.insert(job.key.as_str()) {
            return Err(ScheduleError::DuplicateJob {
                key: job.key.clone(),
            });
        }
    }
    let cap = capacity(clusters);
    let mut holdings: BTreeMap<String, Holding> = BTreeMap::new();
    for u in usage {
        *holdings
            .entry(u.namespace.clone())
            .or_default()
            .by_model
            .entry(u.model.clone())
            .or_default() += u.gpus;
    }
    // Priority levels, highest first; in each, every namespace's jobs oldest first.
    let mut levels: BTreeMap<std::cmp::Reverse<i32>, BTreeMap<&str, Vec<&JobRequest>>> =
        BTreeMap::new();
    for job in jobs {
        levels
            .entry(std::cmp::Reverse(job.priority))
            .or_default()
            .entry(namespace_of(&job.key))
            .or_default()
            .push(job);
        holdings
            .entry(namespace_of(&job.key).to_string())
            .or_default();
    }
    for level in levels.values_mut() {
        for queue in level.values_mut() {
            queue.sort_by(|a, b| a.order.cmp(&b.order).then(a.key.cmp(&b.key)));
        }
    }

    let mut scheduler = Scheduler::new(clusters, reservations, policy)?;
    let mut pass = FairPass::default();
    let mut hold: Option<Hold> = None;
    let mut empty: Option<Vec<ClusterState>> = None;
    let mut looked = 0usize;
    let mut decide = |job: &JobRequest,
                      scheduler: &mut Scheduler<'_>,
                      holdings: &mut BTreeMap<String, Holding>,
                      hold: &mut Option<Hold>|
     -> Result<(String, Decision), ScheduleError> {
        let decision = place_within_quota(scheduler, job, quotas, |s, j| s.place(j))?;
        match &decision {
            Decision::Place(a) => {
                *holdings
                    .entry(namespace_of(&job.key).to_string())
                    .or_default()
                    .by_model
                    .entry(a.model.clone())
                    .or_default() += job.total_gpus();
            }
            Decision::NoFit(_)
                if hold.is_none() && looked < HOLDER_CANDIDATES && job.total_gpus() > 1 =>
            {
                // The first job of more than one GPU in this order that fits no free node but
                // would fit an empty pool holds the nodes it would use there, for the rest of the
                // pass and the next ones.
                looked += 1;
                let empty = empty.get_or_insert_with(|| emptied(clusters));
                if let Some(h) = hold_for(job, quotas, empty, policy)? {
                    let nodes: Vec<&str> = h.nodes.iter().map(|(n, _)| n.as_str()).collect();
                    scheduler.index.hold(&h.cluster, &nodes);
                    *hold = Some(h);
                }
            }
            _ => {}
        }
        Ok((job.key.clone(), decision))
    };

    // The previous holder is decided before anyone else, while it is of the highest priority
    // waiting: on the GPUs of its nodes that just freed, before another job can take them, or it
    // holds them again.
    let first = holder
        .and_then(|key| jobs.iter().find(|j| j.key == key))
        .filter(|job| is_head_level(job, &levels));
    if let Some(job) = first {
        let out = decide(job, &mut scheduler, &mut holdings, &mut hold)?;
        pass.decisions.push(out);
    }
    let first = first.map(|j| j.key.as_str());

    for level in levels.values() {
        let mut queues: BTreeMap<&str, VecDeque<&JobRequest>> = level
            .iter()
            .map(|(ns, q)| {
                (
                    *ns,
                    q.iter()
                        .copied()
                        .filter(|j| Some(j.key.as_str()) != first)
                        .collect(),
                )
            })
            .filter(|(_, q): &(&str, VecDeque<&JobRequest>)| !q.is_empty())
            .collect();
        while let Some(ns) = lowest_share(&queues, &holdings, &cap, fair) {
            let Some(job) = queues.get_mut(ns).and_then(|q| q.pop_front()) else {
                break;
            };
            if queues.get(ns).is_some_and(|q| q.is_empty()) {
                queues.remove(ns);
            }
            let out = decide(job, &mut scheduler, &mut holdings, &mut hold)?;
            pass.decisions.push(out);
        }
    }
    pass.hold = hold;
    pass.shares = holdings
        .iter()
        .map(|(ns, h)| share_of(ns, h, &cap, fair))
        .collect();
    Ok(pass)
}

/// Each namespace's share of a pool whose capacity per model is `capacity` and whose namespaces
/// hold `usage`, in namespace order (what the pool status shows between passes).
pub fn shares(capacity: &HashMap<String, u64>, usage: &[Usage], fair: &FairShare) -> Vec<Share> {
    let mut holdings: BTreeMap<String, Holding> = BTreeMap::new();
    for u in usage {
        *holdings
            .entry(u.namespace.clone())
            .or_default()
            .by_model
            .entry(u.model.clone())
            .or_default() += u.gpus;
    }
    holdings
        .iter()
        .map(|(ns, h)| share_of(ns, h, capacity, fair))
        .collect()
}

fn share_of(ns: &str, h: &Holding, cap: &HashMap<String, u64>, fair: &FairShare) -> Share {
    let (f, model) = h.dominant(cap);
    Share {
        namespace: ns.to_string(),
        weight: fair.weight(ns),
        gpus: h.by_model.values().sum(),
        dominant_model: model.map(str::to_string),
        dominant_per_mille: u64::try_from(f.num.saturating_mul(1000) / f.den.max(1))
            .unwrap_or(u64::MAX),
    }
}

/// Whether `job` is of the highest priority in the batch.
fn is_head_level(
    job: &JobRequest,
    levels: &BTreeMap<std::cmp::Reverse<i32>, BTreeMap<&str, Vec<&JobRequest>>>,
) -> bool {
    levels
        .keys()
        .next()
        .is_some_and(|top| top.0 == job.priority)
}

/// The namespace with a job left whose weighted dominant share is lowest; ties go to the name.
fn lowest_share<'n>(
    queues: &BTreeMap<&'n str, VecDeque<&JobRequest>>,
    holdings: &BTreeMap<String, Holding>,
    cap: &HashMap<String, u64>,
    fair: &FairShare,
) -> Option<&'n str> {
    let empty = Holding::default();
    queues
        .keys()
        .map(|ns| {
            let h = holdings.get(*ns).unwrap_or(&empty);
            (*ns, h.weighted(cap, fair.weight(ns)))
        })
        .min_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(b.0)))
        .map(|(ns, _)| ns)
}

/// The hold for `job`, which fits no free node: the nodes it would be placed on in the `empty`
/// pool, on the models its quota has room for; `None` if it fits no empty pool either.
fn hold_for(
    job: &JobRequest,
    quotas: &QuotaBook,
    empty: &[ClusterState],
    policy: &Policy,
) -> Result<Option<Hold>, ScheduleError> {
    let narrowed = match quotas.admit(job) {
        Err(_) => return Ok(None),
        Ok(Some(models)) => JobRequest {
            models,
            ..job.clone()
        },
        Ok(None) => job.clone(),
    };
    let Decision::Place(a) = Scheduler::new(empty, &[], policy)?.evaluate(&narrowed)? else {
        return Ok(None);
    };
    Ok(Some(Hold {
        job: job.key.clone(),
        cluster: a.cluster,
        model: a.model,
        nodes: a
            .nodes
            .into_iter()
            .map(|(n, r)| (n, r * job.gpus_per_replica))
            .collect(),
    }))
}

/// The snapshot with every attempt ended: each node's healthy allocatable GPUs free.
fn emptied(clusters: &[ClusterState]) -> Vec<ClusterState> {
    let mut out = clusters.to_vec();
    for c in &mut out {
        for n in &mut c.nodes {
            n.free_gpus = n.allocatable_gpus;
        }
    }
    out
}

#[cfg(test)]
mod tests;
