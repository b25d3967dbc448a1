//! The "Scale" section of `docs/benchmarks.md`, written from what `gpufed-bench scale` measured
//! (never from figures typed in).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::super::apimetrics::{RequestCount, RequestKey};
use super::super::procstat::{BENCH, CpuUse, MACHINE};
use super::{HUB, PASS_HISTOGRAM, PassTime, ScaleReport, ScaleSize, StoppedSize};

/// Jobs of the goal: the hub's peak memory with this many jobs, a tenth running.
pub const GOAL_JOBS: usize = 100_000;
/// The goal for the hub's peak memory at [`GOAL_JOBS`] and 1,000 members, MiB.
pub const GOAL_MIB: f64 = 500.0;

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn pass_cell(p: Option<PassTime>) -> String {
    match p {
        None => "not exported".into(),
        Some(PassTime {
            passes,
            mean_secs: Some(m),
        }) => format!("{:.1} ms ({passes})", m * 1000.0),
        Some(PassTime { passes, .. }) => format!("— ({passes})"),
    }
}

/// The section, in Markdown.
pub fn markdown(r: &ScaleReport) -> String {
    let mut md = String::new();
    let i = &r.intervals;
    let _ = write!(
        md,
        "## Scale: {} members, up to {} jobs (e2e)\n\n\
         One harness hub cluster (etcd, kube-apiserver, controller-manager), its apiserver with API Priority and \
         Fairness as production apiservers run it; the hub chart installed (`helm install`) and the hub run as one \
         process as the chart runs it, where a process can: with a token of the chart's ServiceAccount (so the \
         chart's RBAC, and its FlowSchemas — the hub's requests in a priority level of their own, its leader Lease \
         renewals in `leader-election` — apply to it), the chart's client rate limit, lease duration and log \
         format; and {} MemberClusters whose agents are all played by one light simulator in the \
         benchmark's process (`e2e/src/bench/scale/sim.rs`): the agent's own hub-side calls at the member chart's \
         default intervals — a heartbeat Lease merge patch every {:?}, a read of the MemberCluster and an inventory \
         apply every {:?} (the agent rewrites an unchanged inventory once the last one is an interval old), and \
         Placement status: `Accepted`, then `Running` for {:.0} % of the jobs (their GPU-seconds rewritten every \
         {:?}) and `Succeeded` for the rest. The simulator uses the admin client (`system:masters`: RBAC is not \
         evaluated, and API Priority and Fairness exempts it, so it is never queued) and one watch on every \
         Placement, where real agents use their own credentials (their requests would queue in a priority level \
         shared with other ServiceAccounts) and one watch each. Members have {} node(s) of 8 H100 each.\n\n\
         Sizes run one after the other on the same hub (jobs are added, none removed). At each size, once every \
         job is Running or Succeeded, a steady window of {:.0} s measures the writes, CPU and pass time; the hub's \
         peak memory (`VmHWM`) is read at its end.\n\n",
        r.members,
        r.sizes.last().map_or(0, |s| s.jobs),
        r.members,
        i.heartbeat,
        i.inventory,
        r.running_fraction * 100.0,
        i.usage,
        r.nodes_per_member,
        r.sizes.first().map_or(0.0, |s| s.window_secs),
    );
    let _ = writeln!(
        md,
        "Hub binary: `{}` (modified {}, SHA-256 `{}…`); benchmark from checkout `{}`. {} members Schedulable \
         {:.0} s after the first was created.\n",
        r.hub_binary.path,
        r.hub_binary.modified,
        r.hub_binary.sha256,
        r.checkout,
        r.members,
        r.setup_secs
    );
    sizes(&mut md, r);
    writes(&mut md, &r.sizes);
    cpu(&mut md, &r.sizes);
    if let Some(stop) = &r.stopped_size {
        stopped(&mut md, r, stop);
    }
    goal(&mut md, r);
    md
}

