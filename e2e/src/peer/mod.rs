//! The peer benchmark of `make bench`: gpufed against Kueue MultiKueue on the same harness, in
//! the same run, measured by the same code.
//!
//! Each system gets identical fresh clusters — a manager/hub (etcd, kube-apiserver,
//! controller-manager) and `workers` workers (plus kube-scheduler and kwok, with 8-GPU kwok
//! nodes) — and is set up the way its own docs say: gpufed with the hub and member charts and
//! real agents ([`crate::joining::Pool::join`]), Kueue with a manager and workers
//! ([`kueue::KueueFederation`]). The systems run one after the other, never at the same time.
//!
//! 1. **Dispatch**: `jobs` single-GPU jobs are submitted on the manager/hub (ComputeJobs;
//!    batch/v1 Jobs with the queue label), 16 requests in flight. A job counts as dispatched when
//!    one of its pods is Running (or already Succeeded) on a worker, as the worker's apiserver
//!    reports it. Also counted there: how many workers received a copy of each job (a Kueue
//!    Workload or a batch Job).
//! 2. **Lost worker**: `lost_jobs` long jobs are submitted and run; after `hold`, the network
//!    between the manager/hub and the worker running most of them is cut (a [`TcpProxy`] in front
//!    of the hub for that member's agent; in front of the worker's apiserver for Kueue's manager).
//!    Measured: seconds from the cut until each of those jobs runs on another worker, and how many
//!    still run on the cut-off worker at that point. Both systems are given the same timeout
//!    (gpufed: the pool's heartbeat timeout; Kueue: MultiKueue's `workerLostTimeout`).
//!
//! 3. **Open loop** (gpufed only, between the two): `open_jobs` short jobs submitted at
//!    `open_rate` jobs/s whether or not earlier ones were answered, and each job's path split
//!    into submit → Placement on the hub, Placement → local Job on the member (delivery), and
//!    local Job → pod Running (the member's own Job controller, kube-scheduler and kubelet) —
//!    the latency goals of issue 11, measured with real agents.
//!
//! Kueue runs twice: as shipped, and with every client at gpufed's rate
//! ([`kueue::KueueSetup::Matched`]: the rate of the hub chart's `kubeApi`; MultiKueue's worker
//! clients have no setting, so that run uses Kueue built with a patch, see `e2e/tools/build.sh`).
//! The report also lists where the gpufed side departs from the charts' defaults
//! ([`crate::bench::settings::compare_pool`]).
//!
//! A phase that fails is recorded with its error instead of a figure, and the run goes on.
//!
//! [`TcpProxy`]: crate::joining::TcpProxy

pub mod gpufed;
pub mod kueue;
pub mod kueue_setup;
pub mod observe;
pub mod phases;
pub mod report;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bench::latency::Latency;
use crate::bench::settings::{self, Setting};
use crate::{Error, Tools};

/// Settings of one peer run.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// Worker/member clusters.
    pub workers: usize,
    /// Jobs of the dispatch phase.
    pub jobs: usize,
    /// Jobs of the lost-worker phase.
    pub lost_jobs: usize,
    /// gpufed's pool heartbeat timeout.
    pub heartbeat_timeout: Duration,
    /// Kueue's `workerLostTimeout`; `None` leaves Kueue's default (15 minutes).
    pub worker_lost_timeout: Option<Duration>,
    /// How long the lost-phase jobs run before the cut.
    pub hold: Duration,
    /// Requests in flight while submitting.
    pub concurrency: usize,
    /// Jobs of gpufed's open-loop phase (0 skips it).
    pub open_jobs: usize,
    /// Their submission rate, jobs/s.
    pub open_rate: f64,
    /// Run gpufed's side (both run in `make bench`; one alone is for debugging a side).
    pub run_gpufed: bool,
    /// Run Kueue's side as shipped.
    pub run_kueue: bool,
    /// Run Kueue's side with its clients at gpufed's rate.
    pub run_kueue_matched: bool,
}

