//! The "Hub against a real apiserver" section of `docs/benchmarks.md`, written from what
//! `gpufed-bench throughput` measured (never from figures typed in).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::apimetrics::{RequestCount, RequestKey};
use super::procstat::{BENCH, CpuUse, MACHINE};
use super::{HUB, ThroughputReport, ThroughputResult};

/// The section, in Markdown.
pub fn markdown(r: &ThroughputReport) -> String {
    let mut md = String::new();
    md.push_str(
        "## Hub against a real apiserver (e2e)\n\n\
         A harness hub cluster (etcd, kube-apiserver, controller-manager), the hub as one process (`gpufed-operator \
         hub`, started as the hub chart runs it where it can: see the last table), and members stood in for by fake \
         agents in the benchmark's process (heartbeats, one inventory report each, enough H100s for every job). \
         Jobs are single-GPU, in a pool without a chain.\n\n",
    );
    let _ = writeln!(
        md,
        "Hub binary: `{}` (modified {}, SHA-256 `{}…`); benchmark from checkout `{}`.\n",
        r.hub_binary.path, r.hub_binary.modified, r.hub_binary.sha256, r.checkout
    );
    headline(&mut md, &r.runs);
    writes(&mut md, &r.runs);
    cpu(&mut md, &r.runs);
    latency(&mut md, &r.runs);
    md.push_str("### What differs from an installation with the charts' defaults\n\n");
    settings_table(&mut md, &r.settings);
    md
}

/// A table of `settings`: each with the charts' default, what ran, and whether they are the same.
pub fn settings_table(md: &mut String, settings: &[super::settings::Setting]) {
    md.push_str("| setting | charts' default | this benchmark | same |\n|---|---|---|---|\n");
    for s in settings {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            s.what,
            s.chart,
            s.bench,
            if s.same { "yes" } else { "**no**" }
        );
    }
    md.push('\n');
}

/// The concurrencies of the write-mix replay, as run.
fn ceiling_levels(runs: &[ThroughputResult]) -> Vec<usize> {
    let set: BTreeSet<usize> = runs
        .iter()
        .flat_map(|r| r.ceilings.iter().map(|c| c.in_flight))
        .collect();
    set.into_iter().collect()
}

fn headline(md: &mut String, runs: &[ThroughputResult]) {
    let levels = ceiling_levels(runs);
    let level_text = levels
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(" / ");
    let in_flight = runs.first().map_or(0, |r| r.in_flight);
    let with_creates = runs
        .iter()
        .flat_map(|r| &r.ceilings)
        .all(|c| c.with_creates);
    let (ceiling_work, ceiling_note) = if with_creates {
        (
            "each job's create followed by the hub's writes for it",
            " The closed loop's time includes the creates, so a hub costing the apiserver nothing beyond \
             its writes would reach 1.0 at the same concurrency; the hub keeps up to 16 creates, 64 writes and 4 \
             Events in flight at once, more than a replay of 16 or 64 jobs one request after the other, so it can \
             pass 1.0.",
        )
    } else {
        (
            "the hub's writes per job against jobs created beforehand",
            " The closed loop's time includes the creates and the ceiling's does not.",
        )
    };
    let _ = write!(
        md,
        "### Placement rate against the apiserver's ceiling\n\n\
         *Placed*: jobs created {in_flight} at a time, until a watch on Placements has seen every job's Placement. \
         *Ceiling*: the same apiserver's rate for {ceiling_work} — the finalizer patch, one status apply \
         with the admission and the decision (guarded by resourceVersion), the Placement create and one Event — \
         replayed by the benchmark itself with the hub stopped, {level_text} jobs in flight, the same watch on \
         Placements open (`e2e/src/bench/writemix.rs`).{ceiling_note}\n\n\
         | members | jobs | created jobs/s | placed in | placed jobs/s | ceiling jobs/s ({level_text} in flight) | \
         **placed ÷ ceiling** ({level_text}) |\n|---|---|---|---|---|---|---|\n"
    );
    for r in runs {
        let ceilings: Vec<String> = levels
            .iter()
            .map(|k| {
                r.ceiling(*k)
                    .map_or("—".into(), |c| format!("{:.1}", c.rate()))
            })
            .collect();
        let ratios: Vec<String> = levels
            .iter()
            .map(|k| {
                r.ceiling(*k).map_or("—".into(), |c| {
                    format!("{:.2}", r.placed_rate() / c.rate())
                })
            })
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} | {:.2} s | {:.1} | {} | **{}** |",
            r.members,
            r.jobs,
            r.ingest_rate(),
            r.placed_secs,
            r.placed_rate(),
            ceilings.join(" / "),
            ratios.join(" / ")
        );
    }
    if let [a, b] = runs {
        let _ = writeln!(
            md,
            "\nGoing from {} to {} members changes the placement rate by ×{:.2}.",
            a.members,
            b.members,
            b.placed_rate() / a.placed_rate()
        );
    }
    md.push('\n');
}