/// Where the time, the writes and the memory went in the size the run stopped at.
fn stopped(md: &mut String, r: &ScaleReport, s: &StoppedSize) {
    let (running, succeeded, failed, neither) = s.phases;
    let _ = write!(
        md,
        "### Where the run stopped\n\n\
         The size of {} jobs did not settle. Measured from its first create until the run stopped, {:.1} \
         minutes later ({running} Running, {succeeded} Succeeded, {failed} Failed, {neither} neither):\n\n",
        s.jobs,
        s.secs / 60.0
    );
    if s.cpu.is_empty() {
        md.push_str("* CPU: not read (the hub had exited).\n");
    } else {
        let rest = rest_of_machine(&s.cpu, s.secs);
        let _ = writeln!(
            md,
            "* CPU, in cores (CPU seconds per second): kube-apiserver {}, etcd {}, hub {}, \
             kube-controller-manager {}, benchmark (the simulator) {}, rest of the machine {rest}; the whole \
             machine was busy {} cores on average.",
            cores(&s.cpu, "kube-apiserver", s.secs),
            cores(&s.cpu, "etcd", s.secs),
            cores(&s.cpu, HUB, s.secs),
            cores(&s.cpu, "kube-controller-manager", s.secs),
            cores(&s.cpu, BENCH, s.secs),
            cores(&s.cpu, MACHINE, s.secs),
        );
    }
    let hub = total(&s.hub_writes());
    let sim = total(&s.sim.writes());
    let _ = writeln!(
        md,
        "* Writes per second counted by the apiserver: the simulator's {}, the hub's (and the \
         controller-manager's) {}.",
        rate(Some(&sim), s.secs),
        rate(Some(&hub), s.secs)
    );
    let _ = writeln!(
        md,
        "* The simulator's longest heartbeat round {:.1} s (interval {:?}; the pool's heartbeat timeout {:?}), \
         longest inventory round {:.1} s (interval {:?}); {} of {} members Schedulable at the stop.",
        s.sim_round_max_secs.0,
        r.intervals.heartbeat,
        r.intervals.pool_timeout,
        s.sim_round_max_secs.1,
        r.intervals.inventory,
        s.members_schedulable,
        r.members
    );
    let refused: u64 = s.writes_refused.values().sum();
    if refused == 0 {
        md.push_str(
            "* The hub's leadership fence refused none of its writes (its leader Lease renewals were in \
             time).\n",
        );
    } else {
        let by: Vec<String> = s
            .writes_refused
            .iter()
            .map(|(target, n)| format!("{n} {target}"))
            .collect();
        let _ = writeln!(
            md,
            "* The hub's leadership fence refused **{refused}** of its writes ({}): its leader Lease renewals \
             came too late for it to be sure it still led ([ADR 0016](adr/0016-leadership-fenced-writes.md)).",
            by.join(", ")
        );
    }
    let kinds: Vec<String> = s
        .hub_cached
        .iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect();
    let most = s.trace.iter().max_by_key(|x| x.waiting);
    let _ = writeln!(
        md,
        "* The hub at the stop: `VmHWM` **{:.1} MiB**, `VmRSS` {:.1} MiB; its caches held {}{}.\n",
        mib(s.hub_vm_hwm_kib),
        mib(s.hub_vm_rss_kib),
        if kinds.is_empty() {
            "nothing it could report".to_string()
        } else {
            kinds.join(", ")
        },
        most.map_or(String::new(), |m| format!(
            "; at most {} jobs waited at once, {:.0} s after the first create",
            m.waiting, m.secs
        ))
    );
}

