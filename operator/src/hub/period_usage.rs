//! What each tenant namespace used or committed in the current day, week and month, from what the
//! hub records in job status (ADR 0019, GPU-hours and spend quotas): the input of
//! [`gpufed_scheduler::QuotaBook::with_periods`] in the scheduling pass and of the pool's
//! `status.quotaUsage`. Pure functions of the jobs and the hub's clock, unit-tested from fixtures.
//!
//! * **GPU-seconds** of an attempt inside a period: a finished attempt counts what it used (its
//!   recorded `gpuSeconds`, at most GPUs × its run inside the period); an attempt still placed or
//!   running counts its worst case, GPUs × maxDuration from its start (or placement) cut to the
//!   period, or what it used so far if it ran longer. Counting the worst case, not only the use so
//!   far, is what keeps two jobs admitted one after the other from overshooting together: the same
//!   reason GPUs are charged when placed, not when their pods run.
//! * **Spend** of an attempt placed in a period: its settled amount once settled, its lock until
//!   then (in a pool with a chain, the lock the escrow will hold before it is made).
//!
//! A deleted job keeps counting for the rest of its periods: when the hub releases it, its final
//! use ([`retired_usage`]) goes into the pool's ledger ([`crate::hub::quota_ledger`]), which
//! [`pool_usage`] adds to the jobs that exist, and from then on the job itself no longer counts.

use gpufed_crds::{AttemptRecord, ComputeJob, GpuPool, SettlementState};
use gpufed_scheduler::{Period, PeriodUsage};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::hub::at_rest::JobRef;

/// Unix seconds of a timestamp (0 before the epoch).
pub fn unix(t: &Time) -> u64 {
    u64::try_from(t.0.as_second()).unwrap_or(0)
}

/// Whether any quota group of the pool limits GPU-hours or spend per period.
pub fn has_period_quotas(pool: &GpuPool) -> bool {
    pool.spec
        .quotas
        .iter()
        .any(|q| q.groups.iter().any(|g| g.period.is_some()))
}

/// The usage of every attempt of `job` at `now`, one entry per attempt.
pub fn job_usage(job: JobRef<'_>, now: u64, chain: bool) -> Vec<PeriodUsage> {
    let Some(phase) = job.phase() else {
        return vec![];
    };
    let job_done = phase.is_finished();
    job.attempts()
        .iter()
        .map(|a| attempt_usage(job, a, job_done || a.phase.is_finished(), false, now, chain))
        .collect()
}

/// What a deleted job used in each period containing `now`, one entry per attempt: every attempt
/// counts as finished (what it used, not its worst case), and its spend is what was paid, or a
/// lock still held; an attempt that never locked funds counts none. `job` carries the status the
/// hub settled it with (`settlement::cancel_current`).
pub fn retired_usage(job: &ComputeJob, now: u64, chain: bool) -> Vec<PeriodUsage> {
    let Some(status) = job.status.as_ref() else {
        return vec![];
    };
    status
        .attempts
        .iter()
        .map(|a| attempt_usage(JobRef::Cached(job), a, true, true, now, chain))
        .collect()
}

/// One attempt's GPU-seconds and spend in each period containing `now`.
fn attempt_usage(
    job: JobRef<'_>,
    a: &AttemptRecord,
    finished: bool,
    deleted: bool,
    now: u64,
    chain: bool,
) -> PeriodUsage {
    let gpus = job.gpus();
    let max = job.max_duration_secs();
    let placed = a.placed_time.as_ref().map(unix);
    let started = a.start_time.as_ref().map(unix);
    let mut out = PeriodUsage {
        namespace: job.namespace().to_string(),
        model: a.model.clone(),
        ..PeriodUsage::default()
    };
    let spend = if deleted {
        deleted_spend(a)
    } else {
        attempt_spend(job, a, chain)
    };
    for p in Period::ALL {
        let (ws, we) = p.window(now);
        let i = p.index();
        out.gpu_seconds[i] = if finished {
            match started {
                None => 0,
                Some(s) => {
                    let end = a.finish_time.as_ref().map_or(now, unix);
                    a.gpu_seconds
                        .min(gpus.saturating_mul(gpufed_scheduler::period::overlap(s, end, ws, we)))
                }
            }
        } else {
            let begin = started.or(placed).unwrap_or(now);
            let worst = gpufed_scheduler::period::overlap(begin, begin.saturating_add(max), ws, we);
            let so_far = gpufed_scheduler::period::overlap(begin, now, ws, we);
            gpus.saturating_mul(worst.max(so_far))
        };
        let when = placed.or(started).unwrap_or(now);
        if (ws..we).contains(&when) {
            out.spend[i] = spend;
        }
    }
    out
}