fn per_job(c: Option<&RequestCount>, jobs: usize) -> String {
    let Some(c) = c else {
        return "—".into();
    };
    let n = jobs.max(1) as f64;
    if c.failed > 0 {
        format!(
            "{:.2} ({:.2} failed)",
            c.total as f64 / n,
            c.failed as f64 / n
        )
    } else {
        format!("{:.2}", c.total as f64 / n)
    }
}

fn writes(md: &mut String, runs: &[ThroughputResult]) {
    let hub: Vec<Vec<RequestCount>> = runs.iter().map(ThroughputResult::hub_writes).collect();
    let keys: BTreeSet<RequestKey> = hub.iter().flatten().map(|c| c.key.clone()).collect();
    let harness: Vec<String> = runs
        .iter()
        .map(|r| {
            let n = |res: &str| {
                r.harness_writes
                    .iter()
                    .filter(|c| c.key.resource == res)
                    .map(|c| c.total)
                    .sum::<u64>()
            };
            format!(
                "{} members: {} creates and {} heartbeat renewals over {:.1} s",
                r.members,
                n("computejobs"),
                n("leases"),
                r.writes_read_secs
            )
        })
        .collect();
    let _ = write!(
        md,
        "### Writes per placed job\n\n\
         Counted by the apiserver (`apiserver_request_total`, the verbs POST, PUT, PATCH, APPLY, DELETE), from the \
         first create of the closed loop until two seconds passed with no write but Lease renewals, divided by the \
         jobs. The benchmark's own writes are taken out ({}); what is left is the hub's, and anything the \
         controller-manager wrote meanwhile. *Failed*: answered other than 2xx (409 conflicts, …).\n\n\
         | resource | verb |{}\n|---|---|{}\n",
        harness.join("; "),
        runs.iter()
            .map(|r| format!(" per job, {} members |", r.members))
            .collect::<String>(),
        "---|".repeat(runs.len())
    );
    for key in &keys {
        let cells: String = runs
            .iter()
            .zip(&hub)
            .map(|(r, h)| format!(" {} |", per_job(h.iter().find(|c| &c.key == key), r.jobs)))
            .collect();
        let _ = writeln!(md, "| {} | {} |{cells}", key.resource_label(), key.verb);
    }
    let totals: String = runs
        .iter()
        .zip(&hub)
        .map(|(r, h)| {
            let total = RequestCount {
                key: RequestKey::default(),
                total: h.iter().map(|c| c.total).sum(),
                failed: h.iter().map(|c| c.failed).sum(),
            };
            format!(" **{}** |", per_job(Some(&total), r.jobs))
        })
        .collect();
    let _ = writeln!(md, "| **every write** | |{totals}");
    if let Some(c) = runs.first().and_then(|r| r.ceilings.first()) {
        let mix: Vec<String> = c
            .writes
            .iter()
            .map(|w| {
                format!(
                    "{} {} {}",
                    w.key.resource_label(),
                    w.key.verb,
                    per_job(Some(w), c.jobs)
                )
            })
            .collect();
        let _ = writeln!(
            md,
            "\nThe replay behind the ceiling, counted the same way: {} per job.",
            mix.join(", ")
        );
    }
    md.push('\n');
}

/// CPU seconds per 1,000 jobs of `component` in `cpu`, or "—".
fn cpu_cell(cpu: &[CpuUse], component: &str, jobs: usize) -> String {
    cpu.iter()
        .find(|c| c.component == component)
        .map_or("—".into(), |c| {
            format!("{:.1} s", c.secs * 1000.0 / jobs.max(1) as f64)
        })
}

/// CPU seconds per 1,000 jobs of what else ran on the machine: its busy time less every process
/// the sample names.
fn others_cell(cpu: &[CpuUse], jobs: usize) -> String {
    let Some(machine) = cpu.iter().find(|c| c.component == MACHINE) else {
        return "—".into();
    };
    let ours: f64 = cpu
        .iter()
        .filter(|c| c.component != MACHINE)
        .map(|c| c.secs)
        .sum();
    format!(
        "{:.1} s",
        (machine.secs - ours).max(0.0) * 1000.0 / jobs.max(1) as f64
    )
}

