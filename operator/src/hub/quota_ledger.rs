//! The quota ledger (ADR 0019, "Deleted jobs keep counting"): what deleted jobs used in the current
//! day, week and month, kept in the pool's `status.quotaLedger` so that a tenant deleting its
//! finished jobs does not reset its GPU-hours or spend quota.
//!
//! When the hub releases a deleted job (the ComputeJob finalizer, after its money is settled) it
//! adds the job's final use ([`period_usage::retired_usage`]) to one entry per namespace, GPU
//! model and period the namespace's quota groups count over, and records the job's UID there
//! before the finalizer goes: a retry, or another hub after a failover, sees the UID and adds
//! nothing, and the scheduling pass counts a job whose UID is in the ledger through the ledger
//! only. A UID is dropped by the pool roll-up once the job is gone from the hub's cache (it can no
//! longer be released twice); an entry is dropped once its period has ended.
//!
//! The functions here are pure; [`record`] does the read–modify–write of the pool status, guarded
//! by resourceVersion. The finalizer goes only once the hub's pool cache shows the job in the
//! ledger, so no scheduling pass sees the job gone and the ledger without it.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use gpufed_crds::{ComputeJob, GpuPool, QuotaLedgerEntry, QuotaPeriod, TokenAmount};
use gpufed_scheduler::{Period, PeriodUsage};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::Api;

use crate::error::{Error, Result};
use crate::hub::period_usage::{self, unix};
use crate::hub::status::{Written, write_cluster};

/// The scheduler's period of a quota period.
pub fn period(p: QuotaPeriod) -> Period {
    match p {
        QuotaPeriod::Day => Period::Day,
        QuotaPeriod::Week => Period::Week,
        QuotaPeriod::Month => Period::Month,
    }
}

fn quota_period(p: Period) -> QuotaPeriod {
    match p {
        Period::Day => QuotaPeriod::Day,
        Period::Week => QuotaPeriod::Week,
        Period::Month => QuotaPeriod::Month,
    }
}

fn time(secs: u64) -> Option<Time> {
    i64::try_from(secs)
        .ok()
        .and_then(|s| k8s_openapi::jiff::Timestamp::from_second(s).ok())
        .map(Time)
}

/// Whether `e` counts in the period containing `now`.
fn current(e: &QuotaLedgerEntry, now: u64) -> bool {
    period(e.period).window(now).0 == unix(&e.period_start)
}

/// The periods the quota groups of `namespace` count over in `pool`.
fn periods_of(pool: &GpuPool, namespace: &str) -> BTreeSet<Period> {
    pool.spec
        .quotas
        .iter()
        .filter(|q| q.namespace == namespace)
        .flat_map(|q| q.groups.iter().filter_map(|g| g.period.map(period)))
        .collect()
}

/// Adds the final use of the deleted `job` (its status as settled) to `ledger` at `now`, for each
/// model it ran on and each period its namespace's quota groups count over; entries of ended
/// periods are dropped. Idempotent: an entry that already names the job's UID is left alone.
/// Returns whether the ledger changed.
pub fn retire(
    ledger: &mut Vec<QuotaLedgerEntry>,
    pool: &GpuPool,
    job: &ComputeJob,
    now: u64,
) -> bool {
    let before = ledger.len();
    ledger.retain(|e| current(e, now));
    let mut changed = ledger.len() != before;
    let (Some(uid), Some(namespace)) = (job.uid(), job.namespace()) else {
        return changed;
    };
    let periods = periods_of(pool, &namespace);
    if periods.is_empty() {
        return changed;
    }
    // The job's use per model, all its attempts on it together.
    let mut per_model: BTreeMap<String, PeriodUsage> = BTreeMap::new();
    for u in period_usage::retired_usage(job, now, pool.spec.chain.is_some()) {
        let sum = per_model.entry(u.model.clone()).or_default();
        for i in 0..Period::ALL.len() {
            sum.gpu_seconds[i] = sum.gpu_seconds[i].saturating_add(u.gpu_seconds[i]);
            sum.spend[i] = sum.spend[i].saturating_add(u.spend[i]);
        }
    }
    for (model, u) in &per_model {
        for &p in &periods {
            let (start, _) = p.window(now);
            let Some(period_start) = time(start) else {
                continue;
            };
            let qp = quota_period(p);
            let found = ledger
                .iter()
                .position(|e| e.namespace == namespace && &e.model == model && e.period == qp);
            let i = match found {
                Some(i) => i,
                None => {
                    ledger.push(QuotaLedgerEntry {
                        namespace: namespace.clone(),
                        model: model.clone(),
                        period: qp,
                        period_start,
                        gpu_seconds: 0,
                        spent: None,
                        jobs: vec![],
                    });
                    ledger.len() - 1
                }
            };
            let e = &mut ledger[i];
            if e.jobs.contains(&uid) {
                continue;
            }
            e.gpu_seconds = e.gpu_seconds.saturating_add(u.gpu_seconds[p.index()]);
            let add = u.spend[p.index()];
            if add > 0 || e.spent.is_some() {
                let spent = e.spent.map_or(0, |s| s.atto());
                e.spent = Some(TokenAmount::from_atto(spent.saturating_add(add)));
            }
            e.jobs.push(uid.clone());
            changed = true;
        }
    }
    changed
}

