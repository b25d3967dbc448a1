//! The "Peer: Kueue MultiKueue" section of `docs/benchmarks.md`, written from a [`PeerResult`]:
//! every figure is read from the run's JSON, ratios are computed here, and a phase that failed
//! shows its error where its figures would be. Kueue has a column per configuration run: as
//! shipped, and (when run) with every client at gpufed's rate.

use std::fmt::Write as _;

use super::{Dispatch, Lost, PeerResult, SystemRun};

fn secs(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0} s")
    } else {
        format!("{v:.1} s")
    }
}

fn cell<T>(run: &SystemRun, get: impl Fn(&Dispatch) -> T, show: impl Fn(T) -> String) -> String {
    match &run.dispatch {
        Some(d) => show(get(d)),
        None => "failed (see below)".into(),
    }
}

fn lost_cell<T>(run: &SystemRun, get: impl Fn(&Lost) -> T, show: impl Fn(T) -> String) -> String {
    match &run.lost {
        Some(l) => show(get(l)),
        None => "failed (see below)".into(),
    }
}

/// A client rate as the report shows it.
fn rate((qps, burst): (f64, u32)) -> String {
    format!("{qps}/s (burst {burst})")
}

/// The systems of a run, in column order, with their column titles.
fn systems(r: &PeerResult) -> Vec<(String, &SystemRun)> {
    let mut out = vec![
        ("gpufed".to_string(), &r.gpufed),
        (
            if r.kueue_matched.is_some() {
                "Kueue MultiKueue, as shipped".to_string()
            } else {
                "Kueue MultiKueue".to_string()
            },
            &r.kueue,
        ),
    ];
    if let Some(m) = &r.kueue_matched {
        let title = match r.kueue_matched_rate {
            Some(q) => format!("Kueue MultiKueue, clients at {} (patched)", rate(q)),
            None => "Kueue MultiKueue, clients at gpufed's rate (patched)".to_string(),
        };
        out.push((title, m));
    }
    out
}

fn header(md: &mut String, systems: &[(String, &SystemRun)]) {
    let titles: Vec<&str> = systems.iter().map(|(t, _)| t.as_str()).collect();
    let _ = writeln!(
        md,
        "| | {} |\n|---|{}",
        titles.join(" | "),
        "---|".repeat(titles.len())
    );
}

fn row(md: &mut String, what: &str, cells: Vec<String>) {
    let _ = writeln!(md, "| {what} | {} |", cells.join(" | "));
}

/// The throttling caveat that goes with the ratios: what paced each Kueue column.
fn throttling(r: &PeerResult) -> String {
    let mut t = format!(
        "MultiKueue's manager reaches each worker through clients it builds from the kubeconfig alone \
         (`newClientWithWatch`, `pkg/controller/admissionchecks/multikueue/multikueuecluster.go` of Kueue {}), so \
         at client-go's default of 5 requests/s (burst 10) per API type and worker; Kueue has no setting for it, and \
         the figures of Kueue as shipped include that pacing (its own client: the shipped manifest's {}).",
        r.kueue_version,
        rate(r.kueue_shipped_rate)
    );
    if let (Some(_), Some(q)) = (&r.kueue_matched, r.kueue_matched_rate) {
        let _ = write!(
            t,
            " The patched column lifts it: Kueue built with `e2e/tools/kueue/multikueue-worker-rate.patch`, which gives \
             each worker's client one token bucket of {q} (the way Kueue's `cmd/kueue/main.go` limits its own client), \
             and its own client set to the same rate (`clientConnection`) — gpufed's rate, the hub chart's \
             `kubeApi`.",
            q = rate(q)
        );
    }
    t
}

/// Milliseconds, as the latency goals are written.
fn ms(v: f64) -> String {
    format!("{:.0} ms", v * 1000.0)
}