/// Atto-tokens an attempt counts against a spend quota: paid once settled (nothing when the lock
/// expired or was never made), else its lock.
fn attempt_spend(job: JobRef<'_>, a: &AttemptRecord, chain: bool) -> u128 {
    let lock = || job.lock_amount().map_or(0, |l| l.atto());
    match &a.settlement {
        None if chain => lock(),
        None => 0,
        Some(s) => match s.state {
            SettlementState::Settled | SettlementState::Expired | SettlementState::Closed => {
                s.paid.map_or(0, |p| p.atto())
            }
            SettlementState::Unfunded
            | SettlementState::Locking
            | SettlementState::Locked
            | SettlementState::Settling => s.locked.map_or_else(lock, |l| l.atto()),
        },
    }
}

/// Atto-tokens an attempt of a deleted job counts: what it paid, or a lock still held; nothing
/// for a lock never made (the job will not make it now).
fn deleted_spend(a: &AttemptRecord) -> u128 {
    a.settlement.as_ref().map_or(0, |s| match s.state {
        SettlementState::Settled | SettlementState::Expired | SettlementState::Closed => {
            s.paid.map_or(0, |p| p.atto())
        }
        SettlementState::Unfunded => 0,
        SettlementState::Locking | SettlementState::Locked | SettlementState::Settling => {
            s.locked.map_or(0, |l| l.atto())
        }
    })
}

/// The worst case of a decision this hub made whose attempt the cache does not show yet: a new
/// attempt of `job` on `model` placed at `now`.
pub fn in_flight_usage(job: &ComputeJob, model: &str, now: u64, chain: bool) -> PeriodUsage {
    let job = JobRef::Cached(job);
    let gpus = job.gpus();
    let max = job.max_duration_secs();
    let mut out = PeriodUsage {
        namespace: job.namespace().to_string(),
        model: model.to_string(),
        ..PeriodUsage::default()
    };
    let lock = if chain {
        job.lock_amount().map_or(0, |l| l.atto())
    } else {
        0
    };
    for p in Period::ALL {
        let (ws, we) = p.window(now);
        out.gpu_seconds[p.index()] = gpus.saturating_mul(gpufed_scheduler::period::overlap(
            now,
            now.saturating_add(max),
            ws,
            we,
        ));
        out.spend[p.index()] = lock;
    }
    out
}

/// What the jobs of `pool` used or committed in the current periods at `now`: every attempt the
/// cache shows, plus the worst case of each decision in flight (`in_flight` gives the model of a
/// job's decision the cache does not show yet), plus what deleted jobs used (the pool's quota
/// ledger, which alone counts the jobs it names).
pub fn pool_usage<'j>(
    pool: &GpuPool,
    jobs: impl Iterator<Item = JobRef<'j>>,
    in_flight: impl Fn(&ComputeJob) -> Option<String>,
    now: u64,
) -> Vec<PeriodUsage> {
    let name = pool.metadata.name.as_deref().unwrap_or_default();
    let chain = pool.spec.chain.is_some();
    let retired = crate::hub::quota_ledger::retired(pool);
    let mut out = crate::hub::quota_ledger::usage(pool, now);
    for job in jobs.filter(|j| j.pool() == name && j.uid().is_none_or(|uid| !retired.contains(uid)))
    {
        out.extend(job_usage(job, now, chain));
        // A decision in flight is a job waiting to be placed, never one at rest.
        if let JobRef::Cached(j) = job
            && let Some(model) = in_flight(j)
        {
            out.push(in_flight_usage(j, &model, now, chain));
        }
    }
    out
}

#[cfg(test)]
mod tests;
