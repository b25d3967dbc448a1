//! What the hub keeps of a job at rest (ADR 0041): not the ComputeJob, but a [`JobAtRest`] record
//! of what is read of finished jobs. A job at rest ([`crate::hub::at_rest_in_cache`]) has nothing
//! left to do; afterwards only its attempts' accounting is read — period quotas and the pool's
//! quota use ([`crate::hub::period_usage`]), reputation ([`crate::hub::reputation::tally`]), the
//! payers a slashed member harmed ([`crate::hub::slashing::harmed`]) and the clearing-price index
//! ([`crate::hub::market::clearing_index`]); the log relay, the one reader of a whole finished job,
//! reads it from the apiserver. The jobs watch keeps such a job out of the reflector store
//! ([`crate::hub::keep_job`]) and hands it to the index of jobs by UID
//! ([`crate::hub::context::JobUids`]), which holds its record.
//!
//! Readers of every job take a [`Jobs`]: the store's jobs and the records, each job once.

use std::collections::HashSet;
use std::sync::Arc;

use gpufed_crds::{AttemptRecord, ComputeJob, EvmAddress, JobPhase, TokenAmount};

use gpufed_crds::naming::HUB_JOBS_NAMESPACE;

/// A job at rest, as the hub keeps it: its identity, the parts of its spec that price and size an
/// attempt, its payer and its attempt records (whole: each reader reads different fields of them).
#[derive(Clone, Debug, PartialEq)]
pub struct JobAtRest {
    namespace: Box<str>,
    name: Box<str>,
    uid: Box<str>,
    pool: Box<str>,
    /// GPUs of one attempt (replicas × GPUs per replica).
    gpus: u64,
    /// `spec.maxDuration`, whole seconds rounded up.
    max_duration_secs: u64,
    /// What an attempt locks in escrow ([`crate::hub::settlement::lock_amount`]).
    lock: Option<TokenAmount>,
    phase: JobPhase,
    payer: Option<EvmAddress>,
    attempts: Box<[AttemptRecord]>,
}

impl JobAtRest {
    /// The record of `job`; `None` without a UID (which every job the apiserver serves has).
    pub fn of(job: &ComputeJob) -> Option<JobAtRest> {
        let uid = job.metadata.uid.as_deref()?;
        let status = job.status.as_ref();
        Some(JobAtRest {
            namespace: job.metadata.namespace.as_deref().unwrap_or_default().into(),
            name: job.metadata.name.as_deref().unwrap_or_default().into(),
            uid: uid.into(),
            pool: job.spec.pool.as_str().into(),
            gpus: gpus(job),
            max_duration_secs: job.spec.max_duration.as_secs_ceil(),
            lock: crate::hub::settlement::lock_amount(job),
            phase: status.map(|s| s.phase).unwrap_or_default(),
            payer: status.and_then(|s| s.payer.clone()),
            attempts: status
                .map(|s| s.attempts.clone().into_boxed_slice())
                .unwrap_or_default(),
        })
    }

    /// The job's UID.
    pub fn uid(&self) -> &str {
        &self.uid
    }
}

/// GPUs of one attempt of `job`.
fn gpus(job: &ComputeJob) -> u64 {
    u64::from(job.spec.replicas) * u64::from(job.spec.gpus_per_replica)
}

