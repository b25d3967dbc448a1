//! The scale run of `make bench` (issue 11): one hub apiserver, the hub as the chart runs it,
//! `members` member clusters whose agents are all stood in for by one light simulator
//! ([`sim`]: heartbeats, inventories and Placement status at the member chart's default
//! intervals), and a growing number of jobs of which a fixed fraction keeps running and the rest
//! succeed at once.
//!
//! Sizes run one after the other on the same hub (jobs are added, never removed). At each size,
//! once every job has reached the phase the simulator drives it to, a steady window of
//! `window` seconds measures:
//!
//! * the hub's peak resident memory (`VmHWM`) at its end;
//! * the hub's scheduling pass time, from its own histogram
//!   (`gpufed_scheduling_pass_duration_seconds`: sum and count deltas give the mean), over the
//!   steady window and over the ingest before it (absent from hubs built before it existed);
//! * the writes per second the apiserver counted ([`apimetrics`](super::apimetrics)), split into
//!   the simulator's (it counts its own) and everyone else's (the hub's, and the
//!   controller-manager's);
//! * CPU seconds of the apiserver, etcd, the hub and the rest ([`procstat`](super::procstat)).
//!
//! No test asserts on any of it.

pub mod report;
pub mod sim;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use gpufed_crds::{AttemptPhase, ComputeJob, JobPhase, MemberCluster};
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};

use super::apimetrics::{self, Counters, RequestCount};
use super::latency::create_job;
use super::procstat::{self, CpuSample, CpuUse};
use super::settings::BenchHub;
use super::{BinaryInfo, HUB};
use crate::hubctl::{create_member, create_pool};
use crate::joining::{ChartHub, install_hub_chart, spawn_chart_hub};
use crate::{Cluster, ClusterSpec, Error, Tools};
use sim::{Intervals, SimTotals, Simulator, running_of};

/// Namespace of the scale run's jobs.
const JOBS_NAMESPACE: &str = "bench";
/// Creates in flight while adding jobs (as the throughput bench's closed loop).
const CREATES_IN_FLIGHT: usize = 16;
/// Log lines of each component printed when a size fails.
const STOPPED_LOG_LINES: usize = 80;
/// How long the hub's ServiceAccount token lasts: longer than any run (the largest sizes take
/// over an hour on a 2-core machine).
const HUB_TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The hub's scheduling pass histogram.
pub const PASS_HISTOGRAM: &str = "gpufed_scheduling_pass_duration_seconds";

/// Settings of a scale run.
#[derive(Clone, Debug)]
pub struct ScaleConfig {
    /// Member clusters.
    pub members: usize,
    /// Total jobs at each size, ascending.
    pub sizes: Vec<usize>,
    /// Share of the jobs that keep running (the rest succeed at once).
    pub running_fraction: f64,
    /// The steady window at each size.
    pub window: Duration,
}

impl ScaleConfig {
    /// Running jobs per million jobs.
    pub fn running_per_million(&self) -> u64 {
        (self.running_fraction.clamp(0.0, 1.0) * 1e6).round() as u64
    }

    /// 8-GPU nodes per member: room for the running jobs of the largest size half again over,
    /// at least one.
    pub fn nodes_per_member(&self) -> usize {
        let largest = self.sizes.iter().copied().max().unwrap_or(0) as u64;
        let running = running_of(largest, self.running_per_million()) * 3 / 2;
        let per_member = u64::from(sim::GPUS_PER_NODE) * self.members.max(1) as u64;
        usize::try_from(running.div_ceil(per_member).max(1)).unwrap_or(1)
    }
}

/// Mean pass time over a stretch, from the histogram's sum and count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PassTime {
    /// Passes.
    pub passes: u64,
    /// Mean seconds per pass (none without passes).
    pub mean_secs: Option<f64>,
}

