//! The pool's utilisation on a mixed workload, a step of `make bench` (issue 17 item 6): how much
//! of the GPU time a pool has does the hub keep allocated when jobs of every shape wait?
//!
//! Three members join a hub with the charts ([`Pool::join`]: agents and gpu-probe as processes,
//! kwok nodes): two with two 8-GPU nodes each (H100 and A100) and one with a single 8-GPU H100
//! node — 40 GPUs. The workload ([`MIX`]) goes in at once, interleaved, 16 creates in flight:
//! single-GPU jobs of 20 to 60 s, 8-GPU jobs, gangs of 2 × 4 GPUs, gangs of 2 × 8 GPUs that need
//! both nodes of one member, and jobs that fit nowhere (16 GPUs on one node; a model no member
//! has). Each pod runs for its job's `GPUFED_SIM_DURATION` once kwok starts it. The run waits
//! until every job that fits has ended and every one that does not has a reason.
//!
//! Figures, all from the jobs' own attempt records on the hub (whole seconds):
//! * **allocated ÷ available**: GPU-seconds from each attempt's Placement to its end, over the
//!   pool's GPUs × the makespan (first create → last end) — what the pool's status figure counts;
//! * **running ÷ available**: the same from pods started to end — the GPUs' time spent on work;
//! * **lower bound ÷ makespan**: the makespan no scheduler could beat (the work's GPU-seconds ÷
//!   the pool's GPUs, or the longest job if longer) over the one measured;
//! * the hub's own `GpuPool.status.utilization`, its allocated and available GPU-seconds read
//!   when the first job goes in and at the end, as a cross-check (refreshed every 30 s).
//!
//! No test asserts on any of it.

use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use gpufed_crds::{ComputeJob, GpuPool, JobPhase};
use kube::api::{Api, ListParams, PostParams};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::BinaryInfo;
use crate::joining::{MemberPlan, Pool};
use crate::{Error, NodeSpec, Tools, wait_until};

/// Namespace of the ComputeJobs on the hub.
const NAMESPACE: &str = "mixed";
/// Creates in flight while submitting.
const IN_FLIGHT: usize = 16;
/// The pool's heartbeat timeout: GpuPool's default.
const HEARTBEAT_TIMEOUT: &str = "40s";
/// How long the workload may take to end.
const END_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// One kind of job in the workload.
#[derive(Clone, Copy, Debug)]
pub struct JobClass {
    /// Short name, also the jobs' name prefix.
    pub name: &'static str,
    /// Jobs of this class per unit of [`UtilisationConfig::scale`].
    pub count: usize,
    /// Replicas (a gang when more than one).
    pub replicas: u32,
    /// GPUs per replica.
    pub gpus_per_replica: u32,
    /// GPU models the job accepts.
    pub models: &'static [&'static str],
    /// Run times of the class's jobs, in turn.
    pub seconds: &'static [u64],
    /// Whether some member can run it (a job that cannot must end up waiting with a reason).
    pub fits: bool,
}

/// The workload, per unit of scale.
pub const MIX: [JobClass; 6] = [
    JobClass {
        name: "single",
        count: 40,
        replicas: 1,
        gpus_per_replica: 1,
        models: &["H100", "A100"],
        seconds: &[20, 30, 40, 50, 60],
        fits: true,
    },
    JobClass {
        name: "eight",
        count: 6,
        replicas: 1,
        gpus_per_replica: 8,
        models: &["H100", "A100"],
        seconds: &[60],
        fits: true,
    },
    JobClass {
        name: "gang-2x4",
        count: 6,
        replicas: 2,
        gpus_per_replica: 4,
        models: &["H100", "A100"],
        seconds: &[45],
        fits: true,
    },
    JobClass {
        name: "gang-2x8",
        count: 4,
        replicas: 2,
        gpus_per_replica: 8,
        models: &["H100", "A100"],
        seconds: &[45],
        fits: true,
    },
    JobClass {
        name: "sixteen",
        count: 2,
        replicas: 1,
        gpus_per_replica: 16,
        models: &["H100", "A100"],
        seconds: &[30],
        fits: false,
    },
    JobClass {
        name: "b200",
        count: 2,
        replicas: 1,
        gpus_per_replica: 1,
        models: &["B200"],
        seconds: &[30],
        fits: false,
    },
];