impl PeerConfig {
    /// The defaults of `gpufed-bench peer`: 3 workers, `jobs` jobs, 12 lost-phase jobs, both
    /// timeouts 20 s, the cut half a timeout after the jobs run.
    pub fn new(jobs: usize) -> Self {
        let timeout = Duration::from_secs(20);
        PeerConfig {
            workers: 3,
            jobs,
            lost_jobs: 12,
            heartbeat_timeout: timeout,
            worker_lost_timeout: Some(timeout),
            hold: timeout / 2,
            concurrency: 16,
            open_jobs: 250,
            open_rate: 50.0,
            run_gpufed: true,
            run_kueue: true,
            run_kueue_matched: true,
        }
    }

    /// The pool's heartbeat timeout as the GpuPool spells it (`20s`).
    pub fn heartbeat_timeout_text(&self) -> String {
        format!("{}s", self.heartbeat_timeout.as_secs())
    }

    /// 8-GPU nodes per worker: enough for every dispatch-phase job and the open-loop jobs of
    /// [`OPEN_HOLD`] at once, plus one node, so that no job of either waits for a free GPU.
    pub fn nodes_per_worker(&self) -> usize {
        let open = if self.open_jobs == 0 {
            0
        } else {
            (self.open_rate * OPEN_HOLD.as_secs_f64()).ceil() as usize
        };
        (self.jobs + open.min(self.open_jobs)).div_ceil(self.workers.max(1) * 8) + 1
    }

    /// Kueue's effective `workerLostTimeout`.
    pub fn effective_worker_lost_timeout(&self) -> Duration {
        self.worker_lost_timeout
            .unwrap_or(kueue::DEFAULT_WORKER_LOST_TIMEOUT)
    }
}

/// The dispatch phase of one system.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Dispatch {
    /// Jobs submitted.
    pub jobs: usize,
    /// Seconds from the first submission to the last apiserver answer.
    pub ingest_secs: f64,
    /// Seconds from the first submission until every job ran on a worker.
    pub all_running_secs: f64,
    /// Per job, seconds from its submission until it ran: median.
    pub latency_p50_secs: f64,
    /// … 95th percentile.
    pub latency_p95_secs: f64,
    /// … slowest.
    pub latency_max_secs: f64,
    /// Workers that received any object (Workload or Job) for a job: mean over jobs.
    pub workers_with_a_copy_mean: f64,
    /// … most for one job.
    pub workers_with_a_copy_max: usize,
    /// Workers that received a Kueue Workload for a job: mean (0 for gpufed, which writes none).
    pub workload_copies_mean: f64,
    /// Workers that received a batch Job for a job: mean.
    pub job_copies_mean: f64,
    /// Jobs per worker they ran on.
    pub ran_on: BTreeMap<String, usize>,
}

impl Dispatch {
    /// Jobs running per second, from the first submission.
    pub fn rate(&self) -> f64 {
        self.jobs as f64 / self.all_running_secs
    }
}

/// How long an open-loop job is counted as holding its GPU when sizing the workers: its run
/// ([`OPEN_JOB_RUNS`]) and time to spare for its path there and its end to be seen.
pub const OPEN_HOLD: Duration = Duration::from_secs(4);
/// How long each open-loop job's pod runs (kwok).
pub const OPEN_JOB_RUNS: &str = "1s";

/// gpufed's open-loop phase: each job's path split at the Placement and the local Job.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OpenLoop {
    /// Submission rate asked for, jobs/s.
    pub rate: f64,
    /// Jobs submitted.
    pub jobs: usize,
    /// Rate reached: jobs over the seconds from the first submission to the last one started.
    pub achieved_rate: f64,
    /// The create's answer → the job's Placement seen on the hub.
    pub submit_to_placement: Latency,
    /// The Placement seen on the hub → the local batch Job seen on the member (the agent's
    /// delivery).
    pub placement_to_local_job: Latency,
    /// The local Job → one of its pods Running (the member's Job controller, scheduler and
    /// kubelet).
    pub local_job_to_running: Latency,
    /// The create's answer → a pod Running.
    pub submit_to_running: Latency,
}