/// `(sum, count)` of the histogram `name` over all its series in a Prometheus text exposition,
/// if the text has it.
pub fn histogram_sum_count(text: &str, name: &str) -> Option<(f64, u64)> {
    let value = |suffix: &str| -> Option<f64> {
        let series = format!("{name}{suffix}");
        let values: Vec<f64> = text
            .lines()
            .filter(|l| {
                l.strip_prefix(&series)
                    .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    Some((value("_sum")?, value("_count")?.max(0.0).round() as u64))
}

/// The hub's gauge of the objects its caches hold, by kind.
pub const CACHED_OBJECTS: &str = "gpufed_hub_cached_objects";

/// The values of gauge `name` in a Prometheus text exposition, by the value of its label `label`
/// (series without it are left out).
pub fn gauge_by_label(text: &str, name: &str, label: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix('{')?;
            let (mut labels, value) = apimetrics::split_labels(rest)?;
            let v: f64 = value.trim().parse().ok()?;
            Some((labels.remove(label)?, v.max(0.0).round() as u64))
        })
        .collect()
}

impl PassTime {
    /// From two scrapes of the hub's `/metrics` (none when either lacks the histogram).
    pub fn between(before: &str, after: &str) -> Option<PassTime> {
        let (s0, n0) = histogram_sum_count(before, PASS_HISTOGRAM)?;
        let (s1, n1) = histogram_sum_count(after, PASS_HISTOGRAM)?;
        let passes = n1.saturating_sub(n0);
        Some(PassTime {
            passes,
            mean_secs: (passes > 0).then(|| (s1 - s0).max(0.0) / passes as f64),
        })
    }
}

/// One size of the scale run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleSize {
    /// Jobs on the hub.
    pub jobs: usize,
    /// Of those, running (the rest succeeded).
    pub running: usize,
    /// Jobs created for this size.
    pub added: usize,
    /// Seconds to create them.
    pub ingest_secs: f64,
    /// Seconds from the first create to every job in its final phase for the run.
    pub settled_secs: f64,
    /// Pass time from the first create to settled.
    pub pass_ingest: Option<PassTime>,
    /// Pass time over the steady window.
    pub pass_steady: Option<PassTime>,
    /// The steady window, seconds.
    pub window_secs: f64,
    /// Writes the apiserver counted over the window.
    pub writes: Vec<RequestCount>,
    /// The simulator's requests over the window.
    pub sim: SimTotals,
    /// CPU over the window.
    pub cpu: Vec<CpuUse>,
    /// Longest heartbeat round and inventory round in the window, seconds.
    pub sim_round_max_secs: (f64, f64),
    /// Members Schedulable at the end of the window.
    pub members_schedulable: usize,
    /// The hub's `VmHWM` at the end of the window, KiB.
    pub hub_vm_hwm_kib: u64,
    /// The hub's `VmRSS` then, KiB.
    pub hub_vm_rss_kib: u64,
    /// What the hub's caches held then, by kind (`gpufed_hub_cached_objects`; empty from hubs
    /// built before it existed, and in reports written before it was read).
    #[serde(default)]
    pub hub_cached: BTreeMap<String, u64>,
    /// The hub's threads then (each may hold a glibc malloc arena; 0 in reports written before
    /// it was read).
    #[serde(default)]
    pub hub_threads: u64,
    /// The hub's `VmHWM` when every job had settled, before the steady window, KiB (0 in
    /// reports written before it was read).
    #[serde(default)]
    pub hub_vm_hwm_settled_kib: u64,
    /// Jobs waiting and the hub's `VmRSS`, every [`SAMPLE_EVERY`] from the first create of this
    /// size until every job settled (empty in reports written before it was sampled).
    #[serde(default)]
    pub trace: Vec<HubSample>,
}

/// How often the hub is sampled while a size is created and settled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// One look at the hub while a size is created and settled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HubSample {
    /// Seconds since the size's first create.
    pub secs: f64,
    /// Jobs of the run neither Running, Succeeded nor Failed (as the benchmark's watch saw them).
    pub waiting: usize,
    /// The hub's `VmRSS`, KiB.
    pub rss_kib: u64,
}

/// What was measured of a size that did not settle, from its first create until the run stopped:
/// where the time and the memory went.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoppedSize {
    /// Jobs of the size (the run's total once created).
    pub jobs: usize,
    /// Seconds from the size's first create to the stop.
    pub secs: f64,
    /// Jobs by phase at the stop: Running, Succeeded, Failed, neither.
    pub phases: (usize, usize, usize, usize),
    /// CPU by component over those seconds.
    pub cpu: Vec<CpuUse>,
    /// Writes the apiserver counted over those seconds.
    pub writes: Vec<RequestCount>,
    /// The simulator's requests over those seconds.
    pub sim: SimTotals,
    /// Longest heartbeat round and inventory round over those seconds.
    pub sim_round_max_secs: (f64, f64),
    /// Members Schedulable at the stop.
    pub members_schedulable: usize,
    /// Writes the hub's leadership fence refused over those seconds, by target
    /// (`gpufed_hub_writes_refused_total`).
    pub writes_refused: BTreeMap<String, u64>,
    /// The hub's `VmHWM` at the stop, KiB.
    pub hub_vm_hwm_kib: u64,
    /// The hub's `VmRSS` at the stop, KiB.
    pub hub_vm_rss_kib: u64,
    /// What the hub's caches held at the stop, by kind.
    pub hub_cached: BTreeMap<String, u64>,
    /// Jobs waiting and the hub's `VmRSS`, every [`SAMPLE_EVERY`] until the stop.
    pub trace: Vec<HubSample>,
}

