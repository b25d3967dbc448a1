//! The member agent's memory on a member with many pods, a step of `make bench` (issue 11's goal:
//! at most 64 MiB of peak resident memory with 10,000 pods; Karmada's agent: 266 MiB).
//!
//! One member joins a hub with the charts ([`Pool::join`]: the agent and gpu-probe as processes
//! with the charts' RBAC and client rate), on kwok nodes with room for every pod. `pods`
//! single-GPU ComputeJobs whose pods keep running go in on the hub, 16 creates in flight; the
//! hub places them all on the member, the agent turns each Placement into a local Job, and the
//! member's Job controller, kube-scheduler and kwok run its pod. The agent's `VmHWM` and CPU
//! seconds are read when it has just joined, when every pod runs, and after a further window
//! that covers its periodic work with every job running (heartbeats, inventories, the usage
//! report of each running job at the member chart's `agent.usageReportInterval`).
//!
//! Nodes hold [`PODS_PER_NODE`] pods and as many GPUs (a node takes at most 110 pods); a member
//! with 8-GPU nodes would have eight times fewer pods per node, and so more Node objects in the
//! agent's cache — the report says so. No test asserts on any of it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde::{Deserialize, Serialize};

use super::BinaryInfo;
use super::procstat;
use crate::joining::{HubOptions, JOBS_NAMESPACE, MemberPlan, Pool};
use crate::peer::gpufed::compute_job;
use crate::{Cluster, Error, NodeSpec, Tools, wait_until};

/// Pods (and GPUs) per kwok node.
pub const PODS_PER_NODE: usize = 100;
/// The member's name.
const MEMBER: &str = "gpufed-a0";
/// Namespace of the ComputeJobs on the hub (the one [`compute_job`] writes).
const HUB_NAMESPACE: &str = "bench";
/// Creates in flight while submitting.
const IN_FLIGHT: usize = 16;
/// The pool's heartbeat timeout: GpuPool's default.
const HEARTBEAT_TIMEOUT_SECS: u64 = 40;
/// How long every pod may take to run.
const RUNNING_TIMEOUT: Duration = Duration::from_secs(45 * 60);
/// The pool's `startTimeout`: [`RUNNING_TIMEOUT`], as long as every pod may take to run. One
/// member takes every job, so the last ones wait behind thousands of others; at GpuPool's default
/// (10 min) the hub failed those attempts over (`StartTimeout`) and placed them again on the same
/// member, so a 10,000-pod run measured retries instead of the agent holding 10,000 pods.
fn start_timeout() -> String {
    format!("{}s", RUNNING_TIMEOUT.as_secs())
}

/// Settings of the run.
#[derive(Clone, Debug)]
pub struct AgentScaleConfig {
    /// Pods (single-GPU jobs) on the member.
    pub pods: usize,
    /// The window after every pod runs.
    pub window: Duration,
}

impl AgentScaleConfig {
    /// kwok nodes: room for every pod.
    pub fn nodes(&self) -> usize {
        self.pods.div_ceil(PODS_PER_NODE).max(1)
    }
}

/// A reading of one process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcReading {
    /// Peak resident memory so far, KiB.
    pub vm_hwm_kib: u64,
    /// CPU seconds so far.
    pub cpu_secs: f64,
}

impl ProcReading {
    fn take(pid: u32) -> Result<ProcReading, Error> {
        Ok(ProcReading {
            vm_hwm_kib: procstat::vm_hwm_kib(pid)?,
            cpu_secs: procstat::cpu_seconds(pid)?,
        })
    }
}