/// gpufed's open-loop phase: each stretch of a job's path with the goal it is held to.
fn open_loop(md: &mut String, run: &SystemRun, concurrency: usize) {
    let o = match (&run.open, &run.open_error) {
        (Some(o), _) => o,
        (None, Some(e)) => {
            let _ = writeln!(
                md,
                "
### gpufed, open loop

Not measured in this run: `{e}`"
            );
            return;
        }
        (None, None) => return,
    };
    let _ = writeln!(
        md,
        "\n### gpufed, open loop: {} jobs submitted at {:.0} jobs/s, each job's path\n\n\
         One create started every {:.0} ms whether or not earlier ones were answered (reached: {:.1} jobs/s); \
         each pod runs {}. Times run from the create's answer; the Placement is seen by a watch on the hub, the \
         local Job and the Running pod by watches on the members. The same pool as the dispatch phase, with GPUs \
         for every job.\n\n\
         | stretch | jobs | p50 | p99 | max | goal (p99) |\n|---|---|---|---|---|---|",
        o.jobs,
        o.rate,
        1000.0 / o.rate,
        o.achieved_rate,
        super::OPEN_JOB_RUNS,
    );
    let rows = [
        (
            "submit → Placement on the hub",
            &o.submit_to_placement,
            "≤ 500 ms",
        ),
        (
            "Placement → local Job on the member (delivery)",
            &o.placement_to_local_job,
            "≤ 500 ms",
        ),
        (
            "local Job → pod Running (the member's Job controller, scheduler, kwok)",
            &o.local_job_to_running,
            "",
        ),
        ("submit → pod Running", &o.submit_to_running, "≤ 2 s"),
    ];
    for (what, l, goal) in rows {
        let _ = writeln!(
            md,
            "| {what} | {} | {} | {} | {} | {goal} |",
            l.n,
            ms(l.p50_secs),
            ms(l.p99_secs),
            ms(l.max_secs)
        );
    }
    let met = |l: &crate::bench::latency::Latency, goal: f64| l.p99_secs <= goal;
    let all_met = met(&o.submit_to_placement, 0.5)
        && met(&o.placement_to_local_job, 0.5)
        && met(&o.submit_to_running, 2.0);
    if let (false, Some(d)) = (all_met, &run.dispatch) {
        let _ = writeln!(
            md,
            "\nNot every goal is met here. In the dispatch phase of the same run, the whole federation — four control \
             planes, kube-scheduler and kwok on each worker, the hub, the agents and gpu-probes, all on this \
             machine — got jobs running at {:.1} jobs/s with {} requests in flight; an open loop at {:.0} jobs/s asks \
             {:.1}× that, so jobs queue and each stretch's latency grows with the queue (p50 above). The hub alone, \
             against fake agents, is measured in the throughput section's open loop.",
            d.rate(),
            concurrency,
            o.rate,
            o.rate / d.rate()
        );
    }
}