impl StoppedSize {
    /// Writes over those seconds that are not the simulator's.
    pub fn hub_writes(&self) -> Vec<RequestCount> {
        apimetrics::subtract(&self.writes, &self.sim.writes())
    }
}

/// The name of the hub's counter of writes its leadership fence refused.
pub const WRITES_REFUSED: &str = "gpufed_hub_writes_refused_total";

/// What a size is measured against when it stops: taken before its first create.
struct SizeStart {
    t0: Instant,
    cpu: CpuSample,
    counters: Counters,
    sim: SimTotals,
    metrics: String,
}

impl ScaleSize {
    /// Writes over the window that are not the simulator's.
    pub fn hub_writes(&self) -> Vec<RequestCount> {
        apimetrics::subtract(&self.writes, &self.sim.writes())
    }
    /// Jobs created per second for this size.
    pub fn ingest_rate(&self) -> f64 {
        self.added as f64 / self.ingest_secs.max(f64::EPSILON)
    }
}

/// Everything `gpufed-bench scale` writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleReport {
    /// The hub binary.
    pub hub_binary: BinaryInfo,
    /// The checkout the benchmark ran from.
    pub checkout: String,
    /// Member clusters.
    pub members: usize,
    /// 8-GPU nodes per member.
    pub nodes_per_member: usize,
    /// Share of jobs kept running.
    pub running_fraction: f64,
    /// Sizes asked for.
    pub sizes_asked: Vec<usize>,
    /// The simulator's intervals (the member chart's defaults).
    pub intervals: Intervals,
    /// Seconds from the first member created to every member Schedulable.
    pub setup_secs: f64,
    /// The sizes measured, ascending.
    pub sizes: Vec<ScaleSize>,
    /// Why the run stopped before the last size asked for, if it did.
    pub stopped: Option<String>,
    /// What was measured of the size it stopped at, where it got that far (none in reports
    /// written before it was measured).
    #[serde(default)]
    pub stopped_size: Option<StoppedSize>,
}

/// The member chart's agent intervals and the pool timeout the benchmark runs with.
pub fn chart_intervals(root: &Path, hub: &BenchHub) -> Result<Intervals, Error> {
    let path = root.join("charts/gpufed-member/values.yaml");
    let text =
        std::fs::read_to_string(&path).map_err(|e| Error::io(path.display().to_string(), e))?;
    let values: serde_json::Value = serde_norway::from_str(&text)
        .map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    let duration = |key: &str| -> Result<Duration, Error> {
        let v = values["agent"][key]
            .as_str()
            .ok_or_else(|| Error::Other(format!("{}: no agent.{key}", path.display())))?;
        parse_duration(v).map_err(|e| Error::Other(format!("agent.{key}: {e}")))
    };
    Ok(Intervals {
        heartbeat: duration("heartbeatInterval")?,
        inventory: duration("inventoryInterval")?,
        usage: duration("usageReportInterval")?,
        pool_timeout: parse_duration(&hub.pool_heartbeat_timeout)
            .map_err(|e| Error::Other(format!("pool heartbeat timeout: {e}")))?,
    })
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    s.parse::<gpufed_crds::KubeDuration>()
        .map(|d| d.as_duration())
        .map_err(|e| format!("{s}: {e}"))
}

/// `GET /metrics` of the hub on 127.0.0.1:`port` (empty if it does not answer).
async fn hub_metrics(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let read = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    match tokio::time::timeout(Duration::from_secs(10), read).await {
        Ok(Ok(text)) => text,
        _ => String::new(),
    }
}

/// By job name: its phase, why it failed (once Failed), and how each of its attempts that ended
/// without succeeding ended (`phase reason`).
type PhaseMap = HashMap<String, (JobPhase, Option<String>, Vec<String>)>;

/// Every job's phase (and, once Failed, why), from a watch.
struct JobPhases {
    phases: Arc<Mutex<PhaseMap>>,
    task: tokio::task::JoinHandle<()>,
}