/// One job as a reader of every job sees it: the cached ComputeJob, or the record of a job at rest.
#[derive(Clone, Copy, Debug)]
pub enum JobRef<'a> {
    /// A job the store holds.
    Cached(&'a ComputeJob),
    /// A job at rest.
    AtRest(&'a JobAtRest),
}

impl<'a> JobRef<'a> {
    /// The job's namespace.
    pub fn namespace(self) -> &'a str {
        match self {
            JobRef::Cached(j) => j.metadata.namespace.as_deref().unwrap_or_default(),
            JobRef::AtRest(r) => &r.namespace,
        }
    }

    /// The job's name.
    pub fn name(self) -> &'a str {
        match self {
            JobRef::Cached(j) => j.metadata.name.as_deref().unwrap_or_default(),
            JobRef::AtRest(r) => &r.name,
        }
    }

    /// The job's UID.
    pub fn uid(self) -> Option<&'a str> {
        match self {
            JobRef::Cached(j) => j.metadata.uid.as_deref(),
            JobRef::AtRest(r) => Some(&r.uid),
        }
    }

    /// The pool the job runs in.
    pub fn pool(self) -> &'a str {
        match self {
            JobRef::Cached(j) => &j.spec.pool,
            JobRef::AtRest(r) => &r.pool,
        }
    }

    /// GPUs of one attempt (replicas × GPUs per replica).
    pub fn gpus(self) -> u64 {
        match self {
            JobRef::Cached(j) => gpus(j),
            JobRef::AtRest(r) => r.gpus,
        }
    }

    /// `spec.maxDuration` in whole seconds, rounded up.
    pub fn max_duration_secs(self) -> u64 {
        match self {
            JobRef::Cached(j) => j.spec.max_duration.as_secs_ceil(),
            JobRef::AtRest(r) => r.max_duration_secs,
        }
    }

    /// What an attempt locks in escrow ([`crate::hub::settlement::lock_amount`]).
    pub fn lock_amount(self) -> Option<TokenAmount> {
        match self {
            JobRef::Cached(j) => crate::hub::settlement::lock_amount(j),
            JobRef::AtRest(r) => r.lock,
        }
    }

    /// The job's phase; `None` before the hub first wrote its status.
    pub fn phase(self) -> Option<JobPhase> {
        match self {
            JobRef::Cached(j) => j.status.as_ref().map(|s| s.phase),
            JobRef::AtRest(r) => Some(r.phase),
        }
    }

    /// Who pays for the job.
    pub fn payer(self) -> Option<&'a EvmAddress> {
        match self {
            JobRef::Cached(j) => j.status.as_ref().and_then(|s| s.payer.as_ref()),
            JobRef::AtRest(r) => r.payer.as_ref(),
        }
    }

    /// The job's attempt records.
    pub fn attempts(self) -> &'a [AttemptRecord] {
        match self {
            JobRef::Cached(j) => j.status.as_ref().map_or(&[], |s| s.attempts.as_slice()),
            JobRef::AtRest(r) => &r.attempts,
        }
    }

    /// Whether this is one of the hub's own jobs (a challenge or a result check's run).
    pub fn is_hub_job(self) -> bool {
        self.namespace() == HUB_JOBS_NAMESPACE
    }
}

/// Every job the hub knows: the store's jobs and the records of jobs at rest, each job once.
pub struct Jobs {
    cached: Vec<Arc<ComputeJob>>,
    at_rest: Vec<Arc<JobAtRest>>,
}

impl Jobs {
    /// `cached` (a snapshot of the store) and `at_rest` (the records), a job in both counted from
    /// the store. Take the records after the store's snapshot: the jobs watch records a job at
    /// rest before it drops the job from the store, so a job leaving the store between the two
    /// snapshots is in the second, and one in both is counted once.
    pub fn new(cached: Vec<Arc<ComputeJob>>, at_rest: Vec<Arc<JobAtRest>>) -> Jobs {
        let at_rest = not_in(&cached, at_rest);
        Jobs { cached, at_rest }
    }

    /// Only `cached` (no job at rest).
    pub fn cached_only(cached: Vec<Arc<ComputeJob>>) -> Jobs {
        Jobs {
            cached,
            at_rest: vec![],
        }
    }

    /// The store's jobs: every job not at rest (and jobs at rest being edited or deleted).
    pub fn cached(&self) -> &[Arc<ComputeJob>] {
        &self.cached
    }

    /// The records of jobs at rest that the store's snapshot does not hold.
    pub fn at_rest(&self) -> &[Arc<JobAtRest>] {
        &self.at_rest
    }