/// The markdown section.
pub fn markdown(r: &PeerResult) -> String {
    let sys = systems(r);
    let g = &r.gpufed;
    let mut md = String::from("## Peer: Kueue MultiKueue\n\n");
    let _ = writeln!(
        md,
        "gpufed and Kueue MultiKueue ({kv}) on identical harness clusters (Kubernetes {k8s}), one system after the \
         other in the same run: a manager/hub (etcd, kube-apiserver, controller-manager) and {w} workers (plus \
         kube-scheduler, the Job controller and kwok) with {n} kwok nodes of 8 GPUs each. gpufed: the hub and member \
         charts with real agents (pull). Kueue: a manager with MultiKueue and Kueue on every worker, batch/v1 Jobs \
         with the queue label on the manager{twice}. Jobs are single-GPU, submitted {c} requests at a time; every time \
         below is read from the workers' apiservers (watches on Pods, Jobs and Kueue Workloads).\n",
        kv = r.kueue_version,
        k8s = r.kubernetes_version,
        w = r.workers,
        n = r.nodes_per_worker,
        c = r.concurrency,
        twice = if r.kueue_matched.is_some() {
            "; Kueue runs twice, as shipped and with its clients at gpufed's rate"
        } else {
            ""
        },
    );
    let _ = writeln!(
        md,
        "### Dispatch: {} jobs until each one's pod runs on a worker\n",
        r.jobs
    );
    header(&mut md, &sys);
    let each = |f: &dyn Fn(&SystemRun) -> String| sys.iter().map(|(_, run)| f(run)).collect();
    row(
        &mut md,
        "set-up until jobs are taken",
        each(&|run| secs(run.setup_secs)),
    );
    let ingest = |d: &Dispatch| (d.ingest_secs, d.jobs as f64 / d.ingest_secs);
    let show_ingest = |(s, rate): (f64, f64)| format!("{} ({rate:.1} jobs/s)", secs(s));
    row(
        &mut md,
        "submitted (apiserver answers)",
        each(&|run| cell(run, ingest, show_ingest)),
    );
    let all = |d: &Dispatch| (d.all_running_secs, d.rate());
    let show_all = |(s, rate): (f64, f64)| format!("{} (**{rate:.1} jobs/s**)", secs(s));
    row(
        &mut md,
        "every job running",
        each(&|run| cell(run, all, show_all)),
    );
    let lat = |d: &Dispatch| (d.latency_p50_secs, d.latency_p95_secs, d.latency_max_secs);
    let show_lat = |(a, b, c): (f64, f64, f64)| format!("{} / {} / {}", secs(a), secs(b), secs(c));
    row(
        &mut md,
        "per job, submission → running: median / p95 / max",
        each(&|run| cell(run, lat, show_lat)),
    );
    let copies = |d: &Dispatch| (d.workers_with_a_copy_mean, d.workers_with_a_copy_max);
    let show_copies = |(m, x): (f64, usize)| format!("{m:.2} (most: {x})");
    row(
        &mut md,
        "workers that received a copy of a job (mean)",
        each(&|run| cell(run, copies, show_copies)),
    );
    let show_f = |v: f64| format!("{v:.2}");
    row(
        &mut md,
        "… of which Kueue Workloads",
        each(&|run| cell(run, |d| d.workload_copies_mean, show_f)),
    );
    row(
        &mut md,
        "… of which batch Jobs",
        each(&|run| cell(run, |d| d.job_copies_mean, show_f)),
    );
    let spread = |d: &Dispatch| {
        d.ran_on
            .values()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" / ")
    };
    row(
        &mut md,
        "jobs run per worker",
        each(&|run| cell(run, spread, |s| s)),
    );
    if let Some(gd) = &g.dispatch {
        let ratios: Vec<String> = sys
            .iter()
            .skip(1)
            .filter_map(|(title, run)| {
                let kd = run.dispatch.as_ref()?;
                Some(format!(
                    "**{:.2}×** the rate of {title} (median job {:.2}× sooner after submission; {:.2} workers got a \
                     copy of each job on average, gpufed's {:.2})",
                    gd.rate() / kd.rate(),
                    kd.latency_p50_secs / gd.latency_p50_secs,
                    kd.workers_with_a_copy_mean,
                    gd.workers_with_a_copy_mean
                ))
            })
            .collect();
        if !ratios.is_empty() {
            let _ = writeln!(
                md,
                "\ngpufed got every job running at {}. {}",
                ratios.join(", and at "),
                throttling(r)
            );
        }
    }

    open_loop(&mut md, &r.gpufed, r.concurrency);

    let hold = sys
        .iter()
        .find_map(|(_, run)| run.lost.as_ref())
        .map_or(0.0, |l| l.hold_secs);
    let _ = writeln!(
        md,
        "\n### Lost worker: the network between the manager/hub and one worker is cut\n\n{} long jobs run; after they \
         have run for {} the worker running most of them is cut off (a TCP proxy in front of the hub for that member's \
         agent; in front of the worker's apiserver for Kueue's manager). The worker itself keeps running.\n",
        r.lost_jobs,
        secs(hold),
    );
    header(&mut md, &sys);
    let mut timeouts = vec![format!(
        "pool heartbeatTimeout {}",
        secs(r.heartbeat_timeout_secs)
    )];
    for _ in 1..sys.len() {
        timeouts.push(format!(
            "workerLostTimeout {}",
            secs(r.worker_lost_timeout_secs)
        ));
    }
    row(&mut md, "timeout", timeouts);
    let each_lost = |f: &dyn Fn(&SystemRun) -> String| sys.iter().map(|(_, run)| f(run)).collect();
    row(
        &mut md,
        "jobs on the cut-off worker",
        each_lost(&|run| lost_cell(run, |l| l.jobs_on_victim, |v| v.to_string())),
    );
    let rec = |l: &Lost| {
        (
            l.recovery_min_secs,
            l.recovery_p50_secs,
            l.recovery_max_secs,
        )
    };
    let show_rec =
        |(a, b, c): (f64, f64, f64)| format!("{} / {} / **{}**", secs(a), secs(b), secs(c));
    row(
        &mut md,
        "cut → running on another worker: first / median / last",
        each_lost(&|run| lost_cell(run, rec, show_rec)),
    );
    row(
        &mut md,
        "of them still running on the cut-off worker then (running twice)",
        each_lost(&|run| lost_cell(run, |l| l.still_running_on_victim, |v| v.to_string())),
    );
    row(
        &mut md,
        "workers that received a copy of such a job (mean)",
        each_lost(&|run| lost_cell(run, |l| l.workers_with_a_copy_mean, show_f)),
    );
    let default = r.default_worker_lost_timeout_secs;
    let _ = writeln!(
        md,
        "\nHow each side decides: gpufed's hub marks a member NotReady once its heartbeat Lease is older than the \
         pool's timeout, counted from the last heartbeat, and the agent cut off from the hub stops its Jobs before \
         that (fencing). MultiKueue's manager notices the dropped connection at once but keeps a job's admission \
         check Ready until `workerLostTimeout` has passed since the check's last transition (its dispatch), and only \
         looks again when the workload is next reconciled — a requeue every `workerLostTimeout` while it runs — so a \
         job waits anywhere from 0 to `workerLostTimeout` after the loss, depending on when the loss falls \
         (`pkg/controller/admissionchecks/multikueue/workload.go`); the time after that is the job being evicted on \
         the manager, admitted again and dispatched to the remaining workers. The cut-off worker is never told, so \
         its copy keeps running."
    );
    if (r.worker_lost_timeout_secs - default).abs() > f64::EPSILON {
        let _ = writeln!(
            md,
            "\nThis run set `workerLostTimeout` to gpufed's timeout for a like-for-like comparison. Kueue's default is \
             **{}** (`DefaultMultiKueueWorkerLostTimeout`, {}): with it, a job on a lost worker is requeued up to {} \
             after the loss, since MultiKueue re-checks a running job only every `workerLostTimeout`. That figure is \
             Kueue's configuration, not a measurement of this run.",
            secs(default),
            r.kueue_version,
            secs(default),
        );
    } else {
        let _ = writeln!(
            md,
            "\nThis run used Kueue's default `workerLostTimeout` ({}).",
            secs(default)
        );
    }

    let mut errors = vec![];
    for (sys_name, run) in &sys {
        if let Some(e) = &run.dispatch_error {
            errors.push(format!("* {sys_name}, dispatch: `{e}`"));
        }
        if let Some(e) = &run.lost_error {
            errors.push(format!("* {sys_name}, lost worker: `{e}`"));
        }
        if run.watch_errors > 0 {
            errors.push(format!(
                "* {sys_name}: the recording watches restarted {} times (a short-lived copy may be uncounted)",
                run.watch_errors
            ));
        }
    }
    if !errors.is_empty() {
        md.push_str("\nWhat did not work in this run:\n\n");
        md.push_str(&errors.join("\n"));
        md.push('\n');
    }
    if !r.gpufed_settings.is_empty() {
        md.push_str(
            "\n### gpufed in this run against an installation with the charts' defaults\n\n\
             The hub and the agents run as processes with the charts' RBAC and client rate, but with shorter intervals \
             for a quick run:\n\n",
        );
        crate::bench::report::settings_table(&mut md, &r.gpufed_settings);
    } else {
        md.push('\n');
    }
    let _ = writeln!(
        md,
        "Caveats: Kueue runs out of cluster without webhooks (no webhook configuration is installed), so jobs are \
         submitted already carrying what its Job webhook would set (`suspend: true`, `managedBy: \
         kueue.x-k8s.io/multikueue`); its reconcile concurrency is that of its shipped manifest. {} MultiKueue \
         reaches workers with a `system:masters` client certificate; gpufed's members reach the hub with the \
         charts' credentials. Both use the default dispatch behaviour (MultiKueue: AllAtOnce; gpufed: CheapestFit with \
         equal prices). kwok pods do no work: these are control-plane figures. See \
         docs/adr/0009-peer-benchmark.md.",
        throttling(r)
    );
    md
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::SystemRun;
    use super::*;

    fn dispatch(all: f64, copies: f64) -> Dispatch {
        Dispatch {
            jobs: 60,
            ingest_secs: 1.0,
            all_running_secs: all,
            latency_p50_secs: all / 2.0,
            latency_p95_secs: all,
            latency_max_secs: all,
            workers_with_a_copy_mean: copies,
            workers_with_a_copy_max: copies as usize,
            workload_copies_mean: copies,
            job_copies_mean: 1.0,
            ran_on: BTreeMap::from([("w0".into(), 60)]),
        }
    }

    fn open_loop_run() -> super::super::OpenLoop {
        let l = |p50: f64, p99: f64| crate::bench::latency::Latency {
            n: 250,
            p50_secs: p50,
            p99_secs: p99,
            max_secs: p99 + 0.1,
        };
        super::super::OpenLoop {
            rate: 50.0,
            jobs: 250,
            achieved_rate: 49.8,
            submit_to_placement: l(0.05, 0.2),
            placement_to_local_job: l(0.03, 0.12),
            local_job_to_running: l(0.4, 0.9),
            submit_to_running: l(0.5, 1.234),
        }
    }

    #[test]
    fn gpufeds_open_loop_split_is_shown_with_its_goals_or_its_error() {
        let md = markdown(&result(None));
        assert!(md.contains("### gpufed, open loop: 250 jobs submitted at 50 jobs/s"));
        assert!(md.contains("reached: 49.8 jobs/s"));
        assert!(
            md.contains("for every job.\n\n| stretch | jobs | p50 |"),
            "{md}"
        );
        assert!(
            !md.contains("  runs"),
            "no indentation leaks into the text: {md}"
        );
        assert!(md.contains("| Placement → local Job on the member (delivery) | 250 | 30 ms | 120 ms | 220 ms | ≤ 500 ms |"));
        assert!(md.contains("| submit → pod Running | 250 | 500 ms | 1234 ms | 1334 ms | ≤ 2 s |"));
        assert!(!md.contains("Not every goal is met"), "{md}");
        let mut slow = result(None);
        if let Some(o) = slow.gpufed.open.as_mut() {
            o.submit_to_placement.p99_secs = 3.0;
        }
        let md = markdown(&slow);
        // The dispatch phase got 60 jobs running in 6 s: 10 jobs/s, a fifth of the open loop's rate.
        assert!(
            md.contains("got jobs running at 10.0 jobs/s with 16 requests in flight; an open loop at 50 jobs/s asks 5.0× that"),
            "{md}"
        );
        let mut r = result(None);
        r.gpufed.open = None;
        r.gpufed.open_error = Some("every job running on a worker: timed out".into());
        let md = markdown(&r);
        assert!(
            md.contains("Not measured in this run: `every job running on a worker: timed out`")
        );
        assert!(!md.contains("| submit → pod Running |"));
    }

    fn result(kueue_lost: Option<Lost>) -> PeerResult {
        let lost = Lost {
            victim: "w0".into(),
            jobs_on_victim: 12,
            hold_secs: 10.0,
            recovery_min_secs: 20.0,
            recovery_p50_secs: 21.0,
            recovery_max_secs: 22.0,
            still_running_on_victim: 0,
            workers_with_a_copy_mean: 2.0,
        };
        PeerResult {
            kubernetes_version: "v1.33.13".into(),
            kueue_version: "v0.17.0".into(),
            workers: 3,
            nodes_per_worker: 4,
            jobs: 60,
            lost_jobs: 12,
            concurrency: 16,
            heartbeat_timeout_secs: 20.0,
            worker_lost_timeout_secs: 20.0,
            default_worker_lost_timeout_secs: 900.0,
            hold_secs: 10.0,
            gpufed: SystemRun {
                setup_secs: 30.0,
                dispatch: Some(dispatch(6.0, 1.0)),
                dispatch_error: None,
                lost: Some(lost),
                lost_error: None,
                open: Some(open_loop_run()),
                open_error: None,
                watch_errors: 0,
            },
            kueue: SystemRun {
                setup_secs: 20.0,
                dispatch: Some(dispatch(12.0, 3.0)),
                dispatch_error: None,
                lost_error: kueue_lost.is_none().then(|| "timed out".to_string()),
                lost: kueue_lost,
                open: None,
                open_error: None,
                watch_errors: 0,
            },
            kueue_matched: None,
            kueue_shipped_rate: (50.0, 100),
            kueue_matched_rate: None,
            gpufed_settings: vec![],
        }
    }

    #[test]
    fn the_section_states_the_ratio_from_the_two_runs() {
        let md = markdown(&result(None));
        assert!(md.starts_with("## Peer: Kueue MultiKueue"));
        assert!(md.contains("**2.00×**"), "{md}");
        assert!(md.contains(
            "| workers that received a copy of a job (mean) | 1.00 (most: 1) | 3.00 (most: 3) |"
        ));
    }

    #[test]
    fn a_failed_phase_shows_its_error_instead_of_figures() {
        let md = markdown(&result(None));
        assert!(
            md.contains("| jobs on the cut-off worker | 12 | failed (see below) |"),
            "{md}"
        );
        assert!(md.contains("* Kueue MultiKueue, lost worker: `timed out`"));
    }

    #[test]
    fn a_matched_kueue_run_gets_its_own_column_ratio_and_throttling_caveat() {
        let mut r = result(None);
        r.kueue_matched = Some(SystemRun {
            setup_secs: 20.0,
            dispatch: Some(dispatch(8.0, 3.0)),
            dispatch_error: None,
            lost: None,
            lost_error: Some("timed out".into()),
            open: None,
            open_error: None,
            watch_errors: 0,
        });
        r.kueue_matched_rate = Some((500.0, 1000));
        let md = markdown(&r);
        assert!(
            md.contains(
                "| | gpufed | Kueue MultiKueue, as shipped | Kueue MultiKueue, clients at 500/s (burst 1000) (patched) |\n|---|---|---|---|"
            ),
            "{md}"
        );
        assert!(
            md.contains("| workers that received a copy of a job (mean) | 1.00 (most: 1) | 3.00 (most: 3) | 3.00 (most: 3) |"),
            "{md}"
        );
        let ratios = md
            .lines()
            .find(|l| l.starts_with("gpufed got every job running at"))
            .unwrap();
        assert!(
            ratios.contains("**2.00×** the rate of Kueue MultiKueue, as shipped"),
            "{ratios}"
        );
        assert!(
            ratios.contains("**1.33×** the rate of Kueue MultiKueue, clients at 500/s"),
            "{ratios}"
        );
        assert!(
            ratios.contains("5 requests/s (burst 10) per API type and worker"),
            "{ratios}"
        );
        assert!(ratios.contains("multikueue-worker-rate.patch"), "{ratios}");
        assert!(md.contains(
            "* Kueue MultiKueue, clients at 500/s (burst 1000) (patched), lost worker: `timed out`"
        ));
    }

    #[test]
    fn a_run_from_before_the_matched_kueue_still_reads_and_shows_two_columns() {
        let mut v = serde_json::to_value(result(None)).unwrap();
        for k in [
            "kueue_matched",
            "kueue_shipped_rate",
            "kueue_matched_rate",
            "gpufed_settings",
        ] {
            v.as_object_mut().unwrap().remove(k);
        }
        let r: PeerResult = serde_json::from_value(v).unwrap();
        assert_eq!(
            r.kueue_shipped_rate,
            crate::peer::kueue::SHIPPED_CLIENT_RATE
        );
        let md = markdown(&r);
        assert!(
            md.contains("| | gpufed | Kueue MultiKueue |\n|---|---|---|"),
            "{md}"
        );
        assert!(!md.contains("patched column"));
    }

    #[test]
    fn the_default_timeout_is_labelled_as_configuration_not_measurement() {
        let md = markdown(&result(None));
        assert!(md.contains("Kueue's default is **900 s**"));
        assert!(md.contains("not a measurement of this run"));
    }
}