/// What the run measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentScaleReport {
    /// Pods asked for.
    pub pods: usize,
    /// kwok nodes of the member.
    pub nodes: usize,
    /// Pods and GPUs per node.
    pub pods_per_node: usize,
    /// The member chart's `agent.usageReportInterval` the agent ran with.
    pub usage_report_interval: String,
    /// The member chart's `agent.usageReportMaxRate` the agent ran with (`None` in runs from
    /// before it existed).
    #[serde(default)]
    pub usage_report_max_rate: Option<String>,
    /// Seconds to start the clusters and join.
    pub setup_secs: f64,
    /// Seconds from the first create to the last answer.
    pub submit_secs: f64,
    /// Seconds from the first create until every pod ran (`None` if they did not).
    pub running_secs: Option<f64>,
    /// Pods seen running by the end.
    pub running: usize,
    /// The window after every pod ran, seconds.
    pub window_secs: f64,
    /// The agent just after joining.
    pub agent_joined: ProcReading,
    /// The agent when every pod ran.
    pub agent_running: Option<ProcReading>,
    /// The agent at the end of the window.
    pub agent_end: Option<ProcReading>,
    /// gpu-probe at the end.
    pub probe_end: Option<ProcReading>,
    /// The hub at the end.
    pub hub_end: Option<ProcReading>,
    /// The agent binary.
    pub agent_binary: BinaryInfo,
    /// The checkout measured.
    pub checkout: String,
    /// Why the run stopped early, if it did.
    pub error: Option<String>,
    /// The pool's heartbeat timeout `T`, seconds (the member's lease is `T/3`, ADR 0021).
    #[serde(default)]
    pub heartbeat_timeout_secs: f64,
    /// Local Jobs the member's Job controller stopped on a deadline (`DeadlineExceeded`), counted
    /// at the end: none should, as every job's maxDuration is far beyond the run.
    #[serde(default)]
    pub deadline_exceeded: Option<usize>,
    /// Renewals of the member's lease Job during the run (the agent's counter at the end).
    #[serde(default)]
    pub lease_renewals: Option<f64>,
    /// Times the agent found the member's lease run out (every local Job deleted with it).
    #[serde(default)]
    pub lease_lapses: Option<f64>,
    /// The pool's `startTimeout` (`None`: GpuPool's default, in runs from before it was set).
    #[serde(default)]
    pub start_timeout: Option<String>,
    /// Whether the hub's apiserver ran with API Priority and Fairness (the hub chart's
    /// FlowSchemas in effect); false in runs from before it did.
    #[serde(default)]
    pub hub_api_priority_and_fairness: bool,
    /// The agent when a run that stopped early stopped (`None` for a run that did not).
    #[serde(default)]
    pub agent_stopped: Option<ProcReading>,
    /// Kubernetes writes the hub's leadership fence refused (its Lease renewals too slow), at the
    /// end (`None` in runs from before it was read).
    #[serde(default)]
    pub hub_writes_refused: Option<f64>,
}

/// Watches the member's jobs namespace and counts the pods that reached Running (or beyond).
struct RunningPods {
    seen: Arc<Mutex<HashSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningPods {
    fn start(member: &Cluster) -> RunningPods {
        let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
        let api: Api<Pod> = Api::namespaced(member.client(), JOBS_NAMESPACE);
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut events = watcher(api, watcher::Config::default())
                    .default_backoff()
                    .boxed();
                while let Some(event) = events.next().await {
                    if let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = event {
                        let running = matches!(
                            p.status.as_ref().and_then(|s| s.phase.as_deref()),
                            Some("Running" | "Succeeded")
                        );
                        if running
                            && let (Some(name), Ok(mut seen)) = (p.metadata.name, seen.lock())
                        {
                            seen.insert(name);
                        }
                    }
                }
            })
        };
        RunningPods { seen, task }
    }

    fn count(&self) -> usize {
        self.seen.lock().map_or(0, |s| s.len())
    }
}

