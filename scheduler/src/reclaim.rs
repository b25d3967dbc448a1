//! Reclaiming lent quota within a cohort (ADR 0025, Kueue's `reclaimWithinCohort`): which
//! attempts of *borrowers* a namespace may evict to get GPUs back up to its own nominal quota.
//!
//! Preemption by class ([`crate::preempt`]) only evicts strictly lower priorities, so GPUs a team
//! lent to another team of its cohort come back only as the borrower's jobs end. Reclaim closes
//! that gap, under the pool's [`ReclaimPolicy`]:
//!
//! * the claimant's job must fit its own nominal quota in the group (its GPUs in use plus the
//!   job's stay within `nominal`) — reclaim never helps a namespace borrow;
//! * victims are attempts of *other* namespaces of the claimant's cohort that hold more GPUs in
//!   the group than their nominal quota (borrowers); a namespace within its nominal quota is never
//!   a victim, and a borrower is never driven below its nominal quota: an attempt whose eviction
//!   would take its namespace below nominal is skipped;
//! * candidates are taken lowest priority first, then youngest (latest `started`) first, as whole
//!   attempts (a gang's replicas go together), until the GPUs freed cover the shortfall;
//! * [`ReclaimPolicy::LowerPriority`] only takes attempts of lower priority than the claimant's
//!   job, [`ReclaimPolicy::Any`] any priority, [`ReclaimPolicy::Never`] (the default) none.
//!
//! This module decides only *whose* GPUs may be taken back; where the claimant then fits is the
//! placement's business (the caller passes the shortfall: GPUs of the group it lacks).

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::fmt;

use crate::preempt::Running;
use crate::quota::{NamespaceQuota, namespace_of};

/// When a namespace may evict borrowers of its cohort to get its nominal quota back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReclaimPolicy {
    /// Never: lent quota comes back only as the borrower's jobs end (the behaviour before).
    #[default]
    Never,
    /// Only attempts of strictly lower priority than the claimant's job.
    LowerPriority,
    /// Attempts of any priority.
    Any,
}

/// A claimant: a pending job asking for GPUs within its namespace's nominal quota.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim<'a> {
    /// The job, `namespace/name`.
    pub job: &'a str,
    /// Its priority.
    pub priority: i32,
    /// The quota group its GPUs count in.
    pub group: &'a str,
    /// GPUs the job needs, all replicas.
    pub gpus: u64,
    /// GPUs of the group it lacks now (free GPUs it could use already subtracted).
    pub shortfall: u64,
}

/// An attempt to evict to reclaim quota, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reclaimed {
    /// The victim job, `namespace/name`.
    pub job: String,
    /// Its attempt.
    pub attempt: u32,
    /// Its priority.
    pub priority: i32,
    /// GPUs it frees.
    pub gpus: u64,
    /// The claimant's namespace.
    pub claimant: String,
    /// The borrower's namespace.
    pub borrower: String,
    /// GPUs the borrower held beyond its nominal quota before this plan.
    pub borrowed: u64,
    /// The borrower's nominal quota in the group.
    pub nominal: u64,
    /// The cohort.
    pub cohort: String,
}

impl fmt::Display for Reclaimed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "reclaimed by {}'s quota: {} borrowed {} GPUs beyond its nominal {} in cohort {}",
            self.claimant, self.borrower, self.borrowed, self.nominal, self.cohort
        )
    }
}

/// The borrowers' attempts `claim` may evict under `policy`, freeing at least its shortfall, or
/// `None` when reclaim does not apply or cannot free enough. `running` are the attempts holding
/// GPUs of the claim's group now (one entry per attempt, a gang whole); `quotas` the pool's
/// namespace quotas. Victims come lowest priority first, then youngest first.
pub fn reclaim_victims(
    claim: &Claim<'_>,
    quotas: &[NamespaceQuota],
    running: &[Running],
    policy: ReclaimPolicy,
) -> Option<Vec<Reclaimed>> {
    if policy == ReclaimPolicy::Never || claim.shortfall == 0 {
        return None;
    }
    let claimant = namespace_of(claim.job);
    let nominal_of = |ns: &str| -> Option<(Option<&str>, u64)> {
        quotas.iter().find(|q| q.namespace == ns).and_then(|q| {
            q.groups
                .iter()
                .find(|g| g.name == claim.group)
                .map(|g| (q.cohort.as_deref(), g.nominal))
        })
    };
    let (Some(cohort), own_nominal) = nominal_of(claimant)? else {
        return None;
    };
    let mut used: BTreeMap<&str, u64> = BTreeMap::new();
    for r in running {
        *used.entry(namespace_of(&r.job)).or_default() += r.gpus();
    }
    let own_used = used.get(claimant).copied().unwrap_or(0);
    if own_used.saturating_add(claim.gpus) > own_nominal {
        return None;
    }
    let mut candidates: Vec<&Running> = running
        .iter()
        .filter(|r| {
            let ns = namespace_of(&r.job);
            ns != claimant
                && matches!(nominal_of(ns), Some((Some(c), nominal))
                    if c == cohort && used.get(ns).copied().unwrap_or(0) > nominal)
                && (policy == ReclaimPolicy::Any || r.priority < claim.priority)
        })
        .collect();
    candidates.sort_by_key(|r| (r.priority, Reverse(r.started), r.job.clone(), r.attempt));
    let mut left: BTreeMap<&str, u64> = used.clone();
    let mut freed = 0u64;
    let mut victims = Vec::new();
    for r in candidates {
        if freed >= claim.shortfall {
            break;
        }
        let ns = namespace_of(&r.job);
        let Some((_, nominal)) = nominal_of(ns) else {
            continue;
        };
        let holds = left.get(ns).copied().unwrap_or(0);
        if holds.saturating_sub(r.gpus()) < nominal {
            continue;
        }
        left.insert(ns, holds - r.gpus());
        freed = freed.saturating_add(r.gpus());
        victims.push(Reclaimed {
            job: r.job.clone(),
            attempt: r.attempt,
            priority: r.priority,
            gpus: r.gpus(),
            claimant: claimant.to_string(),
            borrower: ns.to_string(),
            borrowed: used.get(ns).copied().unwrap_or(0).saturating_sub(nominal),
            nominal,
            cohort: cohort.to_string(),
        });
    }
    (freed >= claim.shortfall).then_some(victims)
}

#[cfg(test)]
mod tests;