fn cpu(md: &mut String, runs: &[ThroughputResult]) {
    md.push_str(
        "### CPU per 1,000 jobs, and the hub's memory\n\n\
         User + system CPU (`/proc/<pid>/stat`, all threads) per 1,000 jobs: while the hub placed the closed \
         loop's jobs (first create to last Placement; the apiserver's and etcd's share includes taking the creates), \
         and while the benchmark replayed the same writes with no hub. *Benchmark* is the benchmark's own process \
         (its clients, the watch, the replay); *rest of the machine* is the machine's busy time (`/proc/stat`) less \
         every process in the row: anything else running meanwhile, which competed for the same cores.\n\n\
         | members | phase | kube-apiserver | etcd | hub | kube-controller-manager | benchmark | rest of the machine |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        let row = |phase: String, cpu: &[CpuUse], jobs: usize| {
            format!(
                "| {} | {phase} | {} | {} | {} | {} | {} | {} |\n",
                r.members,
                cpu_cell(cpu, "kube-apiserver", jobs),
                cpu_cell(cpu, "etcd", jobs),
                cpu_cell(cpu, HUB, jobs),
                cpu_cell(cpu, "kube-controller-manager", jobs),
                cpu_cell(cpu, BENCH, jobs),
                others_cell(cpu, jobs)
            )
        };
        md.push_str(&row("hub placing".into(), &r.cpu, r.jobs));
        for c in &r.ceilings {
            md.push_str(&row(
                format!("replay, {} in flight", c.in_flight),
                &c.cpu,
                c.jobs,
            ));
        }
    }
    let memory: Vec<String> = runs
        .iter()
        .map(|r| {
            let jobs = r.jobs + r.open_loop.iter().map(|o| o.jobs).sum::<usize>();
            format!(
                "{:.1} MiB with {} members and {jobs} jobs",
                r.hub_vm_hwm_kib as f64 / 1024.0,
                r.members
            )
        })
        .collect();
    let _ = writeln!(
        md,
        "\nThe hub's peak resident memory (`VmHWM`) once it had placed every job of its run: {}.\n",
        memory.join("; ")
    );
}

fn latency(md: &mut String, runs: &[ThroughputResult]) {
    md.push_str(
        "### Submit → Placement\n\n\
         From a job's create returning to a watch on Placements seeing its Placement, on the benchmark's monotonic \
         clock. *Closed*: the closed loop above. *Open*: jobs created at a fixed rate, each create started on time \
         whether or not earlier ones had returned, after the closed loop on the same hub (its jobs stay).\n\n\
         | members | load | jobs | submitted in | last placed after | p50 | p99 | max |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        let l = &r.latency;
        let _ = writeln!(
            md,
            "| {} | closed, {} in flight | {} | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.2} s |",
            r.members,
            r.in_flight,
            r.jobs,
            r.ingest_secs,
            r.placed_secs,
            l.p50_secs,
            l.p99_secs,
            l.max_secs
        );
        for o in &r.open_loop {
            let l = &o.latency;
            let _ = writeln!(
                md,
                "| {} | open, {:.0} jobs/s | {} | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.2} s |",
                r.members,
                o.rate,
                o.jobs,
                o.submit_secs,
                o.placed_secs,
                l.p50_secs,
                l.p99_secs,
                l.max_secs
            );
        }
    }
    let at_50: Vec<String> = runs
        .iter()
        .filter_map(|r| {
            let o = r.open_loop.iter().find(|o| (o.rate - 50.0).abs() < 0.5)?;
            Some(format!(
                "{} with {} members",
                if o.latency.p99_secs <= 0.5 {
                    format!("met ({:.0} ms)", o.latency.p99_secs * 1000.0)
                } else {
                    format!("not met ({:.0} ms)", o.latency.p99_secs * 1000.0)
                },
                r.members
            ))
        })
        .collect();
    if !at_50.is_empty() {
        let _ = writeln!(
            md,
            "\nGoal: p99 submit → Placement at most 500 ms in open loop at 50 jobs/s — {}.",
            at_50.join("; ")
        );
    }
    md.push_str(
        "\nThe member side (Placement → the member's Job → pod Running) needs real agents: the peer section's \
         open-loop phase splits each job's path there.\n\n",
    );
}

#[cfg(test)]
mod tests {
    use super::super::latency::Latency;
    use super::super::settings::Setting;
    use super::super::writemix::Ceiling;
    use super::super::{BinaryInfo, OpenLoop};
    use super::*;

    fn count(
        group: &str,
        resource: &str,
        sub: &str,
        verb: &str,
        total: u64,
        failed: u64,
    ) -> RequestCount {
        RequestCount {
            key: RequestKey {
                group: group.into(),
                resource: resource.into(),
                subresource: sub.into(),
                verb: verb.into(),
            },
            total,
            failed,
        }
    }