fn sizes(md: &mut String, r: &ScaleReport) {
    let _ = write!(
        md,
        "### Memory and scheduling pass time\n\n\
         *Pass time*: the mean of the hub's `{PASS_HISTOGRAM}` (sum and count deltas; passes in brackets), while \
         the jobs of the size were created and placed, and over the steady window. *Created*: this size's new \
         jobs, {} creates in flight, while the simulator's background load runs.\n\n\
         | jobs | running | created | created jobs/s | all settled after | hub `VmHWM` | hub `VmRSS` | pass time, ingest | pass time, steady |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        super::CREATES_IN_FLIGHT
    );
    for s in &r.sizes {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.1} | {:.0} s | **{:.1} MiB** | {:.1} MiB | {} | {} |",
            s.jobs,
            s.running,
            s.added,
            s.ingest_rate(),
            s.settled_secs,
            mib(s.hub_vm_hwm_kib),
            mib(s.hub_vm_rss_kib),
            pass_cell(s.pass_ingest),
            pass_cell(s.pass_steady)
        );
    }
    let mut growth = vec![];
    for w in r.sizes.windows(2) {
        let [a, b] = w else { continue };
        let ratio = |x: Option<PassTime>, y: Option<PassTime>| {
            Some(y?.mean_secs? / x?.mean_secs?.max(f64::EPSILON))
        };
        let jobs = b.jobs as f64 / a.jobs.max(1) as f64;
        let steady = ratio(a.pass_steady, b.pass_steady)
            .map_or("not measured".into(), |x| format!("×{x:.2}"));
        let hwm =
            (b.hub_vm_hwm_kib as f64 - a.hub_vm_hwm_kib as f64) / (b.jobs - a.jobs).max(1) as f64;
        growth.push(format!(
            "from {} to {} jobs (×{jobs:.1}) the steady pass time changes {steady} and `VmHWM` grows by \
             {hwm:.2} KiB per added job",
            a.jobs, b.jobs
        ));
    }
    if !growth.is_empty() {
        let _ = writeln!(md, "\n{}.", capitalise(&growth.join("; ")));
    }
    let keeping_up: Vec<String> = r
        .sizes
        .iter()
        .map(|s| {
            format!(
                "{} jobs: longest heartbeat round {:.1} s (interval {:?}), longest inventory round {:.1} s \
                 (interval {:?}), {} of {} members Schedulable at the end",
                s.jobs,
                s.sim_round_max_secs.0,
                r.intervals.heartbeat,
                s.sim_round_max_secs.1,
                r.intervals.inventory,
                s.members_schedulable,
                r.members
            )
        })
        .collect();
    let _ = writeln!(
        md,
        "\nWhether the simulator kept to its intervals in the steady window: {}.\n",
        keeping_up.join("; ")
    );
    let cached: Vec<String> = r
        .sizes
        .iter()
        .filter(|s| !s.hub_cached.is_empty())
        .map(|s| {
            let kinds: Vec<String> = s
                .hub_cached
                .iter()
                .map(|(kind, n)| format!("{n} {kind}"))
                .collect();
            let threads = if s.hub_threads > 0 {
                format!(" (the hub had {} threads)", s.hub_threads)
            } else {
                String::new()
            };
            format!("{} jobs: {}{threads}", s.jobs, kinds.join(", "))
        })
        .collect();
    if !cached.is_empty() {
        let _ = writeln!(
            md,
            "What the hub's caches held at the end of each steady window (`{}`): {}.\n",
            super::CACHED_OBJECTS,
            cached.join("; ")
        );
    }
    let backlog: Vec<String> = r.sizes.iter().filter_map(backlog).collect();
    if !backlog.is_empty() {
        let _ = writeln!(
            md,
            "While each size was created and settled (sampled every {:?}; *waiting*: jobs neither \
             Running, Succeeded nor Failed): {}.\n",
            super::SAMPLE_EVERY,
            backlog.join("; ")
        );
    }
}

