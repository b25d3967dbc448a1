//! The hub against a real apiserver, for `make bench`: how fast it places jobs, next to how fast
//! the same apiserver takes the writes that placing a job costs, and what it spends doing so.
//!
//! One run ([`throughput`]): a harness hub cluster (etcd, kube-apiserver, controller-manager),
//! the hub as a process started as the chart would run it (its lease duration, log format and
//! log filter; what still differs is listed by [`settings::compare`]), `members` member clusters
//! stood in for by fake agents ([`agents`]: heartbeats at the chart's interval, one inventory
//! report each, enough H100s for every job). Then, on that one apiserver:
//!
//! 1. **closed loop**: `jobs` single-GPU ComputeJobs created `in_flight` at a time; *placed* is
//!    when a watch on Placements has seen every job's Placement. Across it: the writes the
//!    apiserver counted ([`apimetrics`], the harness's own taken out), the CPU of the apiserver,
//!    etcd and the hub ([`procstat`]);
//! 2. **open loop**: at each rate, jobs submitted at that fixed rate, timed one by one from the
//!    create returning to their Placement being seen ([`latency`]);
//! 3. the hub's peak memory, then the hub is stopped;
//! 4. **ceiling**: the hub's per-job write mix replayed by the benchmark itself ([`writemix`]),
//!    at each concurrency, with no hub running.
//!
//! Figures are reported as rates and ratios within the run (`report::markdown`), so runs on
//! different machines compare. No test asserts on these times.

pub mod agent_scale;
pub mod agents;
pub mod apimetrics;
pub mod latency;
pub mod procstat;
pub mod report;
pub mod scale;
pub mod settings;
pub mod utilisation;
pub mod writemix;

use std::path::Path;
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, ListParams};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::hubctl::{create_member, create_pool, node, report_inventory, start_hub_with};
use crate::{Cluster, ClusterSpec, Error, Tools, wait_until};
use agents::{Heartbeats, harness_writes};
use apimetrics::{Counters, RequestCount};
use latency::{Latency, PlacementWatch, job_names, latencies, submit_closed, submit_open};
use procstat::{CpuSample, CpuUse};
use settings::{BenchHub, Setting};
use writemix::Ceiling;

/// The hub's process name in the benchmark's cluster.
pub const HUB: &str = "hub-0";
/// Namespace of the jobs the hub places.
const JOBS_NAMESPACE: &str = "bench";
/// Namespace of the jobs of the write-mix replay.
const CEILING_NAMESPACE: &str = "ceiling";

/// Settings of one throughput run.
#[derive(Clone, Debug)]
pub struct ThroughputConfig {
    /// Member clusters.
    pub members: usize,
    /// 8-GPU nodes per member.
    pub nodes_per_member: usize,
    /// Jobs of the closed loop.
    pub jobs: usize,
    /// Creates in flight in the closed loop.
    pub in_flight: usize,
    /// Rates of the open loop, jobs per second.
    pub open_rates: Vec<f64>,
    /// Jobs at each open-loop rate.
    pub open_jobs: usize,
    /// Concurrencies of the write-mix replay.
    pub ceiling_in_flight: Vec<usize>,
    /// Jobs replayed at each concurrency.
    pub ceiling_jobs: usize,
}

impl ThroughputConfig {
    /// `members` members with `jobs` jobs in the closed loop and as many in each replay, the open
    /// loop at 25, 50, 100 and 200 jobs/s with `open_jobs` each, and enough GPUs for all of them.
    pub fn new(members: usize, jobs: usize, open_jobs: usize) -> ThroughputConfig {
        let open_rates = vec![25.0, 50.0, 100.0, 200.0];
        let hub_jobs = jobs + open_jobs * open_rates.len();
        ThroughputConfig {
            members,
            nodes_per_member: hub_jobs.div_ceil(members.max(1) * 8) + 1,
            jobs,
            in_flight: 16,
            open_rates,
            open_jobs,
            ceiling_in_flight: vec![16, 64],
            ceiling_jobs: jobs,
        }
    }
}

