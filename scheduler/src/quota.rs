//! Quotas: how many GPUs each tenant namespace may hold at once, per group of GPU models, and
//! borrowing of idle quota between the namespaces of a cohort (ADR 0019).
//!
//! The quota filter runs in the same pass as the cluster filters, before them: a job whose
//! namespace has no room in the quota group of an accepted model loses that model for this pass;
//! a job left with no model is [`crate::Decision::OverQuota`]. Every placement of the pass is
//! charged to its namespace's group before the next job is looked at, exactly as its GPUs are taken
//! from the clusters, so a burst of jobs of one namespace never overshoots its quota.
//!
//! A namespace may hold up to its group's `nominal` GPUs whatever its cohort does. Beyond that it
//! borrows: a placement that takes it over nominal is allowed only while the cohort as a whole has
//! that much idle nominal quota left in the group (the cohort's GPUs in use plus the job's stay
//! within the sum of the members' nominal quotas) and, if the group sets one, within its
//! `borrowing_limit`. A lender that wants its quota back always gets room for new jobs up to its
//! nominal quota (its own check does not look at the cohort); borrowed GPUs are not taken back —
//! no preemption here — so until borrowers' jobs end the cohort may hold more than its nominal sum,
//! and no new borrowing happens while it does.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::input::JobRequest;

/// GPUs one namespace may hold in one group of models.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupQuota {
    /// The group's name; groups of the same name in one cohort lend to each other.
    pub name: String,
    /// Models the group counts. Empty: every model no other group of the namespace names.
    pub models: Vec<String>,
    /// GPUs the namespace may always hold in this group.
    pub nominal: u64,
    /// At most this many GPUs beyond `nominal` borrowed from the cohort; `None`: as many as the
    /// cohort has idle.
    pub borrowing_limit: Option<u64>,
}

/// One tenant namespace's quota in a pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceQuota {
    /// The namespace.
    pub namespace: String,
    /// Namespaces of one cohort lend idle quota to each other; `None`: no borrowing.
    pub cohort: Option<String>,
    /// Per group of models. A model no group counts may not be used by the namespace.
    pub groups: Vec<GroupQuota>,
}

/// GPUs a namespace holds of one model (placed or running jobs, and placements in flight).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// The namespace.
    pub namespace: String,
    /// The model the GPUs are of.
    pub model: String,
    /// GPUs held.
    pub gpus: u64,
}

/// Why a job waits for quota rather than for a cluster: the first accepted model's group (in the
/// job's order) and its numbers as the job was decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverQuota {
    /// The job's namespace.
    pub namespace: String,
    /// The group, or `None` when no group of the namespace counts any accepted model.
    pub group: Option<String>,
    /// The first accepted model.
    pub model: String,
    /// GPUs the namespace holds in the group.
    pub used: u64,
    /// The group's nominal quota.
    pub nominal: u64,
    /// GPUs the job needs.
    pub need: u64,
    /// The cohort, if any.
    pub cohort: Option<String>,
    /// GPUs the namespace could borrow now (idle quota of its cohort, within its borrowing limit).
    pub borrowable: u64,
}

impl fmt::Display for OverQuota {
    /// `over quota: namespace team-a holds 8 of its 8 GPUs of group h100 and needs 4 more; cohort
    /// research lends 0 now`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(group) = &self.group else {
            return write!(
                f,
                "over quota: namespace {} has no quota for {} in this pool (the pool admin sets \
                 quotas in the GpuPool's spec.quotas)",
                self.namespace, self.model
            );
        };
        write!(
            f,
            "over quota: namespace {} holds {} of its {} GPUs of group {group} and needs {} more; ",
            self.namespace, self.used, self.nominal, self.need
        )?;
        match &self.cohort {
            Some(c) => write!(f, "cohort {c} lends {} now", self.borrowable),
            None => f.write_str("no cohort to borrow from"),
        }
    }
}

/// Where a job's GPUs are counted: (namespace position, group position).
type Slot = (usize, usize);