impl Drop for RunningPods {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs the measurement; a failure after the member joined is recorded in the report with what
/// was measured before it.
pub async fn agent_scale(
    tools: &Tools,
    cfg: &AgentScaleConfig,
    agent_binary: BinaryInfo,
    checkout: String,
) -> Result<AgentScaleReport, Error> {
    let origin = Instant::now();
    let per_node = u32::try_from(PODS_PER_NODE).unwrap_or(u32::MAX);
    let nodes = (0..cfg.nodes())
        .map(|n| {
            NodeSpec::new(
                &format!("{MEMBER}-n{n}"),
                "H100-SXM-80GB",
                per_node,
                "eu-west",
            )
        })
        .collect();
    let plans = [MemberPlan::new(MEMBER, nodes, "H100", "2.40")];
    let timeout = format!("{HEARTBEAT_TIMEOUT_SECS}s");
    let spec = serde_json::json!({"heartbeatTimeout": timeout, "startTimeout": start_timeout()});
    // The hub's apiserver as in production: with API Priority and Fairness, so the hub chart's
    // FlowSchemas give the hub a priority level of its own and its Lease renewals the built-in
    // `leader-election` level (a 10,000-pod run without it saw renewals late enough for the hub to
    // stop writing).
    let hub_options = HubOptions {
        api_priority_and_fairness: true,
        ..HubOptions::default()
    };
    let pool = crate::peer::set_up("agent-scale", || {
        Pool::join_with_hub(
            tools,
            spec.clone(),
            &plans,
            |_| async { Ok(()) },
            hub_options.clone(),
        )
    })
    .await?;
    pool.hub.create_namespace(HUB_NAMESPACE).await?;
    let member = pool.member(MEMBER)?;
    let total = cfg.nodes() * PODS_PER_NODE;
    let free = u32::try_from(total).unwrap_or(u32::MAX);
    crate::joining::wait_ready_with_free(
        &pool.hub.client(),
        MEMBER,
        free,
        Duration::from_secs(180),
    )
    .await?;
    let setup_secs = origin.elapsed().as_secs_f64();
    let agent = member.pid_of("gpufed-agent")?;
    let mut report = AgentScaleReport {
        pods: cfg.pods,
        nodes: cfg.nodes(),
        pods_per_node: PODS_PER_NODE,
        usage_report_interval: crate::bench::settings::chart_value(
            tools.root(),
            "gpufed-member",
            "agent.usageReportInterval",
        )?,
        usage_report_max_rate: Some(crate::bench::settings::chart_value(
            tools.root(),
            "gpufed-member",
            "agent.usageReportMaxRate",
        )?),
        setup_secs,
        submit_secs: 0.0,
        running_secs: None,
        running: 0,
        window_secs: cfg.window.as_secs_f64(),
        agent_joined: ProcReading::take(agent)?,
        agent_running: None,
        agent_end: None,
        probe_end: None,
        hub_end: None,
        agent_binary,
        checkout,
        error: None,
        heartbeat_timeout_secs: HEARTBEAT_TIMEOUT_SECS as f64,
        deadline_exceeded: None,
        lease_renewals: None,
        lease_lapses: None,
        start_timeout: Some(start_timeout()),
        hub_api_priority_and_fairness: hub_options.api_priority_and_fairness,
        hub_writes_refused: None,
        agent_stopped: None,
    };
    if let Err(e) = measure(&pool, member, agent, cfg, &mut report).await {
        tracing::warn!(error = %e, "agent scale run stopped");
        report.error = Some(e.to_string());
        report.agent_stopped = ProcReading::take(agent).ok();
    }
    report.deadline_exceeded = deadline_exceeded(member).await.ok();
    if let Some(joined) = pool.joined.get(MEMBER) {
        let metric = |name| crate::joining::scrape(joined.agent_metrics, name);
        report.lease_renewals = metric("gpufed_agent_member_lease_renewals_total").await;
        report.lease_lapses = metric("gpufed_agent_member_lease_lapsed_total").await;
    }
    report.hub_writes_refused = crate::joining::scrape(
        pool.hub_metrics,
        "gpufed_hub_writes_refused_total{target=\"kube\"}",
    )
    .await;
    Ok(report)
}

/// Local Jobs stopped by their `activeDeadlineSeconds`.
async fn deadline_exceeded(member: &Cluster) -> Result<usize, Error> {
    let jobs: Api<k8s_openapi::api::batch::v1::Job> =
        Api::namespaced(member.client(), JOBS_NAMESPACE);
    let list = jobs
        .list(&kube::api::ListParams::default())
        .await
        .map_err(Error::kube("listing the local Jobs"))?;
    Ok(list
        .items
        .iter()
        .filter(|j| {
            j.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c.reason.as_deref() == Some("DeadlineExceeded"))
                })
        })
        .count())
}