/// Jobs submitted at a fixed rate, timed to their Placement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpenLoop {
    /// Target rate, jobs per second.
    pub rate: f64,
    /// Jobs.
    pub jobs: usize,
    /// Seconds from the first create started to the last one returned.
    pub submit_secs: f64,
    /// Seconds from the first create started to the last Placement seen.
    pub placed_secs: f64,
    /// Create returned → Placement seen.
    pub latency: Latency,
}

/// Results of one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThroughputResult {
    /// Member clusters.
    pub members: usize,
    /// 8-GPU nodes per member.
    pub nodes_per_member: usize,
    /// Jobs of the closed loop.
    pub jobs: usize,
    /// Creates in flight in the closed loop.
    pub in_flight: usize,
    /// Seconds to create every job of the closed loop.
    pub ingest_secs: f64,
    /// Seconds from the first create to the last Placement seen.
    pub placed_secs: f64,
    /// Closed loop: create returned → Placement seen.
    pub latency: Latency,
    /// Writes the apiserver counted from the first create until the hub went quiet.
    pub writes: Vec<RequestCount>,
    /// Of those, the harness's own (job creates, fake heartbeats).
    pub harness_writes: Vec<RequestCount>,
    /// Seconds from the first create to the reading of the writes.
    pub writes_read_secs: f64,
    /// CPU of each component from the first create to the last Placement.
    pub cpu: Vec<CpuUse>,
    /// The hub's peak resident memory (VmHWM) at the end of its part, KiB.
    pub hub_vm_hwm_kib: u64,
    /// The open loop, rate by rate.
    pub open_loop: Vec<OpenLoop>,
    /// The write-mix replay with no hub, concurrency by concurrency.
    pub ceilings: Vec<Ceiling>,
}

impl ThroughputResult {
    /// Jobs created per second.
    pub fn ingest_rate(&self) -> f64 {
        self.jobs as f64 / self.ingest_secs.max(f64::EPSILON)
    }
    /// Jobs placed (Placement written) per second.
    pub fn placed_rate(&self) -> f64 {
        self.jobs as f64 / self.placed_secs.max(f64::EPSILON)
    }
    /// The replay at `in_flight`, if it ran.
    pub fn ceiling(&self, in_flight: usize) -> Option<&Ceiling> {
        self.ceilings.iter().find(|c| c.in_flight == in_flight)
    }
    /// Writes per job that are not the harness's.
    pub fn hub_writes(&self) -> Vec<RequestCount> {
        apimetrics::subtract(&self.writes, &self.harness_writes)
    }
}

/// The hub binary the run started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BinaryInfo {
    /// Where it was.
    pub path: String,
    /// When it was built (its modification time).
    pub modified: String,
    /// The first 12 hex digits of its SHA-256.
    pub sha256: String,
}

impl BinaryInfo {
    /// Describes the binary at `path`.
    pub fn of(path: &Path) -> Result<BinaryInfo, Error> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path.display().to_string(), e))?;
        let modified = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| k8s_openapi::jiff::Timestamp::try_from(t).ok())
            .map(|t| {
                t.round(k8s_openapi::jiff::Unit::Second)
                    .map_or(t, |r| r)
                    .to_string()
            })
            .unwrap_or_else(|| "unknown".into());
        let digest = hex::encode(sha2::Sha256::digest(&bytes));
        Ok(BinaryInfo {
            path: path.display().to_string(),
            modified,
            sha256: digest.chars().take(12).collect(),
        })
    }
}

/// Everything `gpufed-bench throughput` writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThroughputReport {
    /// The hub binary.
    pub hub_binary: BinaryInfo,
    /// The checkout the benchmark ran from (commit, and whether it had changes).
    pub checkout: String,
    /// What the benchmark ran with next to the charts' defaults.
    pub settings: Vec<Setting>,
    /// One run per federation size.
    pub runs: Vec<ThroughputResult>,
}