    /// Every job, each once.
    pub fn iter(&self) -> impl Iterator<Item = JobRef<'_>> + Clone {
        cached(&self.cached).chain(self.at_rest.iter().map(|r| JobRef::AtRest(r.as_ref())))
    }
}

/// The records of `at_rest` whose job `cached` (a snapshot of the store, taken before the
/// records) does not hold: with `cached`, every job once (see [`Jobs::new`]).
pub fn not_in(cached: &[Arc<ComputeJob>], mut at_rest: Vec<Arc<JobAtRest>>) -> Vec<Arc<JobAtRest>> {
    if !at_rest.is_empty() {
        let in_store: HashSet<&str> = cached
            .iter()
            .filter_map(|j| j.metadata.uid.as_deref())
            .collect();
        at_rest.retain(|r| !in_store.contains(r.uid()));
    }
    at_rest
}

/// `jobs` as [`JobRef`]s.
pub fn cached<J: std::borrow::Borrow<ComputeJob>>(
    jobs: &[J],
) -> impl Iterator<Item = JobRef<'_>> + Clone {
    jobs.iter().map(|j| JobRef::Cached(j.borrow()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufed_crds::testing::{attempt, job};
    use gpufed_crds::{AttemptPhase, ComputeJobStatus};

    fn finished(uid: &str) -> ComputeJob {
        let mut j = job("train")
            .namespace("team-a")
            .replicas(2)
            .gpus(4)
            .max_price("3.6")
            .max_duration("90s")
            .build();
        j.metadata.uid = Some(uid.into());
        j.status = Some(ComputeJobStatus {
            phase: JobPhase::Succeeded,
            payer: Some(
                "0x00000000000000000000000000000000000000aa"
                    .parse()
                    .expect("an address"),
            ),
            attempts: vec![{
                let mut a = attempt(1, "alpha", AttemptPhase::Succeeded);
                a.gpu_seconds = 80;
                a
            }],
            ..Default::default()
        });
        j
    }

    #[test]
    fn a_record_reads_as_the_job_it_was_made_from() {
        let j = finished("uid-1");
        let r = JobAtRest::of(&j).expect("a job with a UID");
        let (a, b) = (JobRef::Cached(&j), JobRef::AtRest(&r));
        assert_eq!(a.namespace(), b.namespace());
        assert_eq!((a.name(), b.name()), ("train", "train"));
        assert_eq!(a.uid(), b.uid());
        assert_eq!(a.pool(), b.pool());
        assert_eq!((a.gpus(), b.gpus()), (8, 8));
        assert_eq!((a.max_duration_secs(), b.max_duration_secs()), (90, 90));
        assert!(a.lock_amount().is_some());
        assert_eq!(a.lock_amount(), b.lock_amount());
        assert_eq!(a.phase(), b.phase());
        assert_eq!(a.payer(), b.payer());
        assert_eq!(a.attempts(), b.attempts());
        assert!(!a.is_hub_job() && !b.is_hub_job());
        let mut no_uid = j.clone();
        no_uid.metadata.uid = None;
        assert!(JobAtRest::of(&no_uid).is_none());
    }

    #[test]
    fn a_job_in_the_store_and_recorded_at_rest_is_counted_once() {
        let (one, two) = (finished("uid-1"), finished("uid-2"));
        let records = vec![
            Arc::new(JobAtRest::of(&one).expect("a UID")),
            Arc::new(JobAtRest::of(&two).expect("a UID")),
        ];
        let jobs = Jobs::new(vec![Arc::new(one)], records);
        let seen: Vec<(Option<&str>, bool)> = jobs
            .iter()
            .map(|j| (j.uid(), matches!(j, JobRef::Cached(_))))
            .collect();
        assert_eq!(seen, vec![(Some("uid-1"), true), (Some("uid-2"), false)]);
        assert_eq!(jobs.cached().len(), 1);
    }
}