/// The lost-worker phase of one system.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Lost {
    /// The worker cut off (the one running most of the phase's jobs).
    pub victim: String,
    /// Jobs running there at the cut.
    pub jobs_on_victim: usize,
    /// Seconds the jobs ran before the cut.
    pub hold_secs: f64,
    /// Seconds from the cut until a job ran on another worker: fastest job.
    pub recovery_min_secs: f64,
    /// … median.
    pub recovery_p50_secs: f64,
    /// … last job.
    pub recovery_max_secs: f64,
    /// Of those jobs, how many still ran on the cut-off worker when the last one ran elsewhere
    /// (read from that worker's apiserver directly): each is the job running twice.
    pub still_running_on_victim: usize,
    /// Workers that received any object for one of those jobs, by the end: mean.
    pub workers_with_a_copy_mean: f64,
}

/// One system's run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SystemRun {
    /// Seconds to start the clusters and set the system up until it takes jobs.
    pub setup_secs: f64,
    /// The dispatch phase, if it worked.
    pub dispatch: Option<Dispatch>,
    /// Why it did not.
    pub dispatch_error: Option<String>,
    /// The lost-worker phase, if it worked.
    pub lost: Option<Lost>,
    /// Why it did not.
    pub lost_error: Option<String>,
    /// gpufed's open-loop phase, if it ran and worked (absent from runs before it existed).
    #[serde(default)]
    pub open: Option<OpenLoop>,
    /// Why it did not work (`None` for a system that has no such phase).
    #[serde(default)]
    pub open_error: Option<String>,
    /// Restarts of the recording watches (0 means nothing can have been missed).
    pub watch_errors: usize,
}

impl SystemRun {
    fn skipped() -> SystemRun {
        SystemRun {
            setup_secs: 0.0,
            dispatch: None,
            dispatch_error: Some("not run (--only)".into()),
            lost: None,
            lost_error: Some("not run (--only)".into()),
            open: None,
            open_error: None,
            watch_errors: 0,
        }
    }

    pub(crate) fn failed_setup(setup_secs: f64, e: &Error) -> SystemRun {
        SystemRun {
            setup_secs,
            dispatch: None,
            dispatch_error: Some(format!("set-up failed: {e}")),
            lost: None,
            lost_error: Some("not run: set-up failed".into()),
            open: None,
            open_error: None,
            watch_errors: 0,
        }
    }
}

/// The whole peer run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PeerResult {
    /// Kubernetes of the harness (e2e/tools/versions.env).
    pub kubernetes_version: String,
    /// Kueue built for the run (e2e/tools/versions.env).
    pub kueue_version: String,
    /// Worker/member clusters.
    pub workers: usize,
    /// 8-GPU nodes per worker.
    pub nodes_per_worker: usize,
    /// Dispatch-phase jobs.
    pub jobs: usize,
    /// Lost-phase jobs.
    pub lost_jobs: usize,
    /// Requests in flight while submitting.
    pub concurrency: usize,
    /// gpufed's pool heartbeat timeout, seconds.
    pub heartbeat_timeout_secs: f64,
    /// Kueue's `workerLostTimeout` in this run, seconds.
    pub worker_lost_timeout_secs: f64,
    /// Kueue's default `workerLostTimeout`, seconds.
    pub default_worker_lost_timeout_secs: f64,
    /// Seconds the lost-phase jobs ran before the cut.
    pub hold_secs: f64,
    /// gpufed.
    pub gpufed: SystemRun,
    /// Kueue MultiKueue, as shipped.
    pub kueue: SystemRun,
    /// Kueue MultiKueue with every client at gpufed's rate (absent from runs before it existed).
    #[serde(default)]
    pub kueue_matched: Option<SystemRun>,
    /// Kueue's client rate as shipped: QPS, burst.
    #[serde(default = "shipped_rate")]
    pub kueue_shipped_rate: (f64, u32),
    /// The rate of every client of the matched Kueue run (gpufed's, the hub chart's `kubeApi`).
    #[serde(default)]
    pub kueue_matched_rate: Option<(f64, u32)>,
    /// Where gpufed's side departs from the charts' defaults.
    #[serde(default)]
    pub gpufed_settings: Vec<Setting>,
}

fn shipped_rate() -> (f64, u32) {
    kueue::SHIPPED_CLIENT_RATE
}