/// Jobs by phase, as the bench waits for a size to settle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct PhaseCounts {
    running: usize,
    succeeded: usize,
    failed: usize,
    /// Any other phase (Pending, Placed, …).
    unsettled: usize,
    /// The reason and message of one Failed job.
    failed_example: Option<String>,
    /// Attempts that ended without succeeding, by how (`Lost HeartbeatExpired`, …): why jobs
    /// that had settled are being placed again.
    ended: std::collections::BTreeMap<String, usize>,
}

impl PhaseCounts {
    fn of<'a>(
        phases: impl Iterator<Item = &'a (JobPhase, Option<String>, Vec<String>)>,
    ) -> PhaseCounts {
        let mut c = PhaseCounts::default();
        for (phase, why, ended) in phases {
            for how in ended {
                *c.ended.entry(how.clone()).or_default() += 1;
            }
            match phase {
                JobPhase::Running => c.running += 1,
                JobPhase::Succeeded => c.succeeded += 1,
                JobPhase::Failed => {
                    c.failed += 1;
                    if c.failed_example.is_none() {
                        c.failed_example = why.clone();
                    }
                }
                _ => c.unsettled += 1,
            }
        }
        c
    }
}

impl PhaseCounts {
    /// The attempts that ended without succeeding, most common first: `Lost HeartbeatExpired
    /// ×12, …`, or `none`.
    fn ended_summary(&self) -> String {
        let mut by: Vec<(&String, &usize)> = self.ended.iter().collect();
        by.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        if by.is_empty() {
            return "none".into();
        }
        by.iter()
            .map(|(how, n)| format!("{} ×{n}", how.trim_end()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl JobPhases {
    fn start(client: &Client) -> JobPhases {
        let phases: Arc<Mutex<PhaseMap>> = Arc::default();
        let api: Api<ComputeJob> = Api::namespaced(client.clone(), JOBS_NAMESPACE);
        let task = {
            let phases = phases.clone();
            tokio::spawn(async move {
                let mut events = watcher(api, watcher::Config::default())
                    .default_backoff()
                    .boxed();
                while let Some(event) = events.next().await {
                    if let Ok(watcher::Event::Apply(j) | watcher::Event::InitApply(j)) = event {
                        let status = j.status.as_ref();
                        let phase = status.map(|s| s.phase).unwrap_or_default();
                        let why = status.filter(|_| phase == JobPhase::Failed).map(|s| {
                            format!(
                                "{}: {} ({})",
                                j.name_any(),
                                s.message.as_deref().unwrap_or(""),
                                s.reason.as_deref().unwrap_or("")
                            )
                        });
                        let ended = status
                            .into_iter()
                            .flat_map(|s| s.attempts.iter())
                            .filter(|a| a.phase.is_finished() && a.phase != AttemptPhase::Succeeded)
                            .map(|a| format!("{:?} {}", a.phase, a.reason.as_deref().unwrap_or("")))
                            .collect();
                        if let Ok(mut p) = phases.lock() {
                            p.insert(j.name_any(), (phase, why, ended));
                        }
                    }
                }
            })
        };
        JobPhases { phases, task }
    }

    fn counts(&self) -> PhaseCounts {
        self.phases
            .lock()
            .map_or_else(|_| PhaseCounts::default(), |p| PhaseCounts::of(p.values()))
    }
}

impl Drop for JobPhases {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Members whose `Schedulable` condition is true.
async fn schedulable(c: &Client) -> Result<usize, Error> {
    let list = Api::<MemberCluster>::all(c.clone())
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("listing members"))?;
    Ok(list
        .items
        .iter()
        .filter(|m| {
            m.status
                .as_ref()
                .is_some_and(|s| gpufed_crds::conditions::is_true(&s.conditions, "Schedulable"))
        })
        .count())
}

/// Runs the scale measurement, size after size; a size that fails ends the run with what was
/// measured before it (and why, in `stopped`). `measured` sees the report after each size, marked
/// as still going (`stopped` says which sizes are left), so a caller can keep it where a run cut
/// short from outside (a timeout, a killed process) would otherwise leave nothing.
pub async fn scale(
    tools: &Tools,
    hub_settings: &BenchHub,
    cfg: &ScaleConfig,
    hub_binary: BinaryInfo,
    checkout: String,
    mut measured: impl FnMut(&ScaleReport),
) -> Result<ScaleReport, Error> {
    let intervals = chart_intervals(tools.root(), hub_settings)?;
    // The hub as the chart runs it (its ServiceAccount, RBAC and client rate), on an apiserver
    // with API Priority and Fairness, so that the chart's FlowSchemas put the hub's requests in a
    // priority level of their own and its leader Lease renewals in `leader-election`, as on a
    // production apiserver.
    let mut hub = Cluster::start(
        tools,
        &ClusterSpec::api_only("bench-scale")
            .with_controller_manager()
            .with_api_priority_and_fairness(),
    )
    .await?;
    install_hub_chart(tools, &hub, &[]).await?;
    hub.create_namespace(JOBS_NAMESPACE).await?;
    let port = spawn_chart_hub(
        tools,
        &mut hub,
        &ChartHub {
            process: HUB.into(),
            log_format: hub_settings.log_format.clone(),
            lease_duration: hub_settings.lease_duration.clone(),
            rust_log: hub_settings.rust_log.clone(),
            token_lifetime: HUB_TOKEN_LIFETIME,
            args: vec![],
        },
    )
    .await?
    .port();
    let c = hub.client();
    let setup = Instant::now();
    create_pool(
        &c,
        "default",
        "CheapestFit",
        &hub_settings.pool_heartbeat_timeout,
    )
    .await?;
    let names: Vec<String> = (0..cfg.members).map(|m| format!("m{m:04}")).collect();
    let created: Vec<Result<(), Error>> = futures::stream::iter(names.iter().enumerate())
        .map(|(m, name)| {
            let c = &c;
            async move {
                let price = format!("2.{:02}", 10 + m % 80);
                create_member(c, name, "default", "eu-west", &[("H100", &price)])
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(CREATES_IN_FLIGHT)
        .collect()
        .await;
    created.into_iter().collect::<Result<Vec<()>, Error>>()?;
    let sim = Simulator::start(
        c.clone(),
        names,
        cfg.nodes_per_member(),
        intervals,
        cfg.running_per_million(),
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let n = schedulable(&c).await?;
        if n == cfg.members {
            break;
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!("every member Schedulable ({n} of {})", cfg.members),
                after: Duration::from_secs(600),
            });
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let setup_secs = setup.elapsed().as_secs_f64();
    tracing::info!(members = cfg.members, setup_secs, "members Schedulable");

    let hub_pid = hub.pid_of(HUB)?;
    let phases = JobPhases::start(&c);
    let mut report = ScaleReport {
        hub_binary,
        checkout,
        members: cfg.members,
        nodes_per_member: cfg.nodes_per_member(),
        running_fraction: cfg.running_fraction,
        sizes_asked: cfg.sizes.clone(),
        intervals,
        setup_secs,
        sizes: vec![],
        stopped: None,
        stopped_size: None,
    };
    let mut have = 0;
    for &size in &cfg.sizes {
        if size <= have {
            continue;
        }
        let step = Step {
            hub: &mut hub,
            client: &c,
            sim: &sim,
            phases: &phases,
            port,
            hub_pid,
            cfg,
        };
        match step.run(have, size).await {
            Ok(s) => {
                tracing::info!(jobs = size, hwm_kib = s.hub_vm_hwm_kib, "size measured");
                report.sizes.push(s);
                have = size;
                let left: Vec<String> = cfg
                    .sizes
                    .iter()
                    .filter(|&&n| n > size)
                    .map(|n| n.to_string())
                    .collect();
                if !left.is_empty() {
                    measured(&ScaleReport {
                        stopped: Some(format!(
                            "after {size} jobs: the run was still going, {} jobs not measured yet",
                            left.join(" and ")
                        )),
                        ..report.clone()
                    });
                }
            }
            Err((e, stopped_size)) => {
                // What the hub, its apiserver and etcd last said is the first thing to read: their
                // log tails go to stderr, the report keeps the reason in one line.
                hub.dump_logs(STOPPED_LOG_LINES);
                report.stopped = Some(format!("at {size} jobs: {}", e.summary()));
                report.stopped_size = stopped_size;
                break;
            }
        }
    }
    drop(phases);
    drop(sim);
    hub.stop_process(HUB, Duration::from_secs(5));
    Ok(report)
}

/// One size of the run, on the running hub.
struct Step<'a> {
    hub: &'a mut Cluster,
    client: &'a Client,
    sim: &'a Simulator,
    phases: &'a JobPhases,
    port: u16,
    hub_pid: u32,
    cfg: &'a ScaleConfig,
}

impl Step<'_> {
    /// Measures one size; if it does not settle, the error comes with what was measured of it
    /// until then (none if even that could not be read).
    async fn run(
        mut self,
        have: usize,
        size: usize,
    ) -> Result<ScaleSize, (Error, Option<StoppedSize>)> {
        let start = match self.start().await {
            Ok(start) => start,
            Err(e) => return Err((e, None)),
        };
        let mut trace = vec![];
        match self.measure(have, size, &start, &mut trace).await {
            Ok(measured) => Ok(measured),
            Err(e) => {
                let stopped = self.stopped(size, &start, trace).await;
                Err((e, stopped))
            }
        }
    }

    async fn start(&self) -> Result<SizeStart, Error> {
        // The simulator's longest rounds count from here.
        self.sim.take_round_max();
        Ok(SizeStart {
            metrics: hub_metrics(self.port).await,
            counters: Counters::scrape(self.client).await?,
            cpu: CpuSample::take(self.hub)?,
            sim: self.sim.totals(),
            t0: Instant::now(),
        })
    }

    /// What a size that did not settle had come to (none if the apiserver's counters cannot be
    /// read any more).
    async fn stopped(
        &self,
        size: usize,
        start: &SizeStart,
        trace: Vec<HubSample>,
    ) -> Option<StoppedSize> {
        let counters = Counters::scrape(self.client).await.ok()?;
        let secs = start.t0.elapsed().as_secs_f64();
        // A hub that exited has no CPU or memory left to read: those stay empty.
        let cpu = CpuSample::take(self.hub)
            .map(|c| c.since(&start.cpu))
            .unwrap_or_default();
        let metrics = hub_metrics(self.port).await;
        let refused_before = gauge_by_label(&start.metrics, WRITES_REFUSED, "target");
        let writes_refused = gauge_by_label(&metrics, WRITES_REFUSED, "target")
            .into_iter()
            .map(|(target, n)| {
                let was = refused_before.get(&target).copied().unwrap_or(0);
                (target, n.saturating_sub(was))
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        let counts = self.phases.counts();
        Some(StoppedSize {
            jobs: size,
            secs,
            phases: (
                counts.running,
                counts.succeeded,
                counts.failed,
                counts.unsettled,
            ),
            cpu,
            writes: counters.writes_since(&start.counters),
            sim: self.sim.totals().since(&start.sim),
            sim_round_max_secs: self.sim.take_round_max(),
            members_schedulable: schedulable(self.client).await.unwrap_or(0),
            writes_refused,
            hub_vm_hwm_kib: procstat::vm_hwm_kib(self.hub_pid).unwrap_or(0),
            hub_vm_rss_kib: procstat::status_number(self.hub_pid, "VmRSS:").unwrap_or(0),
            hub_cached: gauge_by_label(&metrics, CACHED_OBJECTS, "kind"),
            trace,
        })
    }

    async fn measure(
        &mut self,
        have: usize,
        size: usize,
        start: &SizeStart,
        trace: &mut Vec<HubSample>,
    ) -> Result<ScaleSize, Error> {
        let running = usize::try_from(running_of(size as u64, self.cfg.running_per_million()))
            .unwrap_or(size);
        tracing::info!(jobs = size, running, "adding jobs");
        let metrics_before = &start.metrics;
        let t0 = start.t0;
        let creates = futures::stream::iter(have..size)
            .map(|i| {
                let (c, sim) = (self.client, self.sim);
                async move {
                    let job = create_job(c, JOBS_NAMESPACE, &format!("job-{i:06}")).await?;
                    sim.created(&job.metadata.uid.clone().unwrap_or_default(), i as u64);
                    Ok(job)
                }
            })
            .buffer_unordered(CREATES_IN_FLIGHT)
            .collect::<Vec<Result<ComputeJob, Error>>>();
        tokio::pin!(creates);
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        let created = loop {
            tokio::select! {
                created = &mut creates => break created,
                _ = tick.tick() => trace.push(self.sample(t0)),
            }
        };
        created.into_iter().collect::<Result<Vec<_>, Error>>()?;
        let ingest_secs = t0.elapsed().as_secs_f64();
        let added = size - have;
        tracing::info!(jobs = size, ingest_secs, "created");
        // Settling is timed from the last create: on a slow machine the creates alone can take
        // longer than any fixed allowance for the size.
        let timeout = Duration::from_secs(300 + added as u64 / 10);
        let created_at = Instant::now();
        let mut told = Instant::now();
        let mut sampled = Instant::now();
        loop {
            if sampled.elapsed() >= SAMPLE_EVERY {
                trace.push(self.sample(t0));
                sampled = Instant::now();
            }
            let counts = self.phases.counts();
            let (r, s) = (counts.running, counts.succeeded);
            if r == running && s == size - running {
                break;
            }
            // A Failed job never settles: no point waiting for the time limit.
            if counts.failed > 0 {
                return Err(Error::Other(format!(
                    "{} of {size} jobs Failed ({r} Running, {s} Succeeded, {} not yet either), \
                     e.g. {}",
                    counts.failed,
                    counts.unsettled,
                    counts.failed_example.unwrap_or_default()
                )));
            }
            // A hub that exited (it does when it cannot renew its leader Lease in time: a
            // Deployment would restart it, nothing here does) places nothing more: say so now,
            // with its last words, rather than at the step's time limit.
            self.hub.check_alive()?;
            if told.elapsed() >= Duration::from_secs(30) {
                let sim = self.sim.totals();
                tracing::info!(
                    jobs = size,
                    running = r,
                    succeeded = s,
                    unsettled = counts.unsettled,
                    sim_statuses_failed = sim.statuses_failed,
                    sim_inventories_failed = sim.inventories_failed,
                    sim_renewals_failed = sim.renewals_failed,
                    sim_failures = %self.sim.failures(),
                    ended = %counts.ended_summary(),
                    "settling"
                );
                told = Instant::now();
            }
            if created_at.elapsed() >= timeout {
                return Err(Error::Timeout {
                    what: format!(
                        "{size} jobs settled after the last create ({r} of {running} Running, \
                         {s} of {} Succeeded, {} neither; attempts ended without succeeding: {}; \
                         the simulator's failed requests: {})",
                        size - running,
                        counts.unsettled,
                        counts.ended_summary(),
                        self.sim.failures()
                    ),
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let settled_secs = t0.elapsed().as_secs_f64();
        let hub_vm_hwm_settled_kib = procstat::vm_hwm_kib(self.hub_pid)?;
        let metrics_settled = hub_metrics(self.port).await;
        tracing::info!(jobs = size, settled_secs, "settled; steady window");

        // The steady window.
        self.sim.take_round_max();
        let counters0 = Counters::scrape(self.client).await?;
        let sim0 = self.sim.totals();
        let cpu0 = CpuSample::take(self.hub)?;
        let w0 = Instant::now();
        tokio::time::sleep(self.cfg.window).await;
        let counters1 = Counters::scrape(self.client).await?;
        let sim1 = self.sim.totals();
        let cpu = CpuSample::take(self.hub)?.since(&cpu0);
        let window_secs = w0.elapsed().as_secs_f64();
        let metrics_after = hub_metrics(self.port).await;
        let sim_round_max_secs = self.sim.take_round_max();
        let hub_vm_hwm_kib = procstat::vm_hwm_kib(self.hub_pid)?;
        let hub_vm_rss_kib = procstat::status_number(self.hub_pid, "VmRSS:").unwrap_or(0);
        let hub_threads = procstat::status_number(self.hub_pid, "Threads:").unwrap_or(0);
        self.hub.check_alive()?;
        Ok(ScaleSize {
            jobs: size,
            running,
            added,
            ingest_secs,
            settled_secs,
            pass_ingest: PassTime::between(metrics_before, &metrics_settled),
            pass_steady: PassTime::between(&metrics_settled, &metrics_after),
            window_secs,
            writes: counters1.writes_since(&counters0),
            sim: sim1.since(&sim0),
            cpu,
            sim_round_max_secs,
            members_schedulable: schedulable(self.client).await?,
            hub_vm_hwm_kib,
            hub_vm_rss_kib,
            hub_cached: gauge_by_label(&metrics_after, CACHED_OBJECTS, "kind"),
            hub_threads,
            hub_vm_hwm_settled_kib,
            trace: std::mem::take(trace),
        })
    }

    /// How many jobs wait now, and the hub's `VmRSS`.
    fn sample(&self, t0: Instant) -> HubSample {
        HubSample {
            secs: t0.elapsed().as_secs_f64(),
            waiting: self.phases.counts().unsettled,
            rss_kib: procstat::status_number(self.hub_pid, "VmRSS:").unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# TYPE gpufed_scheduling_pass_duration_seconds histogram\n\
gpufed_scheduling_pass_duration_seconds_bucket{le=\"0.005\"} 3\n\
gpufed_scheduling_pass_duration_seconds_sum 0.5\n\
gpufed_scheduling_pass_duration_seconds_count 10\n\
gpufed_scheduling_passes_total{pool=\"default\"} 4\n";
    const AFTER: &str = "gpufed_scheduling_pass_duration_seconds_sum 2.5\n\
gpufed_scheduling_pass_duration_seconds_count 30\n";

    #[test]
    fn the_hubs_cached_objects_are_read_by_kind() {
        let text = "# HELP gpufed_hub_cached_objects Objects.\n\
# TYPE gpufed_hub_cached_objects gauge\n\
gpufed_hub_cached_objects{kind=\"ComputeJob\"} 20000\n\
gpufed_hub_cached_objects{kind=\"Placement\"} 2000\n\
gpufed_hub_cached_objects_total 3\n\
gpufed_hub_cached_objectsx{kind=\"Lease\"} 9\n\
gpufed_hub_cached_objects 7\n";
        let got = gauge_by_label(text, CACHED_OBJECTS, "kind");
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            vec![
                ("ComputeJob".to_string(), 20000),
                ("Placement".to_string(), 2000)
            ]
        );
        assert!(gauge_by_label("", CACHED_OBJECTS, "kind").is_empty());
    }

    #[test]
    fn the_mean_pass_time_comes_from_the_histograms_sum_and_count_deltas() {
        assert_eq!(histogram_sum_count(BEFORE, PASS_HISTOGRAM), Some((0.5, 10)));
        let p = PassTime::between(BEFORE, AFTER).unwrap();
        assert_eq!(p.passes, 20);
        assert!((p.mean_secs.unwrap() - 0.1).abs() < 1e-9);
        assert_eq!(PassTime::between(BEFORE, BEFORE).unwrap().mean_secs, None);
    }

    #[test]
    fn a_hub_without_the_histogram_has_no_pass_time() {
        assert_eq!(PassTime::between("gpufed_leader 1\n", AFTER), None);
        assert_eq!(PassTime::between("", ""), None);
    }

    #[test]
    fn labelled_series_are_summed() {
        let text = "x_sum{pool=\"a\"} 1\nx_sum{pool=\"b\"} 2\nx_count{pool=\"a\"} 3\nx_count{pool=\"b\"} 4\nx_sumx 9\n";
        assert_eq!(histogram_sum_count(text, "x"), Some((3.0, 7)));
    }

    #[test]
    fn phase_counts_keep_one_failed_jobs_reason_count_the_rest_as_unsettled_and_tally_ended_attempts()
     {
        let lost = |why: &str| vec![format!("Lost {why}")];
        let phases = [
            (JobPhase::Running, None, lost("HeartbeatExpired")),
            (JobPhase::Succeeded, None, vec![]),
            (JobPhase::Pending, None, lost("HeartbeatExpired")),
            (
                JobPhase::Failed,
                Some("job-1: no fit (StartTimeout)".to_string()),
                vec!["Failed StartTimeout".into()],
            ),
            (JobPhase::Failed, Some("job-2: other".to_string()), vec![]),
        ];
        let c = PhaseCounts::of(phases.iter());
        assert_eq!(
            c.ended_summary(),
            "Lost HeartbeatExpired ×2, Failed StartTimeout ×1"
        );
        assert_eq!(PhaseCounts::default().ended_summary(), "none");
        assert_eq!(
            (c.running, c.succeeded, c.failed, c.unsettled),
            (1, 1, 2, 1)
        );
        assert_eq!(
            c.failed_example.as_deref(),
            Some("job-1: no fit (StartTimeout)")
        );
    }

    #[test]
    fn nodes_leave_room_for_the_largest_sizes_running_jobs() {
        let mut cfg = ScaleConfig {
            members: 1000,
            sizes: vec![1000, 10_000],
            running_fraction: 0.1,
            window: Duration::from_secs(60),
        };
        assert_eq!(cfg.nodes_per_member(), 1);
        cfg.sizes.push(100_000);
        // 10,000 running × 1.5 over 1,000 members of 8 GPUs a node.
        assert_eq!(cfg.nodes_per_member(), 2);
    }

    #[test]
    fn the_chart_intervals_are_read_from_the_checkout() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let hub = BenchHub {
            lease_duration: "15s".into(),
            log_format: "json".into(),
            rust_log: String::new(),
            pool_heartbeat_timeout: "40s".into(),
            heartbeat_interval: "5s".into(),
        };
        let i = chart_intervals(root, &hub).unwrap();
        assert!(i.heartbeat > Duration::ZERO && i.heartbeat < i.pool_timeout);
        assert!(i.inventory >= i.heartbeat);
        assert!(i.usage >= i.inventory);
        assert_eq!(i.pool_timeout, Duration::from_secs(40));
    }
}