/// Drops entries of periods that ended before `now`, and the UIDs of jobs `exists` says are gone.
/// Returns the ledger to keep.
pub fn prune(
    ledger: &[QuotaLedgerEntry],
    now: u64,
    exists: impl Fn(&str) -> bool,
) -> Vec<QuotaLedgerEntry> {
    ledger
        .iter()
        .filter(|e| current(e, now))
        .map(|e| {
            let mut e = e.clone();
            e.jobs.retain(|uid| exists(uid));
            e
        })
        .collect()
}

/// UIDs of the jobs the ledger of `pool` already counts (their live attempts no longer count).
pub fn retired(pool: &GpuPool) -> HashSet<&str> {
    pool.status
        .iter()
        .flat_map(|s| &s.quota_ledger)
        .flat_map(|e| e.jobs.iter().map(String::as_str))
        .collect()
}

/// The ledger of `pool` as usage of the periods containing `now` (entries of ended periods are
/// not counted), to add to the use of the jobs that exist.
pub fn usage(pool: &GpuPool, now: u64) -> Vec<PeriodUsage> {
    pool.status
        .iter()
        .flat_map(|s| &s.quota_ledger)
        .filter(|e| current(e, now))
        .map(|e| {
            let i = period(e.period).index();
            let mut u = PeriodUsage {
                namespace: e.namespace.clone(),
                model: e.model.clone(),
                ..PeriodUsage::default()
            };
            u.gpu_seconds[i] = e.gpu_seconds;
            u.spend[i] = e.spent.map_or(0, |s| s.atto());
            u
        })
        .collect()
}

/// Whether `ledger` names the job `uid`.
fn names(ledger: &[QuotaLedgerEntry], uid: &str) -> bool {
    ledger.iter().any(|e| e.jobs.iter().any(|j| j == uid))
}

/// Adds the deleted `job` (its status as settled) to the ledger of its pool at `now`, reading the
/// pool from the API and writing its status guarded by resourceVersion (retried on a conflict).
/// Nothing is written when the job was never placed, the pool has no period quotas for the job's
/// namespace, or the job is already counted. Returns whether the ledger names the job.
pub async fn record(client: &kube::Client, job: &ComputeJob, now: u64) -> Result<bool> {
    let uid = job.uid().unwrap_or_default();
    if job.status.as_ref().is_none_or(|s| s.attempts.is_empty()) {
        // Never placed: nothing to count, and no need to read the pool.
        return Ok(false);
    }
    let api: Api<GpuPool> = Api::all(client.clone());
    for _ in 0..5 {
        let Some(pool) = api
            .get_opt(&job.spec.pool)
            .await
            .map_err(Error::kube(format!("reading GpuPool {}", job.spec.pool)))?
        else {
            return Ok(false);
        };
        if periods_of(&pool, &job.namespace().unwrap_or_default()).is_empty() {
            return Ok(false);
        }
        let mut status = pool.status.clone().unwrap_or_default();
        if !retire(&mut status.quota_ledger, &pool, job, now) {
            return Ok(names(&status.quota_ledger, &uid));
        }
        if write_cluster(client, &pool, &status).await? == Written::Yes {
            tracing::info!(
                pool = %job.spec.pool,
                %uid,
                "counted the deleted job's use in the pool's quota ledger"
            );
            return Ok(names(&status.quota_ledger, &uid));
        }
    }
    Err(Error::Invalid {
        what: "quota ledger".into(),
        detail: format!(
            "the status of GpuPool {} kept changing while adding a deleted job",
            job.spec.pool
        ),
    })
}

#[cfg(test)]
mod tests;