/// The most jobs waiting at once while `s` was created and settled, the hub's largest `VmRSS`
/// then, and its `VmHWM` once they had settled; `None` without samples.
fn backlog(s: &ScaleSize) -> Option<String> {
    let most = s.trace.iter().max_by_key(|x| x.waiting)?;
    let largest = s.trace.iter().max_by_key(|x| x.rss_kib)?;
    Some(format!(
        "{} jobs: at most {} waiting, {:.0} s after the first create (`VmRSS` {:.1} MiB then); the \
         largest `VmRSS` {:.1} MiB, at {:.0} s with {} waiting; `VmHWM` {:.1} MiB once every job had \
         settled ({:.0} s)",
        s.jobs,
        most.waiting,
        most.secs,
        mib(most.rss_kib),
        mib(largest.rss_kib),
        largest.secs,
        largest.waiting,
        mib(s.hub_vm_hwm_settled_kib),
        s.settled_secs
    ))
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn rate(c: Option<&RequestCount>, secs: f64) -> String {
    c.map_or("—".into(), |c| {
        let r = c.total as f64 / secs.max(f64::EPSILON);
        if c.failed > 0 {
            format!(
                "{r:.1} ({:.1} failed)",
                c.failed as f64 / secs.max(f64::EPSILON)
            )
        } else {
            format!("{r:.1}")
        }
    })
}

fn total(counts: &[RequestCount]) -> RequestCount {
    RequestCount {
        key: RequestKey::default(),
        total: counts.iter().map(|c| c.total).sum(),
        failed: counts.iter().map(|c| c.failed).sum(),
    }
}

fn writes(md: &mut String, sizes: &[ScaleSize]) {
    let sim: Vec<Vec<RequestCount>> = sizes.iter().map(|s| s.sim.writes()).collect();
    let hub: Vec<Vec<RequestCount>> = sizes.iter().map(ScaleSize::hub_writes).collect();
    let keys: BTreeSet<RequestKey> = sim
        .iter()
        .chain(&hub)
        .flatten()
        .map(|c| c.key.clone())
        .collect();
    let _ = write!(
        md,
        "### Background writes per second at steady state\n\n\
         Counted by the apiserver (`apiserver_request_total`, the verbs POST, PUT, PATCH, APPLY, DELETE) over the \
         steady window, per second. *Simulator*: the writes it counted itself (every member's agent); *hub*: the \
         rest — the hub's, and the controller-manager's. *Failed*: answered other than 2xx.\n\n\
         | resource | verb |{}\n|---|---|{}\n",
        sizes
            .iter()
            .map(|s| format!(" simulator, {} jobs | hub, {} jobs |", s.jobs, s.jobs))
            .collect::<String>(),
        "---|---|".repeat(sizes.len())
    );
    for key in &keys {
        let cells: String = sizes
            .iter()
            .enumerate()
            .map(|(n, s)| {
                let find = |v: &[RequestCount]| v.iter().find(|c| &c.key == key).cloned();
                format!(
                    " {} | {} |",
                    rate(find(&sim[n]).as_ref(), s.window_secs),
                    rate(find(&hub[n]).as_ref(), s.window_secs)
                )
            })
            .collect();
        let _ = writeln!(md, "| {} | {} |{cells}", key.resource_label(), key.verb);
    }
    let totals: String = sizes
        .iter()
        .enumerate()
        .map(|(n, s)| {
            format!(
                " **{}** | **{}** |",
                rate(Some(&total(&sim[n])), s.window_secs),
                rate(Some(&total(&hub[n])), s.window_secs)
            )
        })
        .collect();
    let _ = writeln!(md, "| **every write** | |{totals}");
    let reads: Vec<String> = sizes
        .iter()
        .map(|s| {
            format!(
                "{:.1}/s with {} jobs",
                s.sim.member_reads as f64 / s.window_secs.max(f64::EPSILON),
                s.jobs
            )
        })
        .collect();
    let _ = writeln!(
        md,
        "\nThe simulator's reads of MemberClusters (GET, as each agent makes before its inventory): {}.\n",
        reads.join(", ")
    );
}

fn cores(cpu: &[CpuUse], component: &str, secs: f64) -> String {
    cpu.iter()
        .find(|c| c.component == component)
        .map_or("—".into(), |c| {
            format!("{:.2}", c.secs / secs.max(f64::EPSILON))
        })
}

/// The machine's busy time less every process in `cpu`, in cores over `secs` (other work on the
/// same cores); `—` without the machine's reading.
fn rest_of_machine(cpu: &[CpuUse], secs: f64) -> String {
    let ours: f64 = cpu
        .iter()
        .filter(|c| c.component != MACHINE)
        .map(|c| c.secs)
        .sum();
    cpu.iter()
        .find(|c| c.component == MACHINE)
        .map_or("—".into(), |m| {
            format!("{:.2}", (m.secs - ours).max(0.0) / secs.max(f64::EPSILON))
        })
}

fn cpu(md: &mut String, sizes: &[ScaleSize]) {
    md.push_str(
        "### CPU at steady state\n\n\
         User + system CPU over the steady window (`/proc/<pid>/stat`), in cores (CPU seconds per second). \
         *Benchmark* is the benchmark's process, simulator included; *rest of the machine* is the machine's busy \
         time less every process in the row: other work on the same cores.\n\n\
         | jobs | kube-apiserver | etcd | hub | kube-controller-manager | benchmark | rest of the machine |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for s in sizes {
        let rest = rest_of_machine(&s.cpu, s.window_secs);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {rest} |",
            s.jobs,
            cores(&s.cpu, "kube-apiserver", s.window_secs),
            cores(&s.cpu, "etcd", s.window_secs),
            cores(&s.cpu, HUB, s.window_secs),
            cores(&s.cpu, "kube-controller-manager", s.window_secs),
            cores(&s.cpu, BENCH, s.window_secs),
        );
    }
    md.push('\n');
}