    fn run(members: usize, placed_secs: f64) -> ThroughputResult {
        ThroughputResult {
            members,
            nodes_per_member: 2,
            jobs: 100,
            in_flight: 16,
            ingest_secs: 2.0,
            placed_secs,
            latency: Latency {
                n: 100,
                p50_secs: 0.5,
                p99_secs: 1.5,
                max_secs: 2.0,
            },
            writes: vec![
                count("gpufed.io", "computejobs", "", "POST", 100, 0),
                count("gpufed.io", "computejobs", "status", "APPLY", 310, 10),
                count("coordination.k8s.io", "leases", "", "PATCH", 12, 0),
            ],
            harness_writes: vec![
                count("gpufed.io", "computejobs", "", "POST", 100, 0),
                count("coordination.k8s.io", "leases", "", "PATCH", 12, 0),
            ],
            writes_read_secs: 7.0,
            cpu: vec![
                CpuUse {
                    component: "kube-apiserver".into(),
                    secs: 3.0,
                },
                CpuUse {
                    component: HUB.into(),
                    secs: 1.0,
                },
                CpuUse {
                    component: MACHINE.into(),
                    secs: 4.5,
                },
            ],
            hub_vm_hwm_kib: 51200,
            open_loop: vec![
                OpenLoop {
                    rate: 25.0,
                    jobs: 50,
                    submit_secs: 2.0,
                    placed_secs: 3.0,
                    latency: Latency::default(),
                },
                OpenLoop {
                    rate: 50.0,
                    jobs: 50,
                    submit_secs: 1.0,
                    placed_secs: 1.5,
                    latency: Latency {
                        n: 50,
                        p50_secs: 0.1,
                        p99_secs: if members > 10 { 0.61 } else { 0.25 },
                        max_secs: 0.7,
                    },
                },
            ],
            ceilings: vec![
                Ceiling {
                    in_flight: 16,
                    jobs: 100,
                    secs: 2.0,
                    writes: vec![count("gpufed.io", "placements", "", "POST", 100, 0)],
                    cpu: vec![],
                    with_creates: true,
                },
                Ceiling {
                    in_flight: 64,
                    jobs: 100,
                    secs: 1.0,
                    writes: vec![],
                    cpu: vec![],
                    with_creates: true,
                },
            ],
        }
    }

    #[test]
    fn the_section_shows_the_ratio_to_the_ceiling_writes_per_job_and_what_differs() {
        let r = ThroughputReport {
            hub_binary: BinaryInfo {
                path: "/t/release/gpufed-operator".into(),
                modified: "2026-12-04T08:00:00Z".into(),
                sha256: "abcdef012345".into(),
            },
            checkout: "1234567".into(),
            settings: vec![Setting {
                what: "hub replicas".into(),
                chart: "2".into(),
                bench: "1".into(),
                same: false,
            }],
            runs: vec![run(3, 4.0), run(30, 5.0)],
        };
        let md = markdown(&r);
        // 100 jobs in 4 s = 25/s against 50/s and 100/s.
        assert!(
            md.contains("| 3 | 100 | 50.0 | 4.00 s | 25.0 | 50.0 / 100.0 | **0.50 / 0.25** |"),
            "{md}"
        );
        assert!(
            md.contains("| 30 | 100 | 50.0 | 5.00 s | 20.0 | 50.0 / 100.0 | **0.40 / 0.20** |"),
            "{md}"
        );
        assert!(md.contains("changes the placement rate by ×0.80"), "{md}");
        assert!(
            md.contains("each job's create followed by the hub's writes for it"),
            "{md}"
        );
        assert!(
            md.contains(
                "at 50 jobs/s — met (250 ms) with 3 members; not met (610 ms) with 30 members."
            ),
            "{md}"
        );
        let mut old = r.clone();
        for run in &mut old.runs {
            for c in &mut run.ceilings {
                c.with_creates = false;
            }
        }
        assert!(
            markdown(&old).contains(
                "The closed loop's time includes the creates and the ceiling's does not."
            ),
            "a ceiling read from a run before the creates were replayed says what it timed"
        );
        // The harness's creates and heartbeats are out; the hub's status applies stay.
        assert!(md.contains("| computejobs/status (gpufed.io) | APPLY | 3.10 (0.10 failed) | 3.10 (0.10 failed) |"), "{md}");
        assert!(!md.contains("| leases"), "{md}");
        assert!(
            md.contains("| **every write** | | **3.10 (0.10 failed)** |"),
            "{md}"
        );
        assert!(
            md.contains("| 3 | hub placing | 30.0 s | — | 10.0 s | — | — | 5.0 s |"),
            "{md}"
        );
        assert!(md.contains("50.0 MiB with 3 members and 200 jobs"), "{md}");
        assert!(
            md.contains("| 3 | open, 25 jobs/s | 50 | 2.00 s | 3.00 s |"),
            "{md}"
        );
        assert!(md.contains("| hub replicas | 2 | 1 | **no** |"), "{md}");
        assert!(
            md.contains("placements (gpufed.io) POST 1.00 per job"),
            "{md}"
        );
    }
}