/// Settings of the run.
#[derive(Clone, Debug)]
pub struct UtilisationConfig {
    /// Copies of [`MIX`] submitted.
    pub scale: usize,
}

/// The members: (name, GPU model, nodes of 8 GPUs, price).
const MEMBERS: [(&str, &str, &str, usize, &str); 3] = [
    ("mixed-a", "H100-SXM-80GB", "H100", 2, "2.40"),
    ("mixed-b", "A100-SXM-40GB", "A100", 2, "1.20"),
    ("mixed-c", "H100-SXM-80GB", "H100", 1, "2.00"),
];

/// One job as submitted, and what became of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobOutcome {
    /// Job name.
    pub name: String,
    /// Its class.
    pub class: String,
    /// GPUs of the whole job (replicas × GPUs per replica).
    pub gpus: u32,
    /// Run time asked for, seconds.
    pub seconds: u64,
    /// Whether the workload expects it to fit.
    pub fits: bool,
    /// Phase at the end.
    pub phase: String,
    /// Why it waits or failed, at the end.
    pub reason: Option<String>,
    /// Each attempt: (placed, started, ended), milliseconds since the epoch.
    pub attempts: Vec<AttemptSpan>,
}

/// When one attempt was placed, started and ended (milliseconds since the epoch; whole seconds
/// as the hub records them).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptSpan {
    /// The Placement was written.
    pub placed_ms: Option<i64>,
    /// The pods started.
    pub started_ms: Option<i64>,
    /// The attempt ended.
    pub ended_ms: Option<i64>,
}

/// What the run measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UtilisationReport {
    /// Copies of the mix.
    pub scale: usize,
    /// GPUs of the pool.
    pub pool_gpus: u32,
    /// Seconds to start the clusters and join.
    pub setup_secs: f64,
    /// When the first job was created, milliseconds since the epoch.
    pub first_create_ms: i64,
    /// Seconds from the first create to the last answer.
    pub submit_secs: f64,
    /// Every job.
    pub jobs: Vec<JobOutcome>,
    /// The hub's figure when the first job went in.
    pub hub_before: Option<HubFigure>,
    /// The hub's figure at the end.
    pub hub_after: Option<HubFigure>,
    /// The hub binary.
    pub hub_binary: BinaryInfo,
    /// The checkout measured.
    pub checkout: String,
    /// Why the run stopped early, if it did.
    pub error: Option<String>,
    /// The machine's 1-minute load average when the first job went in and at the end: other
    /// work on the machine slows the hub and the members, which lowers every figure.
    #[serde(default)]
    pub load: Option<Load>,
}

/// The machine's load around the measurement.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// 1-minute load average when the first job went in.
    pub before: f64,
    /// 1-minute load average at the end.
    pub after: f64,
    /// CPU cores of the machine.
    pub cores: usize,
}

/// `GpuPool.status.utilization` as read, just after the hub published it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HubFigure {
    /// When the bench saw it change, milliseconds since the epoch (within a second of the hub's
    /// publication).
    pub seen_ms: i64,
    /// Its window.
    pub window: String,
    /// GPU-seconds allocated.
    pub allocated_gpu_seconds: u64,
    /// GPU-seconds available.
    pub available_gpu_seconds: u64,
}

/// The figures derived from a report.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Figures {
    /// First create → last end of a job that fits, seconds.
    pub makespan_secs: f64,
    /// GPU-seconds of work asked for by the jobs that fit.
    pub demand_gpu_secs: f64,
    /// GPU-seconds from Placement to end, over every attempt.
    pub allocated_gpu_secs: f64,
    /// GPU-seconds from pods started to end, over every attempt.
    pub running_gpu_secs: f64,
    /// The pool's GPUs × the makespan.
    pub available_gpu_secs: f64,
    /// max(demand ÷ pool GPUs, longest job that fits), seconds.
    pub lower_bound_secs: f64,
}