/// The quotas of one pool and the GPUs held against them, updated as a pass places jobs.
#[derive(Clone, Debug, Default)]
pub struct QuotaBook {
    quotas: Vec<NamespaceQuota>,
    by_namespace: HashMap<String, usize>,
    /// GPUs held per (namespace, group).
    used: HashMap<Slot, u64>,
    /// (cohort, group name) → (sum of nominal quotas, GPUs held by members).
    cohorts: BTreeMap<(String, String), (u64, u64)>,
}

impl QuotaBook {
    /// The book of `quotas` with `usage` already held. Usage of namespaces without a quota, or of
    /// models no group counts, is ignored. A namespace listed twice keeps its first entry.
    pub fn new(quotas: &[NamespaceQuota], usage: &[Usage]) -> QuotaBook {
        let mut book = QuotaBook::default();
        for q in quotas {
            if book.by_namespace.contains_key(&q.namespace) {
                continue;
            }
            book.by_namespace
                .insert(q.namespace.clone(), book.quotas.len());
            if let Some(c) = &q.cohort {
                for g in &q.groups {
                    let e = book.cohorts.entry((c.clone(), g.name.clone())).or_default();
                    e.0 = e.0.saturating_add(g.nominal);
                }
            }
            book.quotas.push(q.clone());
        }
        for u in usage {
            if let Some(slot) = book.slot(&u.namespace, &u.model) {
                book.charge_slot(slot, u.gpus);
            }
        }
        book
    }

    /// Whether no namespace has a quota (every job passes).
    pub fn is_empty(&self) -> bool {
        self.quotas.is_empty()
    }

    /// The group of `namespace` that counts `model`: `Some(None)` when the namespace has a quota
    /// but no group counts the model, `None` when the namespace has no quota.
    fn group_of(&self, namespace: &str, model: &str) -> Option<(usize, Option<usize>)> {
        let ns = *self.by_namespace.get(namespace)?;
        let groups = &self.quotas.get(ns)?.groups;
        let named = groups
            .iter()
            .position(|g| g.models.iter().any(|m| m == model));
        Some((
            ns,
            named.or_else(|| groups.iter().position(|g| g.models.is_empty())),
        ))
    }

    fn slot(&self, namespace: &str, model: &str) -> Option<Slot> {
        match self.group_of(namespace, model)? {
            (ns, Some(g)) => Some((ns, g)),
            (_, None) => None,
        }
    }

    fn charge_slot(&mut self, (ns, g): Slot, gpus: u64) {
        let used = self.used.entry((ns, g)).or_default();
        *used = used.saturating_add(gpus);
        if let Some(key) = self.cohort_key(ns, g)
            && let Some(e) = self.cohorts.get_mut(&key)
        {
            e.1 = e.1.saturating_add(gpus);
        }
    }

    fn cohort_key(&self, ns: usize, g: usize) -> Option<(String, String)> {
        let q = self.quotas.get(ns)?;
        Some((q.cohort.clone()?, q.groups.get(g)?.name.clone()))
    }

    /// GPUs the namespace holds in the group.
    fn used_in(&self, slot: Slot) -> u64 {
        self.used.get(&slot).copied().unwrap_or(0)
    }

    /// GPUs the namespace of `slot` could take beyond its nominal quota now.
    fn borrowable(&self, (ns, g): Slot) -> u64 {
        let Some(group) = self.quotas.get(ns).and_then(|q| q.groups.get(g)) else {
            return 0;
        };
        let Some((nominal_sum, held)) = self
            .cohort_key(ns, g)
            .and_then(|k| self.cohorts.get(&k).copied())
        else {
            return 0;
        };
        let idle = nominal_sum.saturating_sub(held);
        let used = self.used_in((ns, g));
        // Room under nominal first, then what the cohort has idle beyond it.
        let own = group.nominal.saturating_sub(used);
        let from_cohort = idle.saturating_sub(own);
        match group.borrowing_limit {
            Some(limit) => {
                let borrowed = used.saturating_sub(group.nominal);
                from_cohort.min(limit.saturating_sub(borrowed))
            }
            None => from_cohort,
        }
    }