/// How the benchmark runs the hub: as the chart does, where it can.
pub fn bench_hub(tools: &Tools) -> Result<BenchHub, Error> {
    Ok(BenchHub {
        lease_duration: settings::chart_lease_duration(tools.root())?,
        log_format: settings::chart_log_format(tools.root())?,
        rust_log: settings::OPERATOR_DEFAULT_LOG.into(),
        pool_heartbeat_timeout: "40s".into(),
        heartbeat_interval: gpufed_crds::KubeDuration::from(agents::HEARTBEAT_INTERVAL).to_string(),
    })
}

/// The commit of the checkout at `root`, noting uncommitted changes.
pub fn checkout(root: &Path) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match (
        git(&["rev-parse", "--short", "HEAD"]),
        git(&["status", "--porcelain", "--untracked-files=no"]),
    ) {
        (Some(c), Some(s)) if s.is_empty() => c,
        (Some(c), Some(_)) => format!("{c} with uncommitted changes"),
        _ => "unknown".into(),
    }
}

/// Runs one throughput measurement.
pub async fn throughput(
    tools: &Tools,
    hub_settings: &BenchHub,
    cfg: &ThroughputConfig,
) -> Result<ThroughputResult, Error> {
    let mut hub = Cluster::start(
        tools,
        &ClusterSpec::api_only("bench-hub").with_controller_manager(),
    )
    .await?;
    hub.install_crds(&gpufed_crds::crds_for(gpufed_crds::Side::Hub))
        .await?;
    hub.create_namespace(JOBS_NAMESPACE).await?;
    hub.create_namespace(CEILING_NAMESPACE).await?;
    let log_format = format!("--log-format={}", hub_settings.log_format);
    start_hub_with(
        tools,
        &mut hub,
        HUB,
        &hub_settings.lease_duration,
        &hub_settings.rust_log,
        &[&log_format],
    )?;
    let c = hub.client();
    let member_names = set_up_members(&c, cfg, hub_settings).await?;
    let heartbeats = Heartbeats::start(c.clone(), member_names.clone());
    wait_schedulable(&c, cfg.members).await?;
    let watch = PlacementWatch::start(&c).await?;

    // Closed loop.
    tracing::info!(members = cfg.members, jobs = cfg.jobs, "closed loop");
    let names = job_names("job", cfg.jobs);
    // From a quiet hub: member registration is done before the first job.
    let (before, renewals_before) = quiet(&heartbeats, &c).await?;
    let cpu_before = CpuSample::take(&hub)?;
    let t0 = Instant::now();
    let submitted = submit_closed(&c, JOBS_NAMESPACE, &names, cfg.in_flight).await?;
    let ingest = t0.elapsed();
    let keys: Vec<_> = submitted.iter().map(|(k, _)| k.clone()).collect();
    let last = watch.wait_all(&keys, Duration::from_secs(600)).await?;
    let cpu = CpuSample::take(&hub)?.since(&cpu_before);
    let placed = last.saturating_duration_since(t0);
    let (after, renewals_after) = quiet(&heartbeats, &c).await?;
    let writes_read = t0.elapsed();
    let latency = Latency::of(&latencies(&watch, &submitted));

    // Open loop.
    let mut open_loop = vec![];
    for &rate in &cfg.open_rates {
        tracing::info!(
            members = cfg.members,
            rate,
            jobs = cfg.open_jobs,
            "open loop"
        );
        let names = job_names(&format!("r{rate:.0}"), cfg.open_jobs);
        let (submitted, first) = submit_open(&c, JOBS_NAMESPACE, &names, rate).await?;
        let submit_done = submitted.iter().map(|(_, t)| *t).max().unwrap_or(first);
        let keys: Vec<_> = submitted.iter().map(|(k, _)| k.clone()).collect();
        let last = watch.wait_all(&keys, Duration::from_secs(600)).await?;
        open_loop.push(OpenLoop {
            rate,
            jobs: cfg.open_jobs,
            submit_secs: submit_done.saturating_duration_since(first).as_secs_f64(),
            placed_secs: last.saturating_duration_since(first).as_secs_f64(),
            latency: Latency::of(&latencies(&watch, &submitted)),
        });
    }

    let hub_pid = hub.pid_of(HUB)?;
    let hub_vm_hwm_kib = procstat::vm_hwm_kib(hub_pid)?;
    hub.check_alive()?;
    hub.stop_process(HUB, Duration::from_secs(5));

    // The ceiling, with no hub.
    let mut ceilings = vec![];
    for &k in &cfg.ceiling_in_flight {
        tracing::info!(
            members = cfg.members,
            in_flight = k,
            jobs = cfg.ceiling_jobs,
            "write-mix replay"
        );
        ceilings.push(
            writemix::ceiling(
                &hub,
                &heartbeats,
                CEILING_NAMESPACE,
                &member_names,
                cfg.ceiling_jobs,
                k,
            )
            .await?,
        );
    }
    // Open through the ceilings too: the apiserver serves the same watch in both.
    drop(watch);
    drop(heartbeats);

    Ok(ThroughputResult {
        members: cfg.members,
        nodes_per_member: cfg.nodes_per_member,
        jobs: cfg.jobs,
        in_flight: cfg.in_flight,
        ingest_secs: ingest.as_secs_f64(),
        placed_secs: placed.as_secs_f64(),
        latency,
        writes: after.writes_since(&before),
        harness_writes: harness_writes(
            u64::try_from(cfg.jobs).unwrap_or(u64::MAX),
            renewals_after - renewals_before,
        ),
        writes_read_secs: writes_read.as_secs_f64(),
        cpu,
        hub_vm_hwm_kib,
        open_loop,
        ceilings,
    })
}