impl Figures {
    /// allocated ÷ available.
    pub fn allocated_share(&self) -> f64 {
        ratio(self.allocated_gpu_secs, self.available_gpu_secs)
    }
    /// running ÷ available.
    pub fn running_share(&self) -> f64 {
        ratio(self.running_gpu_secs, self.available_gpu_secs)
    }
    /// lower bound ÷ makespan.
    pub fn makespan_efficiency(&self) -> f64 {
        ratio(self.lower_bound_secs, self.makespan_secs)
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

impl UtilisationReport {
    /// The figures, `None` while a job that fits has not ended.
    pub fn figures(&self) -> Option<Figures> {
        let fitting = self.jobs.iter().filter(|j| j.fits);
        let mut last_end = self.first_create_ms;
        let mut demand = 0.0;
        let mut longest = 0u64;
        for j in fitting {
            if !matches!(j.phase.as_str(), "Succeeded" | "Failed") {
                return None;
            }
            demand += f64::from(j.gpus) * j.seconds as f64;
            longest = longest.max(j.seconds);
            let end = j.attempts.iter().filter_map(|a| a.ended_ms).max()?;
            last_end = last_end.max(end);
        }
        let (mut allocated, mut running) = (0.0, 0.0);
        for j in &self.jobs {
            for a in &j.attempts {
                let end = a.ended_ms.unwrap_or(last_end);
                let span = |from: Option<i64>| {
                    from.map_or(0.0, |f| (end - f).max(0) as f64 / 1000.0) * f64::from(j.gpus)
                };
                allocated += span(a.placed_ms);
                running += span(a.started_ms);
            }
        }
        let makespan = (last_end - self.first_create_ms).max(0) as f64 / 1000.0;
        let gpus = f64::from(self.pool_gpus);
        Some(Figures {
            makespan_secs: makespan,
            demand_gpu_secs: demand,
            allocated_gpu_secs: allocated,
            running_gpu_secs: running,
            available_gpu_secs: gpus * makespan,
            lower_bound_secs: ratio(demand, gpus).max(longest as f64),
        })
    }

    /// The hub's allocated ÷ available between its two readings.
    pub fn hub_share(&self) -> Option<f64> {
        let (b, a) = (self.hub_before.as_ref()?, self.hub_after.as_ref()?);
        let allocated = a
            .allocated_gpu_seconds
            .checked_sub(b.allocated_gpu_seconds)?;
        let available = a
            .available_gpu_seconds
            .checked_sub(b.available_gpu_seconds)?;
        (available > 0).then(|| allocated as f64 / available as f64)
    }

    /// The attempt records' allocated ÷ available between the hub's two readings (Placement to
    /// end, clipped to that span), to set beside [`Self::hub_share`].
    pub fn records_share_between_hub_readings(&self) -> Option<f64> {
        let (from, to) = (
            self.hub_before.as_ref()?.seen_ms,
            self.hub_after.as_ref()?.seen_ms,
        );
        let available = f64::from(self.pool_gpus) * (to - from) as f64;
        let mut allocated = 0.0;
        for j in &self.jobs {
            for a in &j.attempts {
                let (Some(placed), end) = (a.placed_ms, a.ended_ms.unwrap_or(to)) else {
                    continue;
                };
                let span = (end.min(to) - placed.max(from)).max(0);
                allocated += f64::from(j.gpus) * span as f64;
            }
        }
        (available > 0.0).then(|| allocated / available)
    }
}

/// The jobs of `scale` copies of [`MIX`], interleaved: (name, class, seconds).
pub fn workload(scale: usize) -> Vec<(String, &'static JobClass, u64)> {
    let mut per_class: Vec<Vec<(String, &'static JobClass, u64)>> = MIX
        .iter()
        .map(|c| {
            (0..c.count * scale)
                .map(|i| {
                    let secs = c.seconds.get(i % c.seconds.len()).copied().unwrap_or(30);
                    (format!("{}-{i:03}", c.name), c, secs)
                })
                .collect()
        })
        .collect();
    // Round-robin over the classes, so that every shape is in the queue from the start.
    let mut out = vec![];
    while per_class.iter().any(|c| !c.is_empty()) {
        for c in per_class.iter_mut() {
            if !c.is_empty() {
                out.push(c.remove(0));
            }
        }
    }
    out
}

fn manifest(name: &str, class: &JobClass, seconds: u64) -> Value {
    json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
           "metadata": {"name": name, "namespace": NAMESPACE},
           "spec": {"replicas": class.replicas, "gpusPerReplica": class.gpus_per_replica,
                    "gpu": {"models": class.models}, "maxDuration": "1h",
                    "template": {"containers": [{"name": "main", "image": "busybox:1.36",
                        "env": [{"name": "GPUFED_SIM_DURATION", "value": format!("{seconds}s")}]}]}}})
}

/// The 1-minute load average (`/proc/loadavg`).
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn ms(t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Option<i64> {
    t.map(|t| t.0.as_millisecond())
}

fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Runs the measurement; a failure after the pool joined is recorded in the report with what was
/// measured before it.
pub async fn utilisation(
    tools: &Tools,
    cfg: &UtilisationConfig,
    hub_binary: BinaryInfo,
    checkout: String,
) -> Result<UtilisationReport, Error> {
    let origin = Instant::now();
    let plans: Vec<MemberPlan> = MEMBERS
        .iter()
        .map(|(name, profile, model, nodes, price)| {
            let nodes = (0..*nodes)
                .map(|n| NodeSpec::new(&format!("{name}-n{n}"), profile, 8, "eu-west"))
                .collect();
            MemberPlan::new(name, nodes, model, price)
        })
        .collect();
    let pool = crate::peer::set_up("utilisation", || {
        Pool::join(tools, HEARTBEAT_TIMEOUT, &plans)
    })
    .await?;
    pool.hub.create_namespace(NAMESPACE).await?;
    let hub = pool.hub.client();
    for (name, _, _, nodes, _) in MEMBERS {
        let free = u32::try_from(nodes * 8).unwrap_or(u32::MAX);
        crate::joining::wait_ready_with_free(&hub, name, free, Duration::from_secs(180)).await?;
    }
    let pool_gpus = MEMBERS.iter().map(|m| m.3 * 8).sum::<usize>();
    let mut report = UtilisationReport {
        scale: cfg.scale,
        pool_gpus: u32::try_from(pool_gpus).unwrap_or(u32::MAX),
        setup_secs: origin.elapsed().as_secs_f64(),
        first_create_ms: 0,
        submit_secs: 0.0,
        jobs: vec![],
        hub_before: None,
        hub_after: None,
        hub_binary,
        checkout,
        error: None,
        load: None,
    };
    if let Err(e) = measure(&hub, cfg, &mut report).await {
        tracing::warn!(error = %e, "utilisation run stopped");
        report.error = Some(e.to_string());
    }
    Ok(report)
}

async fn read_hub_figure(pools: &Api<GpuPool>) -> Option<(String, u64, u64)> {
    let u = pools.get("default").await.ok()?.status?.utilization?;
    Some((u.window, u.allocated_gpu_seconds, u.available_gpu_seconds))
}

/// The pool's utilisation figure as soon as the hub publishes a new one (it does at most every
/// 30 s), so that the reading's time is known to about a second; `None` if none comes within
/// a minute.
async fn fresh_hub_figure(hub: &kube::Client) -> Option<HubFigure> {
    let pools: Api<GpuPool> = Api::all(hub.clone());
    let old = read_hub_figure(&pools).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(new) = read_hub_figure(&pools).await
            && Some(&new) != old.as_ref()
        {
            return Some(HubFigure {
                seen_ms: epoch_ms(SystemTime::now()),
                window: new.0,
                allocated_gpu_seconds: new.1,
                available_gpu_seconds: new.2,
            });
        }
    }
    None
}

async fn measure(
    hub: &kube::Client,
    cfg: &UtilisationConfig,
    report: &mut UtilisationReport,
) -> Result<(), Error> {
    let jobs = workload(cfg.scale);
    let api: Api<ComputeJob> = Api::namespaced(hub.clone(), NAMESPACE);
    report.hub_before = fresh_hub_figure(hub).await;
    let load_before = load_average();
    report.first_create_ms = epoch_ms(SystemTime::now());
    let start = Instant::now();
    let created: Vec<Result<(), Error>> = futures::stream::iter(jobs.iter())
        .map(|(name, class, secs)| {
            let api = api.clone();
            async move {
                let job: ComputeJob = serde_json::from_value(manifest(name, class, *secs))
                    .map_err(|e| Error::Other(format!("job {name}: {e}")))?;
                api.create(&PostParams::default(), &job)
                    .await
                    .map_err(Error::kube("submitting a job"))?;
                Ok(())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    created.into_iter().collect::<Result<Vec<()>, _>>()?;
    report.submit_secs = start.elapsed().as_secs_f64();
    tracing::info!(
        jobs = jobs.len(),
        secs = report.submit_secs,
        "utilisation: submitted"
    );
    let fits = |name: &str| {
        jobs.iter()
            .find(|(n, ..)| n == name)
            .is_some_and(|(_, c, _)| c.fits)
    };
    let total = jobs.len();
    let mut last_log = Instant::now();
    let waited = wait_until(
        END_TIMEOUT,
        "every job ended or waiting with a reason",
        || {
            let api = api.clone();
            let log = last_log.elapsed() > Duration::from_secs(30);
            if log {
                last_log = Instant::now();
            }
            let fits = &fits;
            async move {
                let list = api.list(&ListParams::default()).await.ok()?;
                let open = list
                    .items
                    .iter()
                    .filter(|j| {
                        let name = j.metadata.name.as_deref().unwrap_or_default();
                        let status = j.status.as_ref();
                        let phase = status.map(|s| s.phase).unwrap_or_default();
                        if fits(name) {
                            !phase.is_finished()
                        } else {
                            phase != JobPhase::Pending
                                || status.and_then(|s| s.explanation.as_ref()).is_none()
                        }
                    })
                    .count();
                if log {
                    tracing::info!(open, "utilisation: waiting");
                }
                (open == 0 && list.items.len() == total).then_some(())
            }
        },
    )
    .await;
    report.hub_after = fresh_hub_figure(hub).await;
    report.load = load_before.zip(load_average()).map(|(before, after)| Load {
        before,
        after,
        cores: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    });
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("listing the jobs"))?;
    report.jobs = jobs
        .iter()
        .map(|(name, class, secs)| {
            let job = list
                .items
                .iter()
                .find(|j| j.metadata.name.as_deref() == Some(name.as_str()));
            let status = job.and_then(|j| j.status.as_ref());
            JobOutcome {
                name: name.clone(),
                class: class.name.to_string(),
                gpus: class.replicas * class.gpus_per_replica,
                seconds: *secs,
                fits: class.fits,
                phase: status.map_or("Unknown".into(), |s| format!("{:?}", s.phase)),
                reason: status.and_then(|s| s.explanation.clone().or_else(|| s.reason.clone())),
                attempts: status
                    .map(|s| {
                        s.attempts
                            .iter()
                            .map(|a| AttemptSpan {
                                placed_ms: ms(a.placed_time.as_ref()),
                                started_ms: ms(a.start_time.as_ref()),
                                ended_ms: ms(a.finish_time.as_ref()),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();
    waited
}

fn pct(x: f64) -> String {
    format!("{:.0} %", x * 100.0)
}

/// The "Pool utilisation on a mixed workload" section of docs/benchmarks.md.
pub fn markdown(r: &UtilisationReport) -> String {
    use std::fmt::Write as _;
    let mut md = String::from("## Pool utilisation on a mixed workload\n\n");
    let members: Vec<String> = MEMBERS
        .iter()
        .map(|(name, _, model, nodes, _)| format!("{name} {nodes} × 8 {model}"))
        .collect();
    let _ = writeln!(
        md,
        "Three members joined with the charts on kwok nodes ({}; {} GPUs), the hub and agents as processes. \
         The workload below ({} cop{} of the mix, interleaved, 16 creates in flight) goes in at once; each pod runs \
         for its job's time once started. Figures come from the jobs' attempt records on the hub (whole seconds): \
         *allocated* counts an attempt's GPUs from its Placement to its end, *running* from its pods' start; \
         *available* is the pool's GPUs × the makespan (first create → last end); the *lower bound* is the \
         makespan no scheduler could beat: the work's GPU-seconds ÷ the pool's GPUs, or the longest job. \
         Checkout `{}`; hub `{}` (sha256 {}…).\n",
        members.join(", "),
        r.pool_gpus,
        r.scale,
        if r.scale == 1 { "y" } else { "ies" },
        r.checkout,
        r.hub_binary.path,
        r.hub_binary.sha256,
    );
    md.push_str(
        "| class | jobs | GPUs per job | run time | fits | ended |\n|---|---|---|---|---|---|\n",
    );
    for c in MIX {
        let of: Vec<&JobOutcome> = r.jobs.iter().filter(|j| j.class == c.name).collect();
        let mut secs: Vec<u64> = of.iter().map(|j| j.seconds).collect();
        secs.sort_unstable();
        secs.dedup();
        let times: Vec<String> = secs.iter().map(|s| format!("{s} s")).collect();
        let ended = if c.fits {
            let ok = of.iter().filter(|j| j.phase == "Succeeded").count();
            format!("{ok} Succeeded")
        } else {
            let waiting = of
                .iter()
                .filter(|j| j.phase == "Pending" && j.reason.is_some())
                .count();
            let reason = of
                .iter()
                .find_map(|j| j.reason.as_deref())
                .map(|r| format!(": \"{}\"", r.replace('|', "\\|")))
                .unwrap_or_default();
            format!("{waiting} Pending with a reason{reason}")
        };
        let gpus = if c.replicas > 1 {
            format!("{} × {}", c.replicas, c.gpus_per_replica)
        } else {
            c.gpus_per_replica.to_string()
        };
        let _ = writeln!(
            md,
            "| {} | {} | {gpus} | {} | {} | {ended} |",
            c.name,
            of.len(),
            times.join(", "),
            if c.fits { "yes" } else { "no" },
        );
    }
    md.push('\n');
    match r.figures() {
        Some(f) => {
            let _ = writeln!(
                md,
                "| makespan | lower bound | **lower bound ÷ makespan** | **allocated ÷ available** | running ÷ available |\n|---|---|---|---|---|\n\
                 | {:.0} s | {:.0} s | **{:.2}** | **{}** | {} |\n",
                f.makespan_secs,
                f.lower_bound_secs,
                f.makespan_efficiency(),
                pct(f.allocated_share()),
                pct(f.running_share()),
            );
            let _ = writeln!(
                md,
                "Work asked for: {:.0} GPU-seconds; allocated {:.0}, running {:.0}, available {:.0}.",
                f.demand_gpu_secs, f.allocated_gpu_secs, f.running_gpu_secs, f.available_gpu_secs
            );
        }
        None => md.push_str("The workload did not end; no figure.\n"),
    }
    if let (Some(hub), Some(records), Some(b), Some(a)) = (
        r.hub_share(),
        r.records_share_between_hub_readings(),
        &r.hub_before,
        &r.hub_after,
    ) {
        let _ = writeln!(
            md,
            "The hub's own figure (`GpuPool.status.utilization`, GPUs not free at each roll-up as the agents report them), \
             read as it was published just before the first create and just after the last job ended, {:.0} s apart: \
             **{}** allocated; the attempt records over the same span: {}.",
            (a.seen_ms - b.seen_ms) as f64 / 1000.0,
            pct(hub),
            pct(records)
        );
    }
    if let Some(Load {
        before,
        after,
        cores,
    }) = r.load
    {
        let _ = writeln!(
            md,
            "\nThe machine's 1-minute load average was {before:.1} when the first job went in and {after:.1} at the end \
             ({cores} cores); work beside the run slows the hub and the members and lowers every figure above."
        );
    }
    if let Some(e) = &r.error {
        let _ = writeln!(md, "\nThe run stopped early: {e}");
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(
        class: &str,
        gpus: u32,
        seconds: u64,
        fits: bool,
        spans: &[(i64, i64, i64)],
    ) -> JobOutcome {
        JobOutcome {
            name: format!("{class}-x"),
            class: class.into(),
            gpus,
            seconds,
            fits,
            phase: if fits { "Succeeded" } else { "Pending" }.into(),
            reason: None,
            attempts: spans
                .iter()
                .map(|(p, s, e)| AttemptSpan {
                    placed_ms: Some(*p),
                    started_ms: Some(*s),
                    ended_ms: Some(*e),
                })
                .collect(),
        }
    }

    fn report(jobs: Vec<JobOutcome>) -> UtilisationReport {
        UtilisationReport {
            scale: 1,
            pool_gpus: 8,
            setup_secs: 0.0,
            first_create_ms: 0,
            submit_secs: 0.0,
            jobs,
            hub_before: None,
            hub_after: None,
            hub_binary: BinaryInfo {
                path: "hub".into(),
                modified: String::new(),
                sha256: String::new(),
            },
            checkout: String::new(),
            error: None,
            load: None,
        }
    }

    #[test]
    fn figures_count_gpu_seconds_from_placement_and_from_start() {
        // An 8-GPU job placed at 1 s, started at 2 s, ended at 12 s; a 4-GPU job placed at 12 s,
        // started at 13 s, ended at 20 s; a job that fits nowhere holds nothing.
        let r = report(vec![
            job("eight", 8, 10, true, &[(1000, 2000, 12_000)]),
            job("four", 4, 7, true, &[(12_000, 13_000, 20_000)]),
            job("wide", 16, 30, false, &[]),
        ]);
        let f = r.figures().unwrap();
        assert_eq!(f.makespan_secs, 20.0);
        assert_eq!(f.available_gpu_secs, 160.0);
        assert_eq!(f.allocated_gpu_secs, 8.0 * 11.0 + 4.0 * 8.0);
        assert_eq!(f.running_gpu_secs, 8.0 * 10.0 + 4.0 * 7.0);
        assert_eq!(f.demand_gpu_secs, 108.0);
        // 108 GPU-seconds on 8 GPUs is 13.5 s, shorter than the longest job.
        assert_eq!(f.lower_bound_secs, 13.5);
        assert!((f.allocated_share() - 120.0 / 160.0).abs() < 1e-9);
        assert!((f.makespan_efficiency() - 13.5 / 20.0).abs() < 1e-9);
    }

    #[test]
    fn no_figures_while_a_job_that_fits_has_not_ended() {
        let mut j = job("eight", 8, 10, true, &[(1000, 2000, 12_000)]);
        j.phase = "Running".into();
        assert_eq!(report(vec![j]).figures(), None);
    }

    #[test]
    fn the_hub_share_is_the_difference_of_its_two_readings() {
        let mut r = report(vec![]);
        let fig = |a, v| HubFigure {
            seen_ms: 0,
            window: "5m".into(),
            allocated_gpu_seconds: a,
            available_gpu_seconds: v,
        };
        r.hub_before = Some(fig(0, 1000));
        r.hub_after = Some(fig(600, 2000));
        assert_eq!(r.hub_share(), Some(0.6));
        r.hub_before = None;
        assert_eq!(r.hub_share(), None);
    }

    #[test]
    fn the_records_share_is_clipped_to_the_hub_readings() {
        // 8 GPUs; readings at 10 s and 30 s. One 4-GPU attempt from 0 s to 20 s counts 10 s, one
        // 8-GPU attempt from 25 s still running at the end counts 5 s: 40 + 40 of 160.
        let mut r = report(vec![
            job("four", 4, 20, true, &[(0, 0, 20_000)]),
            JobOutcome {
                attempts: vec![AttemptSpan {
                    placed_ms: Some(25_000),
                    started_ms: Some(26_000),
                    ended_ms: None,
                }],
                ..job("eight", 8, 60, true, &[])
            },
        ]);
        let fig = |seen_ms| HubFigure {
            seen_ms,
            window: "1h".into(),
            allocated_gpu_seconds: 0,
            available_gpu_seconds: 0,
        };
        r.hub_before = Some(fig(10_000));
        r.hub_after = Some(fig(30_000));
        assert_eq!(r.records_share_between_hub_readings(), Some(0.5));
    }

    #[test]
    fn the_workload_interleaves_every_class_and_cycles_run_times() {
        let w = workload(1);
        assert_eq!(w.len(), MIX.iter().map(|c| c.count).sum::<usize>());
        let first: Vec<&str> = w.iter().take(MIX.len()).map(|(_, c, _)| c.name).collect();
        let classes: Vec<&str> = MIX.iter().map(|c| c.name).collect();
        assert_eq!(first, classes);
        let singles: Vec<u64> = w
            .iter()
            .filter(|(_, c, _)| c.name == "single")
            .map(|(_, _, s)| *s)
            .take(6)
            .collect();
        assert_eq!(singles, vec![20, 30, 40, 50, 60, 20]);
        assert_eq!(workload(2).len(), 2 * w.len());
    }
}