async fn measure(
    pool: &Pool,
    member: &Cluster,
    agent: u32,
    cfg: &AgentScaleConfig,
    report: &mut AgentScaleReport,
) -> Result<(), Error> {
    let running = RunningPods::start(member);
    let ar = ApiResource::erase::<gpufed_crds::ComputeJob>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(pool.hub.client(), HUB_NAMESPACE, &ar);
    let start = Instant::now();
    let created: Vec<Result<(), Error>> = futures::stream::iter(0..cfg.pods)
        .map(|i| {
            let api = api.clone();
            async move {
                let obj: DynamicObject =
                    serde_json::from_value(compute_job(&format!("agent-{i:05}"), "100h"))
                        .map_err(|e| Error::Other(e.to_string()))?;
                api.create(&PostParams::default(), &obj)
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
        pods = cfg.pods,
        secs = report.submit_secs,
        "agent scale: submitted"
    );
    let mut last_log = Instant::now();
    let waited = wait_until(RUNNING_TIMEOUT, "every pod running", || {
        let n = running.count();
        if last_log.elapsed() > Duration::from_secs(30) {
            tracing::info!(running = n, of = cfg.pods, "agent scale: waiting");
            last_log = Instant::now();
        }
        async move { (n >= cfg.pods).then_some(()) }
    })
    .await;
    report.running = running.count();
    waited?;
    report.running_secs = Some(start.elapsed().as_secs_f64());
    report.agent_running = Some(ProcReading::take(agent)?);
    tracing::info!(secs = report.running_secs, "agent scale: every pod running");
    tokio::time::sleep(cfg.window).await;
    report.running = running.count();
    report.agent_end = Some(ProcReading::take(agent)?);
    report.probe_end = Some(ProcReading::take(member.pid_of("gpu-probe")?)?);
    report.hub_end = Some(ProcReading::take(pool.hub.pid_of("gpufed-hub")?)?);
    Ok(())
}

/// The goal for the agent's peak memory at [`GOAL_PODS`] pods, MiB.
pub const GOAL_MIB: f64 = 64.0;
/// Pods of the goal.
pub const GOAL_PODS: usize = 10_000;
/// Karmada's agent at the same size, as the issue quotes it, MiB.
pub const KARMADA_AGENT_MIB: f64 = 266.0;

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The "Member agent with many pods" section of `docs/benchmarks.md`.
pub fn markdown(r: &AgentScaleReport) -> String {
    use std::fmt::Write as _;
    let mut md = format!("## Member agent with {} pods\n\n", thousands(r.pods));
    let _ = writeln!(
        md,
        "One member joined with the charts (the agent and gpu-probe as processes with the charts' RBAC and client rate, \
         release builds; `agent.usageReportInterval` {}{}), on {} kwok nodes of {} pods and {} GPUs each; {} single-GPU \
         ComputeJobs whose pods keep running go in on the hub, {IN_FLIGHT} creates in flight. The agent turns each \
         Placement into a local Job; the member's Job controller, kube-scheduler and kwok run its pod. A member with \
         8-GPU nodes would have {}× as many Node objects for the agent to cache. Checkout `{}`; agent `{}` \
         (sha256 {}…).\n",
        r.usage_report_interval,
        r.usage_report_max_rate
            .as_ref()
            .map(|r| format!(", `agent.usageReportMaxRate` {r}"))
            .unwrap_or_default(),
        r.nodes,
        r.pods_per_node,
        r.pods_per_node,
        thousands(r.pods),
        r.pods_per_node.div_ceil(8),
        r.checkout,
        r.agent_binary.path,
        r.agent_binary.sha256,
    );
    if let Some(t) = &r.start_timeout {
        let _ = writeln!(
            md,
            "The pool's `startTimeout` is {t} (GpuPool's default: 10m): one member takes every job, so the last ones wait \
             behind all the others, and at the default the hub would fail those attempts over and place them again.\n"
        );
    }
    md.push_str(
        "| agent | peak resident memory (VmHWM) | CPU seconds since start |\n|---|---|---|\n",
    );
    let _ = writeln!(
        md,
        "| joined, no jobs (after {:.0} s of set-up) | {} | {:.1} |",
        r.setup_secs,
        mib(r.agent_joined.vm_hwm_kib),
        r.agent_joined.cpu_secs
    );
    if let (Some(at), Some(p)) = (r.running_secs, r.agent_running) {
        let _ = writeln!(
            md,
            "| every pod Running ({:.0} s after the first create; submitted in {:.0} s) | {} | {:.1} |",
            at,
            r.submit_secs,
            mib(p.vm_hwm_kib),
            p.cpu_secs
        );
    }
    if let Some(p) = r.agent_end {
        let during = match r.deadline_exceeded.filter(|n| *n > 0) {
            Some(n) => format!("{n} local Jobs stopped by their lease by the end (below)"),
            None => "with every pod running".to_string(),
        };
        let _ = writeln!(
            md,
            "| after a further {:.0} s, {during} | {} | {:.1} |",
            r.window_secs,
            mib(p.vm_hwm_kib),
            p.cpu_secs
        );
    }
    if let (Some(p), Some(_)) = (r.agent_stopped, &r.error) {
        let _ = writeln!(
            md,
            "| when the run stopped, {} of {} pods running | {} | {:.1} |",
            thousands(r.running),
            thousands(r.pods),
            mib(p.vm_hwm_kib),
            p.cpu_secs
        );
    }
    let _ = writeln!(md);
    if let Some(e) = &r.error {
        let _ = writeln!(
            md,
            "The run stopped early with {} of {} pods running: `{e}`\n",
            r.running, r.pods
        );
    }
    if let Some(renewals) = r.lease_renewals {
        let _ = writeln!(
            md,
            "The agent renewed the member's lease {renewals:.0} times in the run, one PATCH each whatever the number of running Jobs \
             (ADR 0021; the lease is `T/3` = {:.1} s with the pool's heartbeat timeout of {:.0} s); it found the lease run out {} times.\n",
            r.heartbeat_timeout_secs / 3.0,
            r.heartbeat_timeout_secs,
            r.lease_lapses.unwrap_or(0.0)
        );
    }
    if let Some(n) = r.deadline_exceeded.filter(|n| *n > 0) {
        let _ = writeln!(
            md,
            "{n} local Jobs were stopped by the member's Job controller on a deadline (`DeadlineExceeded`) although every \
             job's maxDuration is far longer than the run: a run measured before ADR 0021, when each Job's own deadline \
             was its lease and the agent renewed it with one PATCH per running Job every `T/6`.\n"
        );
    }
    if r.hub_api_priority_and_fairness {
        let _ = writeln!(
            md,
            "The hub's apiserver ran with API Priority and Fairness, as production apiservers do: the hub chart's FlowSchemas \
             put the hub's requests in a priority level of their own and its leader Lease's renewals in `leader-election`.\n"
        );
    }
    if let Some(n) = r.hub_writes_refused {
        let _ = writeln!(
            md,
            "The hub's leadership fence refused {n:.0} of its writes (a Lease renewal late enough that the hub could not be \
             sure it still led, ADR 0016).\n"
        );
    }
    if let (Some(probe), Some(hub)) = (r.probe_end, r.hub_end) {
        let _ = writeln!(
            md,
            "At the end, gpu-probe's peak was {} and the hub's {} (it holds the {} ComputeJobs and Placements).\n",
            mib(probe.vm_hwm_kib),
            mib(hub.vm_hwm_kib),
            thousands(r.pods)
        );
    }
    // The highest of the readings: a later VmHWM can read a little lower than an earlier one
    // (the kernel folds the current resident set into the mark lazily).
    let peak = [
        Some(r.agent_joined),
        r.agent_running,
        r.agent_end,
        r.agent_stopped,
    ]
    .into_iter()
    .flatten()
    .map(|p| p.vm_hwm_kib)
    .max()
    .unwrap_or_default();
    let verdict = if r.error.is_some() || r.pods < GOAL_PODS {
        format!("not measured at {} pods in this run", thousands(GOAL_PODS))
    } else if peak as f64 / 1024.0 <= GOAL_MIB {
        "met".to_string()
    } else {
        "not met".to_string()
    };
    let _ = writeln!(
        md,
        "Goal: at most {GOAL_MIB:.0} MiB at {} pods (Karmada's agent: {KARMADA_AGENT_MIB:.0} MiB) — {verdict}; this run's \
         peak: {}.",
        thousands(GOAL_PODS),
        mib(peak)
    );
    md
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> AgentScaleReport {
        let r = |mib: u64, cpu: f64| ProcReading {
            vm_hwm_kib: mib * 1024,
            cpu_secs: cpu,
        };
        AgentScaleReport {
            pods: 10_000,
            nodes: 100,
            pods_per_node: 100,
            usage_report_interval: "60s".into(),
            usage_report_max_rate: Some("20".into()),
            setup_secs: 40.0,
            submit_secs: 120.0,
            running_secs: Some(300.0),
            running: 10_000,
            window_secs: 90.0,
            agent_joined: r(12, 0.5),
            agent_running: Some(r(50, 30.0)),
            agent_end: Some(r(58, 40.0)),
            probe_end: Some(r(20, 5.0)),
            hub_end: Some(r(150, 60.0)),
            agent_binary: BinaryInfo {
                path: "target/release/gpufed-operator".into(),
                modified: "now".into(),
                sha256: "abcdef123456".into(),
            },
            checkout: "abc1234".into(),
            error: None,
            heartbeat_timeout_secs: 40.0,
            deadline_exceeded: Some(0),
            lease_renewals: Some(90.0),
            lease_lapses: Some(0.0),
            start_timeout: Some("45m".into()),
            hub_api_priority_and_fairness: true,
            hub_writes_refused: Some(0.0),
            agent_stopped: None,
        }
    }

    #[test]
    fn the_section_shows_each_reading_and_judges_the_goal_on_the_last_peak() {
        let md = markdown(&report());
        assert!(md.starts_with("## Member agent with 10,000 pods"));
        assert!(md.contains("| every pod Running (300 s after the first create; submitted in 120 s) | 50.0 MiB | 30.0 |"));
        assert!(md.contains("| after a further 90 s, with every pod running | 58.0 MiB | 40.0 |"));
        assert!(md.contains("— met; this run's peak: 58.0 MiB."));
        assert!(md.contains("13× as many Node objects"));
        assert!(md.contains("The pool's `startTimeout` is 45m (GpuPool's default: 10m)"));
        assert!(
            md.contains("renewed the member's lease 90 times")
                && md.contains("found the lease run out 0 times"),
            "{md}"
        );
        assert!(
            md.contains(
                "release builds; `agent.usageReportInterval` 60s, `agent.usageReportMaxRate` 20)"
            ),
            "{md}"
        );
        assert!(md.contains("ran with API Priority and Fairness"), "{md}");
        // Continued string literals leave no run of spaces in the prose.
        assert!(!md.contains("  "), "{md}");
        assert!(md.contains("fence refused 0 of its writes"), "{md}");
        let mut over = report();
        over.agent_end = Some(ProcReading {
            vm_hwm_kib: 70 * 1024,
            cpu_secs: 41.0,
        });
        assert!(markdown(&over).contains("— not met; this run's peak: 70.0 MiB."));
        // A last reading a little below the one before does not lower the peak.
        let mut lower = report();
        lower.agent_end = Some(ProcReading {
            vm_hwm_kib: 49 * 1024,
            cpu_secs: 41.0,
        });
        assert!(markdown(&lower).contains("this run's peak: 50.0 MiB."));
    }

    #[test]
    fn a_run_that_stopped_says_how_far_it_got_and_claims_no_goal() {
        let mut r = report();
        r.running_secs = None;
        r.agent_running = None;
        r.agent_end = None;
        r.running = 6_400;
        r.error = Some("every pod running: timed out".into());
        r.deadline_exceeded = Some(1241);
        r.agent_stopped = Some(ProcReading {
            vm_hwm_kib: 132 * 1024,
            cpu_secs: 300.0,
        });
        let md = markdown(&r);
        assert!(
            md.contains(
                "| when the run stopped, 6,400 of 10,000 pods running | 132.0 MiB | 300.0 |"
            ),
            "{md}"
        );
        assert!(md.contains("stopped early with 6400 of 10000 pods running"));
        assert!(
            md.contains("1241 local Jobs were stopped")
                && md.contains("one PATCH per running Job every `T/6`"),
            "{md}"
        );
        assert!(md.contains("not measured at 10,000 pods in this run"));
        assert!(!md.contains("every pod Running ("));
        // An older report (neither field) claims neither.
        r.hub_api_priority_and_fairness = false;
        r.hub_writes_refused = None;
        let md = markdown(&r);
        assert!(!md.contains("Priority and Fairness") && !md.contains("fence refused"));
    }
}