fn goal(md: &mut String, r: &ScaleReport) {
    let _ = write!(
        md,
        "### Against the goal\n\nGoal: the hub's `VmHWM` at most {GOAL_MIB:.0} MiB with 1,000 members and \
         {GOAL_JOBS} jobs, a tenth of them running. "
    );
    if let Some(s) = r.sizes.iter().find(|s| s.jobs >= GOAL_JOBS) {
        let _ = writeln!(
            md,
            "Measured with {} members and {} jobs ({} running): **{:.1} MiB** ({}).\n",
            r.members,
            s.jobs,
            s.running,
            mib(s.hub_vm_hwm_kib),
            if mib(s.hub_vm_hwm_kib) <= GOAL_MIB {
                "met"
            } else {
                "not met"
            }
        );
        return;
    }
    let Some(last) = r.sizes.last() else {
        let _ = writeln!(md, "No size was measured.\n");
        return;
    };
    let _ = write!(
        md,
        "{GOAL_JOBS} jobs were not run: the largest size measured is {} jobs. ",
        last.jobs
    );
    if let Some(why) = &r.stopped {
        // Its first line: a reason recorded before `Error::summary` may go on with log lines.
        let why = stop_summary(why);
        let _ = write!(md, "The run stopped {why}. ");
    } else {
        let secs = GOAL_JOBS as f64 / last.ingest_rate().max(f64::EPSILON);
        let _ = write!(
            md,
            "Jobs were created at {:.1}/s at that size on this machine, so creating {GOAL_JOBS} would take \
             about {:.0} minutes alone, beyond the ten or so minutes `make bench` gives this step. ",
            last.ingest_rate(),
            secs / 60.0
        );
    }
    if let [.., a, b] = &r.sizes[..] {
        let per_job =
            (b.hub_vm_hwm_kib as f64 - a.hub_vm_hwm_kib as f64) / (b.jobs - a.jobs).max(1) as f64;
        let line = b.hub_vm_hwm_kib as f64 + per_job * (GOAL_JOBS - b.jobs) as f64;
        let _ = write!(
            md,
            "A straight line through the last two sizes ({:.1} and {:.1} MiB) reaches {:.0} MiB at {GOAL_JOBS} jobs \
             — an extrapolation, not a measurement.",
            mib(a.hub_vm_hwm_kib),
            mib(b.hub_vm_hwm_kib),
            line / 1024.0
        );
    }
    md.push_str("\n\n");
}

/// The first line of a `stopped` reason (one line since `Error::summary`; a reason kept by an
/// older run may go on with log lines).
fn stop_summary(why: &str) -> &str {
    why.lines().next().unwrap_or_default().trim_end()
}

#[cfg(test)]
mod tests {
    use super::super::super::BinaryInfo;
    use super::super::HubSample;
    use super::super::sim::{Intervals, SimTotals};
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    #[test]
    fn a_stop_reason_reaches_the_docs_in_one_line() {
        let exited = crate::Error::Exited {
            what: "hub-0 of cluster bench-scale exited with exit status: 1".into(),
            log_tail: "{\"level\":\"ERROR\"}\n{\"level\":\"INFO\"}".into(),
        };
        let why = format!("at 20000 jobs: {}", exited.summary());
        assert_eq!(
            stop_summary(&why),
            "at 20000 jobs: hub-0 of cluster bench-scale exited with exit status: 1"
        );
        assert!(exited.to_string().contains("last log lines:\n{\"level\""));
        assert_eq!(
            stop_summary("at 5 jobs: timed out\nmore"),
            "at 5 jobs: timed out"
        );
    }

    fn count(resource: &str, sub: &str, verb: &str, total: u64) -> RequestCount {
        RequestCount {
            key: RequestKey {
                group: "gpufed.io".into(),
                resource: resource.into(),
                subresource: sub.into(),
                verb: verb.into(),
            },
            total,
            failed: 0,
        }
    }