    /// Whether `need` more GPUs fit the slot: within nominal, or borrowed from idle cohort quota.
    fn admits(&self, slot: Slot, need: u64) -> bool {
        let Some(group) = self.quotas.get(slot.0).and_then(|q| q.groups.get(slot.1)) else {
            return false;
        };
        let after = self.used_in(slot).saturating_add(need);
        if after <= group.nominal {
            return true;
        }
        let own = group.nominal.saturating_sub(self.used_in(slot));
        need.saturating_sub(own) <= self.borrowable(slot)
    }

    /// The job's accepted models that its namespace's quota has room for, in the job's order, or
    /// why none has. `Ok(None)`: every model passes (no quota for the namespace) and the job is
    /// used as it is.
    pub fn admit(&self, job: &JobRequest) -> Result<Option<Vec<String>>, Box<OverQuota>> {
        let namespace = namespace_of(&job.key);
        if !self.by_namespace.contains_key(namespace) {
            return Ok(None);
        }
        let need = job.total_gpus();
        let mut allowed = Vec::with_capacity(job.models.len());
        let mut first_refusal: Option<OverQuota> = None;
        for model in &job.models {
            let Some((ns, group)) = self.group_of(namespace, model) else {
                return Ok(None);
            };
            match group {
                Some(g) if self.admits((ns, g), need) => allowed.push(model.clone()),
                _ if first_refusal.is_some() => {}
                Some(g) => {
                    let q = self.quotas.get(ns);
                    first_refusal = Some(OverQuota {
                        namespace: namespace.to_string(),
                        group: q.and_then(|q| q.groups.get(g)).map(|g| g.name.clone()),
                        model: model.clone(),
                        used: self.used_in((ns, g)),
                        nominal: q
                            .and_then(|q| q.groups.get(g))
                            .map(|g| g.nominal)
                            .unwrap_or(0),
                        need,
                        cohort: q.and_then(|q| q.cohort.clone()),
                        borrowable: self.borrowable((ns, g)),
                    });
                }
                None => {
                    first_refusal = Some(OverQuota {
                        namespace: namespace.to_string(),
                        group: None,
                        model: model.clone(),
                        used: 0,
                        nominal: 0,
                        need,
                        cohort: None,
                        borrowable: 0,
                    });
                }
            }
        }
        match first_refusal {
            Some(refusal) if allowed.is_empty() => Err(Box::new(refusal)),
            _ => Ok(Some(allowed)),
        }
    }

    /// Counts a placement of the job's namespace: `gpus` GPUs of `model`.
    pub fn charge(&mut self, job_key: &str, model: &str, gpus: u64) {
        if let Some(slot) = self.slot(namespace_of(job_key), model) {
            self.charge_slot(slot, gpus);
        }
    }

    /// Per namespace with a quota, per group: (namespace, group, GPUs held, nominal, GPUs
    /// borrowed), in the order the quotas were given.
    pub fn report(&self) -> Vec<QuotaUse> {
        let mut out = vec![];
        for (ns, q) in self.quotas.iter().enumerate() {
            for (g, group) in q.groups.iter().enumerate() {
                let used = self.used_in((ns, g));
                out.push(QuotaUse {
                    namespace: q.namespace.clone(),
                    group: group.name.clone(),
                    used,
                    nominal: group.nominal,
                    borrowed: used.saturating_sub(group.nominal),
                });
            }
        }
        out
    }
}

/// One namespace's use of one quota group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaUse {
    /// The namespace.
    pub namespace: String,
    /// The group.
    pub group: String,
    /// GPUs held.
    pub used: u64,
    /// Nominal quota.
    pub nominal: u64,
    /// GPUs held beyond nominal (borrowed from the cohort).
    pub borrowed: u64,
}

/// The namespace part of a `namespace/name` key (the whole key when it has no `/`).
pub fn namespace_of(key: &str) -> &str {
    key.split_once('/').map_or(key, |(ns, _)| ns)
}

#[cfg(test)]
mod tests;
