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
//! frees is taken at once by some small job. So the oldest job of the highest priority that fits
//! nowhere now, but would fit if the pool were empty, becomes the *holder*: the nodes it would be
//! placed on in an empty pool are held for it (no other job is placed on them) while their running
//! attempts end, and it is decided before every other job of the pass. The hub remembers the holder
//! between passes and passes it back in, so the held nodes do not move while it waits (the empty-pool
//! placement is a function of the inventory, not of what is free). Its wait, once it holds, is
//! bounded by the longest remaining `maxDuration` of the attempts on its held nodes, plus one pass;
//! a job of a higher priority takes the hold over.

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

/// A namespace's GPUs by model, and how its weighted dominant share compares with another's.
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

    fn cmp(&self, other: &Fraction) -> Ordering {
        (self.num * other.den).cmp(&(other.num * self.den))
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
            den: f.den * u128::from(weight.max(1)),
        }
    }
}

/// Most queue heads looked at when choosing a new holder: jobs that fit nowhere even in an empty
/// pool are skipped, and this bounds the work they cost a pass.
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

    let now = Scheduler::new(clusters, reservations, policy)?;
    let hold = choose_hold(jobs, &levels, clusters, policy, quotas, &now, holder)?;
    let mut held = reservations.to_vec();
    if let Some(h) = &hold {
        held.extend(h.nodes.iter().map(|(node, _)| Reservation {
            cluster: h.cluster.clone(),
            node: node.clone(),
            gpus: u32::MAX,
        }));
    }
    let mut scheduler = Scheduler::new(clusters, &held, policy)?;
    let mut pass = FairPass::default();
    let mut decide = |job: &JobRequest,
                      scheduler: &mut Scheduler<'_>,
                      holdings: &mut BTreeMap<String, Holding>|
     -> Result<(String, Decision), ScheduleError> {
        let decision = place_within_quota(scheduler, job, quotas, |s, j| s.place(j))?;
        if let Decision::Place(a) = &decision {
            *holdings
                .entry(namespace_of(&job.key).to_string())
                .or_default()
                .by_model
                .entry(a.model.clone())
                .or_default() += job.total_gpus();
        }
        Ok((job.key.clone(), decision))
    };

    // The holder is decided before anyone else: on its held nodes, or, when nothing needs holding
    // any more, on the GPUs that just freed, before another job can take them.
    let first = match (&hold, holder) {
        (Some(h), _) => Some(h.job.as_str()),
        (None, Some(key)) => Some(key),
        (None, None) => None,
    }
    .and_then(|key| jobs.iter().find(|j| j.key == key))
    .filter(|job| is_head_level(job, &levels));
    if let Some(job) = first {
        let out = decide(job, &mut scheduler, &mut holdings)?;
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
            let out = decide(job, &mut scheduler, &mut holdings)?;
            pass.decisions.push(out);
        }
    }
    // The holder stays held only if it is still waiting.
    pass.hold = hold.filter(|h| {
        pass.decisions
            .iter()
            .any(|(k, d)| k == &h.job && !matches!(d, Decision::Place(_)))
    });
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
        dominant_per_mille: u64::try_from(f.num * 1000 / f.den.max(1)).unwrap_or(u64::MAX),
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

/// The hold for this pass: the previous holder if it is still of the top priority, still waits and
/// still fits an empty pool; else the first job of the top priority, oldest first, that fits nowhere
/// now but would in an empty pool (jobs over quota or that never fit are skipped).
fn choose_hold(
    jobs: &[JobRequest],
    levels: &BTreeMap<std::cmp::Reverse<i32>, BTreeMap<&str, Vec<&JobRequest>>>,
    clusters: &[ClusterState],
    policy: &Policy,
    quotas: &QuotaBook,
    now: &Scheduler<'_>,
    holder: Option<&str>,
) -> Result<Option<Hold>, ScheduleError> {
    let Some((_, top)) = levels.iter().next() else {
        return Ok(None);
    };
    let mut heads: Vec<&JobRequest> = top.values().flatten().copied().collect();
    heads.sort_by(|a, b| a.order.cmp(&b.order).then(a.key.cmp(&b.key)));
    if let Some(key) = holder
        && let Some(job) = jobs.iter().find(|j| j.key == key)
        && is_head_level(job, levels)
    {
        // The previous holder keeps its place at the head whatever its age.
        heads.retain(|j| j.key != key);
        heads.insert(0, job);
    }
    let mut empty: Option<Vec<ClusterState>> = None;
    for job in heads.into_iter().take(HOLDER_CANDIDATES) {
        let narrowed = match quotas.admit(job) {
            Err(_) => continue,
            Ok(Some(models)) => JobRequest {
                models,
                ..job.clone()
            },
            Ok(None) => job.clone(),
        };
        if let Decision::Place(_) = now.evaluate(&narrowed)? {
            // The head fits now: no hold (a previous holder is placed first by the caller).
            return Ok(None);
        }
        let empty = empty.get_or_insert_with(|| emptied(clusters));
        if let Decision::Place(a) = Scheduler::new(empty, &[], policy)?.evaluate(&narrowed)? {
            return Ok(Some(Hold {
                job: job.key.clone(),
                cluster: a.cluster,
                model: a.model,
                nodes: a
                    .nodes
                    .into_iter()
                    .map(|(n, r)| (n, r * job.gpus_per_replica))
                    .collect(),
            }));
        }
    }
    Ok(None)
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