    fn size(jobs: usize, hwm_mib: u64, pass_ms: f64) -> ScaleSize {
        ScaleSize {
            jobs,
            running: jobs / 10,
            added: jobs,
            ingest_secs: jobs as f64 / 100.0,
            settled_secs: 20.0,
            pass_ingest: None,
            pass_steady: Some(PassTime {
                passes: 12,
                mean_secs: Some(pass_ms / 1000.0),
            }),
            window_secs: 60.0,
            writes: vec![
                count("placements", "status", "APPLY", 600),
                count("computejobs", "status", "APPLY", 120),
            ],
            sim: SimTotals {
                statuses: 600,
                member_reads: 6000,
                ..Default::default()
            },
            cpu: vec![
                CpuUse {
                    component: HUB.into(),
                    secs: 30.0,
                },
                CpuUse {
                    component: MACHINE.into(),
                    secs: 60.0,
                },
            ],
            sim_round_max_secs: (1.5, 3.0),
            members_schedulable: 1000,
            hub_vm_hwm_kib: hwm_mib * 1024,
            hub_vm_rss_kib: hwm_mib * 1000,
            hub_cached: [("ComputeJob".to_string(), jobs as u64)].into(),
            hub_threads: 0,
            hub_vm_hwm_settled_kib: hwm_mib * 1024,
            trace: vec![],
        }
    }

    fn report(sizes: Vec<ScaleSize>) -> ScaleReport {
        ScaleReport {
            hub_binary: BinaryInfo {
                path: "/t/release/gpufed-operator".into(),
                modified: "2026-12-04T08:00:00Z".into(),
                sha256: "abcdef012345".into(),
            },
            checkout: "1234567".into(),
            members: 1000,
            nodes_per_member: 1,
            running_fraction: 0.1,
            sizes_asked: sizes.iter().map(|s| s.jobs).collect(),
            intervals: Intervals {
                heartbeat: Duration::from_secs(5),
                inventory: Duration::from_secs(10),
                usage: Duration::from_secs(60),
                pool_timeout: Duration::from_secs(40),
            },
            setup_secs: 90.0,
            sizes,
            stopped: None,
            stopped_size: None,
        }
    }

    #[test]
    fn a_size_that_stopped_says_where_the_cpu_the_writes_and_the_memory_went() {
        let mut r = report(vec![size(1000, 100, 2.0)]);
        r.stopped = Some("at 20000 jobs: 9 of 20000 jobs Failed".into());
        let cpu = |component: &str, secs: f64| CpuUse {
            component: component.into(),
            secs,
        };
        let stop = StoppedSize {
            jobs: 20_000,
            secs: 600.0,
            phases: (24, 10_861, 9, 7_907),
            cpu: vec![
                cpu("kube-apiserver", 900.0),
                cpu("etcd", 60.0),
                cpu(HUB, 120.0),
                cpu(BENCH, 30.0),
                cpu(MACHINE, 1_170.0),
            ],
            writes: vec![
                count("placements", "status", "APPLY", 6_000),
                count("computejobs", "status", "APPLY", 1_200),
            ],
            sim: SimTotals {
                statuses: 6_000,
                ..SimTotals::default()
            },
            sim_round_max_secs: (45.0, 90.0),
            members_schedulable: 950,
            writes_refused: [("placements".to_string(), 30), ("events".to_string(), 12)]
                .into_iter()
                .collect(),
            hub_vm_hwm_kib: 225 * 1024,
            hub_vm_rss_kib: 205 * 1024,
            hub_cached: [("ComputeJob".to_string(), 5_987)].into_iter().collect(),
            trace: vec![HubSample {
                secs: 300.0,
                waiting: 2_705,
                rss_kib: 1,
            }],
        };
        r.stopped_size = Some(stop.clone());
        let md = markdown(&r);
        assert!(md.contains("### Where the run stopped"), "{md}");
        assert!(
            md.contains("until the run stopped, 10.0 minutes later"),
            "{md}"
        );
        assert!(
            md.contains("(24 Running, 10861 Succeeded, 9 Failed, 7907 neither)"),
            "{md}"
        );
        assert!(
            md.contains("kube-apiserver 1.50, etcd 0.10, hub 0.20, kube-controller-manager —, benchmark (the simulator) 0.05, rest of the machine 0.10; the whole machine was busy 1.95 cores"),
            "{md}"
        );
        assert!(
            md.contains("the simulator's 10.0, the hub's (and the controller-manager's) 2.0."),
            "{md}"
        );
        assert!(md.contains("longest heartbeat round 45.0 s"), "{md}");
        assert!(md.contains("950 of 1000 members Schedulable"), "{md}");
        assert!(
            md.contains("refused **42** of its writes (12 events, 30 placements)"),
            "{md}"
        );
        assert!(
            md.contains("`VmHWM` **225.0 MiB**, `VmRSS` 205.0 MiB"),
            "{md}"
        );
        assert!(
            md.contains("5987 ComputeJob; at most 2705 jobs waited at once, 300 s"),
            "{md}"
        );
        // The section sits before the goal, which still names the stop.
        assert!(
            md.find("### Where the run stopped") < md.find("### Against the goal"),
            "{md}"
        );
        // A fence that refused nothing says so; a hub that exited has no CPU to show.
        r.stopped_size = Some(StoppedSize {
            writes_refused: BTreeMap::new(),
            cpu: vec![],
            ..stop
        });
        let md = markdown(&r);
        assert!(md.contains("refused none of its writes"), "{md}");
        assert!(md.contains("CPU: not read (the hub had exited)."), "{md}");
    }

