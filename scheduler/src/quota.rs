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
//!
//! A group may also limit GPU-hours and spend per calendar period ([`PeriodQuota`], fed with
//! [`QuotaBook::with_periods`]): a job passes only if its worst case inside the current period
//! (GPUs × maxDuration, cut at the period's end; its escrow lock) fits what is left. GPU-hours are
//! lent within a cohort like GPUs (among members counting the same group over the same period,
//! without a borrowing limit); spend is a payer's money and is never borrowed.

use std::collections::{BTreeMap, HashMap};

use crate::input::JobRequest;
use crate::period::{Period, PeriodQuota, PeriodUsage};

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
    /// GPU-hours and spend per calendar period; `None`: no limit over time.
    pub per_period: Option<PeriodQuota>,
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

/// Which limit of a group a job is over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Limit {
    /// GPUs held at once: [`OverQuota`]'s numbers are GPUs.
    #[default]
    Gpus,
    /// GPU-hours per period: [`OverQuota`]'s numbers are GPU-seconds.
    GpuHours {
        /// The period.
        period: Period,
        /// Its start and end, Unix seconds.
        window: (u64, u64),
    },
    /// Spend per period, in atto-tokens (never borrowed).
    Spend {
        /// The period.
        period: Period,
        /// Its start and end, Unix seconds.
        window: (u64, u64),
        /// Settled and locked in the period.
        spent: u128,
        /// The group's limit.
        limit: u128,
        /// The job's escrow lock; `None`: its cost has no bound (no price cap).
        need: Option<u128>,
    },
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
    /// The limit the job is over; for GPU-hours the four numbers above are GPU-seconds.
    pub limit: Limit,
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
    /// The hub's clock for the periods, Unix seconds.
    now: u64,
    /// GPU-seconds and atto-tokens used or committed per (namespace, group) in the group's period.
    period_used: HashMap<Slot, (u64, u128)>,
    /// (cohort, group name, period) → (sum of GPU-second quotas, GPU-seconds of members).
    cohort_hours: BTreeMap<(String, String, Period), (u64, u64)>,
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
                    if let Some(PeriodQuota {
                        period,
                        gpu_seconds: Some(s),
                        ..
                    }) = g.per_period
                    {
                        let e = book
                            .cohort_hours
                            .entry((c.clone(), g.name.clone(), period))
                            .or_default();
                        e.0 = e.0.saturating_add(s);
                    }
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

    /// The book with the period limits counted at `now` (Unix seconds, the hub's clock) and
    /// `usage` already used or committed in the current periods. Usage of namespaces without a
    /// quota, or of models no group counts, is ignored.
    pub fn with_periods(mut self, now: u64, usage: &[PeriodUsage]) -> QuotaBook {
        self.now = now;
        for u in usage {
            if let Some(slot) = self.slot(&u.namespace, &u.model)
                && let Some(pq) = self.period_quota(slot)
            {
                let i = pq.period.index();
                let (s, m) = (u.gpu_seconds[i], u.spend[i]);
                self.charge_period(slot, s, m);
            }
        }
        self
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

    fn period_quota(&self, (ns, g): Slot) -> Option<PeriodQuota> {
        self.quotas.get(ns)?.groups.get(g)?.per_period
    }

    fn charge_period(&mut self, slot: Slot, gpu_seconds: u64, spend: u128) {
        let e = self.period_used.entry(slot).or_default();
        e.0 = e.0.saturating_add(gpu_seconds);
        e.1 = e.1.saturating_add(spend);
        if let Some(key) = self.hours_cohort_key(slot)
            && let Some(e) = self.cohort_hours.get_mut(&key)
        {
            e.1 = e.1.saturating_add(gpu_seconds);
        }
    }

    /// The cohort entry lending GPU-hours of the slot's group, if it counts GPU-hours.
    fn hours_cohort_key(&self, (ns, g): Slot) -> Option<(String, String, Period)> {
        let pq = self.period_quota((ns, g))?;
        pq.gpu_seconds?;
        let (c, name) = self.cohort_key(ns, g)?;
        Some((c, name, pq.period))
    }

    /// The job's worst case in the slot's period from now: GPU-seconds (GPUs × maxDuration, cut at
    /// the period's end) and its escrow lock.
    fn worst_case(&self, slot: Slot, job: &JobRequest) -> (u64, Option<u128>) {
        let Some(pq) = self.period_quota(slot) else {
            return (0, job.max_spend);
        };
        let (_, end) = pq.period.window(self.now);
        let secs = job.max_duration_secs.min(end.saturating_sub(self.now));
        (job.total_gpus().saturating_mul(secs), job.max_spend)
    }

    /// GPU-seconds the slot could take beyond its own GPU-hours quota now.
    fn hours_borrowable(&self, slot: Slot, nominal: u64, used: u64) -> u64 {
        let Some((sum, held)) = self
            .hours_cohort_key(slot)
            .and_then(|k| self.cohort_hours.get(&k).copied())
        else {
            return 0;
        };
        sum.saturating_sub(held)
            .saturating_sub(nominal.saturating_sub(used))
    }

    /// Why the job's worst case does not fit the slot's period limits, if it does not.
    fn period_refusal(&self, slot: Slot, job: &JobRequest) -> Option<(Limit, [u64; 4])> {
        let pq = self.period_quota(slot)?;
        let window = pq.period.window(self.now);
        let (used_s, spent) = self.period_used.get(&slot).copied().unwrap_or((0, 0));
        let (need_s, need_m) = self.worst_case(slot, job);
        if let Some(nominal) = pq.gpu_seconds {
            let own = nominal.saturating_sub(used_s);
            let borrowable = self.hours_borrowable(slot, nominal, used_s);
            if need_s.saturating_sub(own) > borrowable {
                let limit = Limit::GpuHours {
                    period: pq.period,
                    window,
                };
                return Some((limit, [used_s, nominal, need_s, borrowable]));
            }
        }
        let limit = pq.spend?;
        match need_m {
            Some(m) if spent.saturating_add(m) <= limit => None,
            need => Some((
                Limit::Spend {
                    period: pq.period,
                    window,
                    spent,
                    limit,
                    need,
                },
                [0; 4],
            )),
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
                Some(g)
                    if self.admits((ns, g), need)
                        && self.period_refusal((ns, g), job).is_none() =>
                {
                    allowed.push(model.clone())
                }
                _ if first_refusal.is_some() => {}
                Some(g) if self.admits((ns, g), need) => {
                    let q = self.quotas.get(ns);
                    if let Some((limit, [used, nominal, need, borrowable])) =
                        self.period_refusal((ns, g), job)
                    {
                        first_refusal = Some(OverQuota {
                            namespace: namespace.to_string(),
                            group: q.and_then(|q| q.groups.get(g)).map(|g| g.name.clone()),
                            model: model.clone(),
                            used,
                            nominal,
                            need,
                            cohort: q.and_then(|q| q.cohort.clone()),
                            borrowable,
                            limit,
                        });
                    }
                }
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
                        limit: Limit::Gpus,
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
                        limit: Limit::Gpus,
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

    /// Counts a placement of `job` on `model`: its GPUs and, in a group with period limits, its
    /// worst case in the period (see [`QuotaBook::with_periods`]).
    pub fn charge_job(&mut self, job: &JobRequest, model: &str) {
        self.charge(&job.key, model, job.total_gpus());
        if let Some(slot) = self.slot(namespace_of(&job.key), model)
            && self.period_quota(slot).is_some()
        {
            let (s, m) = self.worst_case(slot, job);
            self.charge_period(slot, s, m.unwrap_or(0));
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
                    period: group.per_period.map(|pq| {
                        let (gpu_seconds, spend) =
                            self.period_used.get(&(ns, g)).copied().unwrap_or((0, 0));
                        PeriodUse {
                            period: pq.period,
                            start: pq.period.window(self.now).0,
                            gpu_seconds,
                            gpu_seconds_limit: pq.gpu_seconds,
                            spend,
                            spend_limit: pq.spend,
                        }
                    }),
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
    /// Use of the group's period limits, if it has them.
    pub period: Option<PeriodUse>,
}

/// One namespace's use of one group's period limits in the current period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeriodUse {
    /// The period.
    pub period: Period,
    /// When the current period started, Unix seconds.
    pub start: u64,
    /// GPU-seconds used or committed.
    pub gpu_seconds: u64,
    /// The group's GPU-seconds per period, if limited.
    pub gpu_seconds_limit: Option<u64>,
    /// Atto-tokens settled or locked.
    pub spend: u128,
    /// The group's atto-tokens per period, if limited.
    pub spend_limit: Option<u128>,
}

/// The namespace part of a `namespace/name` key (the whole key when it has no `/`).
pub fn namespace_of(key: &str) -> &str {
    key.split_once('/').map_or(key, |(ns, _)| ns)
}

mod text;

#[cfg(test)]
mod period_tests;
#[cfg(test)]
mod tests;