/// The pool, the members (prices differ a little, so CheapestFit has a real choice to make) and
/// their inventories; returns the members' names.
async fn set_up_members(
    c: &Client,
    cfg: &ThroughputConfig,
    hub_settings: &BenchHub,
) -> Result<Vec<String>, Error> {
    create_pool(
        c,
        "default",
        "CheapestFit",
        &hub_settings.pool_heartbeat_timeout,
    )
    .await?;
    let mut names = vec![];
    for m in 0..cfg.members {
        let name = format!("m{m:03}");
        let price = format!("2.{:02}", 10 + m % 80);
        create_member(c, &name, "default", "eu-west", &[("H100", &price)]).await?;
        let nodes = (0..cfg.nodes_per_member)
            .map(|n| node(&format!("{name}-n{n}"), "H100", 81559, 8, 8))
            .collect();
        report_inventory(c, &name, nodes).await?;
        names.push(name);
    }
    Ok(names)
}

/// Waits until the hub has every member Schedulable.
async fn wait_schedulable(c: &Client, members: usize) -> Result<(), Error> {
    let api: Api<gpufed_crds::MemberCluster> = Api::all(c.clone());
    wait_until(
        Duration::from_secs(120),
        "every member Schedulable",
        || async {
            let list = api.list(&ListParams::default()).await.ok()?;
            let ready = list
                .items
                .iter()
                .filter(|m| {
                    m.status.as_ref().is_some_and(|s| {
                        gpufed_crds::conditions::is_true(&s.conditions, "Schedulable")
                    })
                })
                .count();
            (ready == members).then_some(())
        },
    )
    .await
}

/// Reads the apiserver's counters once nothing but Lease renewals has been written for two
/// readings a second apart (the hub has finished with the jobs), or after 30 s.
async fn quiet(heartbeats: &Heartbeats, c: &Client) -> Result<(Counters, u64), Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = heartbeats.scrape(c).await?;
    let mut unchanged = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let next = heartbeats.scrape(c).await?;
        if next.0.writes_other_than_leases() == last.0.writes_other_than_leases() {
            unchanged += 1;
        } else {
            unchanged = 0;
        }
        last = next;
        if unchanged >= 2 {
            break;
        }
    }
    Ok(last)
}