    #[test]
    fn the_section_splits_writes_shows_memory_pass_time_and_why_the_goal_size_was_not_run() {
        let md = markdown(&report(vec![size(1000, 100, 2.0), size(10_000, 190, 10.0)]));
        assert!(
            md.contains("| 1000 | 100 | 1000 | 100.0 | 20 s | **100.0 MiB** |"),
            "{md}"
        );
        assert!(md.contains("| not exported | 2.0 ms (12) |"), "{md}");
        // 600 status applies in 60 s are the simulator's; the job status applies the hub's.
        assert!(
            md.contains("| placements/status (gpufed.io) | APPLY | 10.0 | — |"),
            "{md}"
        );
        assert!(
            md.contains("| computejobs/status (gpufed.io) | APPLY | — | 2.0 |"),
            "{md}"
        );
        assert!(
            md.contains("| **every write** | | **10.0** | **2.0** |"),
            "{md}"
        );
        assert!(md.contains("100.0/s with 1000 jobs"), "{md}");
        assert!(md.contains("the steady pass time changes ×5.00"), "{md}");
        assert!(md.contains("10.24 KiB per added job"), "{md}");
        assert!(
            md.contains("| 1000 | — | — | 0.50 | — | — | 0.50 |"),
            "{md}"
        );
        assert!(md.contains("100000 jobs were not run"), "{md}");
        assert!(md.contains("about 17 minutes alone"), "{md}");
        assert!(md.contains("reaches 1090 MiB at 100000 jobs"), "{md}");
        assert!(
            md.contains("(`gpufed_hub_cached_objects`): 1000 jobs: 1000 ComputeJob; 10000 jobs: 10000 ComputeJob."),
            "{md}"
        );
    }

    #[test]
    fn the_backlog_line_names_the_most_waiting_and_the_largest_rss_with_their_times() {
        let mut with_trace = size(10_000, 190, 10.0);
        with_trace.trace = vec![
            super::super::HubSample {
                secs: 5.0,
                waiting: 40,
                rss_kib: 100 * 1024,
            },
            super::super::HubSample {
                secs: 10.0,
                waiting: 900,
                rss_kib: 150 * 1024,
            },
            super::super::HubSample {
                secs: 15.0,
                waiting: 10,
                rss_kib: 160 * 1024,
            },
        ];
        let md = markdown(&report(vec![size(1000, 100, 2.0), with_trace]));
        assert!(
            md.contains(
                "10000 jobs: at most 900 waiting, 10 s after the first create (`VmRSS` 150.0 MiB \
                 then); the largest `VmRSS` 160.0 MiB, at 15 s with 10 waiting; `VmHWM` 190.0 MiB \
                 once every job had settled (20 s)."
            ),
            "{md}"
        );
        // A size without samples (a report from before they were taken) says nothing.
        assert!(!md.contains("1000 jobs: at most"), "{md}");
    }

    #[test]
    fn a_measured_goal_size_is_judged_against_the_goal() {
        let md = markdown(&report(vec![size(GOAL_JOBS, 450, 50.0)]));
        assert!(md.contains("**450.0 MiB** (met)"), "{md}");
    }
}