/// gpufed's client rate: the hub chart's `kubeApi` (the member chart's agents have their own,
/// compared in the settings).
pub fn gpufed_client_rate(tools: &Tools) -> Result<(f64, u32), Error> {
    let get = |path: &str| settings::chart_value(tools.root(), "gpufed-hub", path);
    let qps = get("kubeApi.qps")?
        .parse()
        .map_err(|e| Error::Other(format!("gpufed-hub kubeApi.qps: {e}")))?;
    let burst = get("kubeApi.burst")?
        .parse()
        .map_err(|e| Error::Other(format!("gpufed-hub kubeApi.burst: {e}")))?;
    Ok((qps, burst))
}

/// A `NAME=value` line of `e2e/tools/versions.env`.
pub fn pinned(tools: &Tools, name: &str) -> String {
    let path = tools.root().join("e2e/tools/versions.env");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix(&format!("{name}="))
                    .map(|v| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Runs gpufed, then Kueue MultiKueue as shipped, then with its clients at gpufed's rate, and
/// returns all three.
pub async fn run(tools: &Tools, cfg: &PeerConfig) -> Result<PeerResult, Error> {
    // Fail before starting anything if Kueue was not built.
    if cfg.run_kueue || cfg.run_kueue_matched {
        kueue::crd_dir(tools)?;
    }
    if cfg.run_kueue_matched {
        tools.bin(kueue::WORKER_RATE_BINARY)?;
    }
    let (qps, burst) = gpufed_client_rate(tools)?;
    let gpufed_settings = settings::compare_pool(tools.root(), &cfg.heartbeat_timeout_text())?;
    let gpufed = if cfg.run_gpufed {
        tracing::info!(jobs = cfg.jobs, workers = cfg.workers, "peer: gpufed");
        gpufed::run(tools, cfg).await
    } else {
        SystemRun::skipped()
    };
    let kueue = if cfg.run_kueue {
        tracing::info!(
            jobs = cfg.jobs,
            workers = cfg.workers,
            "peer: Kueue MultiKueue"
        );
        kueue::run(tools, cfg, kueue::KueueSetup::Shipped).await
    } else {
        SystemRun::skipped()
    };
    let kueue_matched = if cfg.run_kueue_matched {
        tracing::info!(
            jobs = cfg.jobs,
            workers = cfg.workers,
            qps,
            burst,
            "peer: Kueue MultiKueue, clients at gpufed's rate"
        );
        Some(kueue::run(tools, cfg, kueue::KueueSetup::Matched { qps, burst }).await)
    } else {
        None
    };
    Ok(PeerResult {
        kubernetes_version: pinned(tools, "K8S_VERSION"),
        kueue_version: pinned(tools, "KUEUE_VERSION"),
        workers: cfg.workers,
        nodes_per_worker: cfg.nodes_per_worker(),
        jobs: cfg.jobs,
        lost_jobs: cfg.lost_jobs,
        concurrency: cfg.concurrency,
        heartbeat_timeout_secs: cfg.heartbeat_timeout.as_secs_f64(),
        worker_lost_timeout_secs: cfg.effective_worker_lost_timeout().as_secs_f64(),
        default_worker_lost_timeout_secs: kueue::DEFAULT_WORKER_LOST_TIMEOUT.as_secs_f64(),
        hold_secs: cfg.hold.as_secs_f64(),
        gpufed,
        kueue,
        kueue_matched_rate: kueue_matched.is_some().then_some((qps, burst)),
        kueue_matched,
        kueue_shipped_rate: kueue::SHIPPED_CLIENT_RATE,
        gpufed_settings,
    })
}

/// Runs `start` and, if it fails, once more: the harness picks free ports before its components
/// bind them, so on a busy machine a set-up can lose a port to another process.
pub(crate) async fn set_up<T, F, Fut>(what: &str, mut start: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    match start().await {
        Ok(v) => Ok(v),
        Err(e) => {
            tracing::warn!(error = %e, "{what}: set-up failed, trying once more");
            start().await
        }
    }
}

/// Seconds to wait for a dispatch phase before giving up.
pub(crate) const DISPATCH_TIMEOUT: Duration = Duration::from_secs(600);

/// The lost phase's time-out for a system whose loss timeout is `t`.
pub(crate) fn lost_timeout(t: Duration) -> Duration {
    t * 2 + Duration::from_secs(120)
}
