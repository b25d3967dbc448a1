//! `make bench`'s driver: runs the e2e throughput measurement against real apiservers and writes
//! `docs/benchmarks.md` from it, criterion's estimates of the scheduler core and forge's settlement
//! gas figures — every figure from the same run, compared as ratios. `make bench` runs it from a
//! release build with `GPUFED_E2E_PROFILE=release`, so the hub it starts is a release build too.
//!
//! ```text
//! gpufed-bench throughput [--jobs N] [--open-jobs N] [--members 3,30] [--out FILE]
//!                         # the hub + fake agents against the same apiserver's ceiling (gpufed_e2e::bench)
//! gpufed-bench peer [--jobs N] [--lost-jobs N] [--open-jobs N] [--open-rate R] [--timeout SECS] [--kueue-worker-lost-timeout SECS|default]
//!                   [--only gpufed,kueue,kueue-matched] [--out FILE]
//!                   # gpufed vs Kueue MultiKueue as shipped and with its clients at gpufed's rate (gpufed_e2e::peer)
//! gpufed-bench scale [--members 1000] [--jobs 1000,10000] [--running-fraction 0.1] [--window SECS] [--out FILE]
//!                    # one hub, simulated agents of every member, growing job counts (gpufed_e2e::bench::scale)
//! gpufed-bench agent [--pods 10000] [--window SECS] [--out FILE]
//!                    # one member's agent with that many running pods: its peak memory (gpufed_e2e::bench::agent_scale)
//! gpufed-bench utilisation [--scale N] [--out FILE]
//!                    # the pool's GPU time allocated ÷ available on a mixed workload (gpufed_e2e::bench::utilisation)
//! gpufed-bench chaos [--profile short|long] [--seed N] [--out FILE] [--table docs/reliability.md]
//!                    # faults under a mixed workload, a recorded history, the checker's table (gpufed_e2e::chaos)
//! gpufed-bench chaos --check FILE   # checks a saved history again
//! gpufed-bench report --criterion DIR --throughput FILE --gas FILE [--peer FILE] [--scale FILE] [--agent FILE]
//!                     [--utilisation FILE] --out docs/benchmarks.md
//! gpufed-bench section utilisation|peer|scale|agent FILE
//!                    # one section of docs/benchmarks.md from a step run on its own
//! ```

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};

use std::time::Duration;

use gpufed_e2e::bench::agent_scale::{AgentScaleConfig, AgentScaleReport, agent_scale};
use gpufed_e2e::bench::scale::{ScaleConfig, ScaleReport, scale};
use gpufed_e2e::bench::settings::compare;
use gpufed_e2e::bench::utilisation::{UtilisationConfig, UtilisationReport, utilisation};
use gpufed_e2e::bench::{
    BinaryInfo, ThroughputConfig, ThroughputReport, bench_hub, checkout, throughput,
};
use gpufed_e2e::chaos::run::{Profile, run as chaos_run, seed_from_env};
use gpufed_e2e::chaos::{replace_run_table, run_section};
use gpufed_e2e::peer::{PeerConfig, PeerResult};
use gpufed_e2e::{Tools, init_test_logging};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("gpufed-bench: {msg}");
    std::process::exit(2)
}

/// `name`'s value parsed, or `default` when it is not given; exits on a bad value.
fn parsed<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T
where
    T::Err: std::fmt::Display,
{
    arg(args, name).map_or(default, |s| {
        s.parse().unwrap_or_else(|e| fail(format!("{name}: {e}")))
    })
}

/// `--out`'s path, or `target/bench/<default>`.
fn out_path(args: &[String], default: &str) -> PathBuf {
    PathBuf::from(arg(args, "--out").unwrap_or_else(|| format!("target/bench/{default}")))
}

/// What identifies the operator binary the harness starts, for a report.
fn operator_binary(tools: &Tools) -> BinaryInfo {
    let bin = tools
        .workspace_bin("gpufed-operator")
        .unwrap_or_else(|e| fail(e));
    BinaryInfo::of(&bin).unwrap_or_else(|e| fail(e))
}

/// Writes a run's result as pretty JSON to `out`, creating its folder.
fn write_json(out: &Path, value: &impl serde::Serialize) {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| fail(e));
    }
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|e| fail(e));
    std::fs::write(out, text).unwrap_or_else(|e| fail(e));
    eprintln!("wrote {}", out.display());
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("throughput") => {
            init_test_logging();
            let number = |name: &str, default: usize| -> usize { parsed(&args, name, default) };
            let jobs = number("--jobs", 1500);
            let open_jobs = number("--open-jobs", 200);
            let sizes: Vec<usize> = arg(&args, "--members")
                .unwrap_or_else(|| "3,30".into())
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse()
                        .unwrap_or_else(|e| fail(format!("--members: {e}")))
                })
                .collect();
            let out = out_path(&args, "throughput.json");
            let tools = Tools::locate().unwrap_or_else(|e| fail(e));
            let hub_binary = operator_binary(&tools);
            let hub_settings = bench_hub(&tools).unwrap_or_else(|e| fail(e));
            let mut report = ThroughputReport {
                hub_binary,
                checkout: checkout(tools.root()),
                settings: compare(tools.root(), &hub_settings).unwrap_or_else(|e| fail(e)),
                runs: vec![],
            };
            eprintln!(
                "throughput: hub {} (modified {}, sha256 {}…)",
                report.hub_binary.path, report.hub_binary.modified, report.hub_binary.sha256
            );
            for members in sizes {
                let cfg = ThroughputConfig::new(members, jobs, open_jobs);
                eprintln!(
                    "throughput: {members} members × {} nodes, {jobs} jobs closed-loop, {open_jobs} per open-loop rate …",
                    cfg.nodes_per_member
                );
                let r = throughput(&tools, &hub_settings, &cfg)
                    .await
                    .unwrap_or_else(|e| fail(e));
                let ceilings: Vec<String> = r
                    .ceilings
                    .iter()
                    .map(|c| format!("{:.1}/s at {} in flight", c.rate(), c.in_flight))
                    .collect();
                eprintln!(
                    "  created {:.1}/s, placed {:.1}/s (in {:.2}s; p50 {:.2}s, p99 {:.2}s); ceiling {}",
                    r.ingest_rate(),
                    r.placed_rate(),
                    r.placed_secs,
                    r.latency.p50_secs,
                    r.latency.p99_secs,
                    ceilings.join(", ")
                );
                for o in &r.open_loop {
                    eprintln!(
                        "  open loop {:.0}/s: {} jobs submitted in {:.2}s, placed after {:.2}s; p50 {:.2}s, p99 {:.2}s",
                        o.rate,
                        o.jobs,
                        o.submit_secs,
                        o.placed_secs,
                        o.latency.p50_secs,
                        o.latency.p99_secs
                    );
                }
                report.runs.push(r);
            }
            write_json(&out, &report);
        }
        Some("scale") => {
            init_test_logging();
            let members: usize = parsed(&args, "--members", 1000);
            let mut sizes: Vec<usize> = arg(&args, "--jobs")
                .unwrap_or_else(|| "1000,10000".into())
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse()
                        .unwrap_or_else(|e| fail(format!("--jobs: {e}")))
                })
                .collect();
            sizes.sort_unstable();
            sizes.dedup();
            let running_fraction: f64 = parsed(&args, "--running-fraction", 0.1);
            if !(0.0..=1.0).contains(&running_fraction) {
                fail("--running-fraction must be between 0 and 1");
            }
            let window: u64 = parsed(&args, "--window", 60);
            let out = out_path(&args, "scale.json");
            let tools = Tools::locate().unwrap_or_else(|e| fail(e));
            let hub_binary = operator_binary(&tools);
            let hub_settings = bench_hub(&tools).unwrap_or_else(|e| fail(e));
            eprintln!(
                "scale: hub {} (modified {}, sha256 {}…); {members} members, jobs {sizes:?}, {:.0} % running, {window} s windows …",
                hub_binary.path,
                hub_binary.modified,
                hub_binary.sha256,
                running_fraction * 100.0
            );
            let cfg = ScaleConfig {
                members,
                sizes,
                running_fraction,
                window: Duration::from_secs(window),
            };
            let r = scale(
                &tools,
                &hub_settings,
                &cfg,
                hub_binary,
                checkout(tools.root()),
                |so_far| write_json(&out, so_far),
            )
            .await
            .unwrap_or_else(|e| fail(e));
            eprintln!("  members Schedulable after {:.0} s", r.setup_secs);
            for s in &r.sizes {
                eprintln!(
                    "  {} jobs ({} running): created {:.1}/s, settled after {:.0} s; hub VmHWM {:.1} MiB; steady pass {:?}; {} writes/s ({} the simulator's)",
                    s.jobs,
                    s.running,
                    s.ingest_rate(),
                    s.settled_secs,
                    s.hub_vm_hwm_kib as f64 / 1024.0,
                    s.pass_steady.and_then(|p| p.mean_secs),
                    s.writes.iter().map(|c| c.total).sum::<u64>() as f64 / s.window_secs,
                    s.sim.writes().iter().map(|c| c.total).sum::<u64>() as f64 / s.window_secs,
                );
            }
            if let Some(why) = &r.stopped {
                eprintln!("  stopped {why}");
            }
            write_json(&out, &r);
        }
        Some("peer") => {
            init_test_logging();
            let number = |name: &str, default: u64| -> u64 { parsed(&args, name, default) };
            let to_usize = |v: u64| usize::try_from(v).unwrap_or_else(|e| fail(e));
            let mut cfg = PeerConfig::new(to_usize(number("--jobs", 80)));
            cfg.lost_jobs = to_usize(number("--lost-jobs", 12));
            cfg.open_jobs = to_usize(number("--open-jobs", 250));
            cfg.open_rate = parsed(&args, "--open-rate", 50.0);
            if cfg.open_rate <= 0.0 {
                fail("--open-rate must be above 0");
            }
            let timeout = Duration::from_secs(number("--timeout", 20));
            cfg.heartbeat_timeout = timeout;
            cfg.hold = timeout / 2;
            cfg.worker_lost_timeout = match arg(&args, "--kueue-worker-lost-timeout").as_deref() {
                None => Some(timeout),
                Some("default") => None,
                Some(s) => {
                    Some(Duration::from_secs(s.parse().unwrap_or_else(|e| {
                        fail(format!("--kueue-worker-lost-timeout: {e}"))
                    })))
                }
            };
            if let Some(only) = arg(&args, "--only") {
                let wanted: Vec<&str> = only.split(',').map(str::trim).collect();
                for w in &wanted {
                    if !["gpufed", "kueue", "kueue-matched"].contains(w) {
                        fail(format!(
                            "--only takes gpufed, kueue, kueue-matched (comma-separated), not {w}"
                        ));
                    }
                }
                cfg.run_gpufed = wanted.contains(&"gpufed");
                cfg.run_kueue = wanted.contains(&"kueue");
                cfg.run_kueue_matched = wanted.contains(&"kueue-matched");
            }
            let out = out_path(&args, "peer.json");
            let tools = Tools::locate().unwrap_or_else(|e| fail(e));
            eprintln!(
                "peer: {} workers × {} nodes, {} jobs, {} lost-phase jobs, timeouts {:?}/{:?} …",
                cfg.workers,
                cfg.nodes_per_worker(),
                cfg.jobs,
                cfg.lost_jobs,
                cfg.heartbeat_timeout,
                cfg.effective_worker_lost_timeout()
            );
            let r = gpufed_e2e::peer::run(&tools, &cfg)
                .await
                .unwrap_or_else(|e| fail(e));
            let mut runs = vec![("gpufed", &r.gpufed), ("kueue", &r.kueue)];
            if let Some(m) = &r.kueue_matched {
                runs.push(("kueue-matched", m));
            }
            for (name, run) in runs {
                eprintln!("  {name}: set-up {:.1}s", run.setup_secs);
                match &run.dispatch {
                    Some(d) => eprintln!(
                        "  {name}: dispatch {:.1} jobs/s (all running in {:.2}s), {:.2} workers got a copy per job",
                        d.rate(),
                        d.all_running_secs,
                        d.workers_with_a_copy_mean
                    ),
                    None => eprintln!(
                        "  {name}: dispatch failed: {}",
                        run.dispatch_error.as_deref().unwrap_or("")
                    ),
                }
                match &run.lost {
                    Some(l) => eprintln!(
                        "  {name}: lost worker {} ({} jobs): running elsewhere after {:.1}s (last), {} still running there",
                        l.victim, l.jobs_on_victim, l.recovery_max_secs, l.still_running_on_victim
                    ),
                    None => eprintln!(
                        "  {name}: lost worker failed: {}",
                        run.lost_error.as_deref().unwrap_or("")
                    ),
                }
                match (&run.open, &run.open_error) {
                    (Some(o), _) => eprintln!(
                        "  {name}: open loop {:.1} jobs/s, p99 submit→Placement {:.2}s, Placement→local Job {:.2}s, local Job→Running {:.2}s, submit→Running {:.2}s",
                        o.achieved_rate,
                        o.submit_to_placement.p99_secs,
                        o.placement_to_local_job.p99_secs,
                        o.local_job_to_running.p99_secs,
                        o.submit_to_running.p99_secs
                    ),
                    (None, Some(e)) => eprintln!("  {name}: open loop failed: {e}"),
                    (None, None) => {}
                }
            }
            write_json(&out, &r);
        }
        Some("agent") => {
            init_test_logging();
            let number = |name: &str, default: u64| -> u64 { parsed(&args, name, default) };
            let cfg = AgentScaleConfig {
                pods: usize::try_from(number("--pods", 10_000)).unwrap_or_else(|e| fail(e)),
                window: Duration::from_secs(number("--window", 90)),
            };
            let out = out_path(&args, "agent.json");
            let tools = Tools::locate().unwrap_or_else(|e| fail(e));
            let binary = operator_binary(&tools);
            eprintln!(
                "agent: {} pods on {} nodes, {} s window, agent {} (sha256 {}…) …",
                cfg.pods,
                cfg.nodes(),
                cfg.window.as_secs(),
                binary.path,
                binary.sha256
            );
            let r = agent_scale(&tools, &cfg, binary, checkout(tools.root()))
                .await
                .unwrap_or_else(|e| fail(e));
            eprintln!(
                "  agent VmHWM joined {:.1} MiB, running {:?} MiB, end {:?} MiB; {} pods running{}",
                r.agent_joined.vm_hwm_kib as f64 / 1024.0,
                r.agent_running.map(|p| p.vm_hwm_kib as f64 / 1024.0),
                r.agent_end.map(|p| p.vm_hwm_kib as f64 / 1024.0),
                r.running,
                r.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
            write_json(&out, &r);
        }
        Some("utilisation") => {
            init_test_logging();
            let scale: usize = parsed(&args, "--scale", 1);
            let out = out_path(&args, "utilisation.json");
            let tools = Tools::locate().unwrap_or_else(|e| fail(e));
            let binary = operator_binary(&tools);
            eprintln!(
                "utilisation: {scale} × the mixed workload, hub {} (sha256 {}…) …",
                binary.path, binary.sha256
            );
            let r = utilisation(
                &tools,
                &UtilisationConfig { scale },
                binary,
                checkout(tools.root()),
            )
            .await
            .unwrap_or_else(|e| fail(e));
            match r.figures() {
                Some(f) => eprintln!(
                    "  makespan {:.0} s (lower bound {:.0} s, ÷ {:.2}); allocated ÷ available {:.2}, running ÷ available {:.2}; hub's figure {:?}",
                    f.makespan_secs,
                    f.lower_bound_secs,
                    f.makespan_efficiency(),
                    f.allocated_share(),
                    f.running_share(),
                    r.hub_share()
                ),
                None => eprintln!("  the workload did not end: {:?}", r.error),
            }
            write_json(&out, &r);
        }
        Some("chaos") => {
            init_test_logging();
            if let Some(file) = arg(&args, "--check") {
                // Re-check a saved history.
                let text = std::fs::read_to_string(&file).unwrap_or_else(|e| fail(e));
                let history: gpufed_e2e::chaos::History =
                    serde_json::from_str(&text).unwrap_or_else(|e| fail(e));
                let report = gpufed_e2e::chaos::check(&history);
                print!("{report}");
                std::process::exit(if report.ok() { 0 } else { 1 });
            }
            let profile =
                Profile::named(&arg(&args, "--profile").unwrap_or_else(|| "short".into()))
                    .unwrap_or_else(|e| fail(e));
            let seed = match arg(&args, "--seed") {
                Some(s) => s.parse().unwrap_or_else(|e| fail(format!("--seed: {e}"))),
                None => seed_from_env().unwrap_or_else(|e| fail(e)),
            };
            let out = out_path(&args, "chaos-history.json");
            eprintln!(
                "chaos: profile {} ({} s of faults), seed {seed} (replay: --seed {seed})",
                profile.name,
                profile.window.as_secs()
            );
            let tools = Tools::locate().unwrap_or_else(|e| fail(e));
            let dir = tempfile::tempdir().unwrap_or_else(|e| fail(e));
            let t0 = std::time::Instant::now();
            let (history, report) = chaos_run(&tools, &profile, seed, dir.path())
                .await
                .unwrap_or_else(|e| fail(format!("{e} (seed {seed})")));
            write_json(&out, &history);
            print!("{report}");
            eprintln!("re-check: gpufed-bench chaos --check {}", out.display());
            if let Some(doc) = arg(&args, "--table") {
                let doc = PathBuf::from(doc);
                let text = std::fs::read_to_string(&doc).unwrap_or_else(|e| fail(e));
                let section = run_section(&history, &report, t0.elapsed());
                let text = replace_run_table(&text, &section).unwrap_or_else(|e| fail(e));
                std::fs::write(&doc, text).unwrap_or_else(|e| fail(e));
                eprintln!("wrote the run's table into {}", doc.display());
            }
            if !report.ok() {
                std::process::exit(1);
            }
        }
        Some("report") => {
            let criterion =
                PathBuf::from(arg(&args, "--criterion").unwrap_or_else(|| fail("--criterion DIR")));
            let tp = PathBuf::from(
                arg(&args, "--throughput").unwrap_or_else(|| fail("--throughput FILE")),
            );
            let gas = PathBuf::from(arg(&args, "--gas").unwrap_or_else(|| fail("--gas FILE")));
            let peer = arg(&args, "--peer").map(PathBuf::from);
            let scale = arg(&args, "--scale").map(PathBuf::from);
            let agent = arg(&args, "--agent").map(PathBuf::from);
            let utilisation = arg(&args, "--utilisation").map(PathBuf::from);
            let out = PathBuf::from(arg(&args, "--out").unwrap_or_else(|| fail("--out FILE")));
            let mut text = report(&criterion, &tp, &gas).unwrap_or_else(|e| fail(e));
            if let Some(peer) = peer {
                text.push('\n');
                text.push_str(&peer_section(&peer).unwrap_or_else(|e| fail(e)));
            }
            if let Some(scale) = scale {
                text.push('\n');
                text.push_str(&scale_section(&scale).unwrap_or_else(|e| fail(e)));
            }
            if let Some(agent) = agent {
                text.push('\n');
                text.push_str(&agent_section(&agent).unwrap_or_else(|e| fail(e)));
            }
            if let Some(utilisation) = utilisation {
                text.push('\n');
                text.push_str(&utilisation_section(&utilisation).unwrap_or_else(|e| fail(e)));
            }
            std::fs::write(&out, text).unwrap_or_else(|e| fail(e));
            println!("wrote {}", out.display());
        }
        Some("section") => {
            // One section of docs/benchmarks.md from its step's JSON, for a step run on its own.
            let (Some(step), Some(file)) = (args.get(1), args.get(2)) else {
                fail("usage: gpufed-bench section utilisation|peer|scale|agent FILE")
            };
            let file = PathBuf::from(file);
            let text = match step.as_str() {
                "utilisation" => utilisation_section(&file),
                "peer" => peer_section(&file),
                "scale" => scale_section(&file),
                "agent" => agent_section(&file),
                other => Err(format!(
                    "no section {other:?}: utilisation, peer, scale or agent"
                )),
            };
            print!("{}", text.unwrap_or_else(|e| fail(e)));
        }
        _ => fail(
            "usage: gpufed-bench throughput [--jobs N] [--open-jobs N] [--members 3,30] [--out FILE] | peer [--jobs N] [--lost-jobs N] [--open-jobs N] [--open-rate R] [--timeout SECS] \
             [--kueue-worker-lost-timeout SECS|default] [--only gpufed,kueue,kueue-matched] [--out FILE] | scale [--members N] \
             [--jobs N[,N…]] [--running-fraction F] [--window SECS] [--out FILE] | agent [--pods N] [--window SECS] \
             [--out FILE] | utilisation [--scale N] [--out FILE] | chaos [--profile short|long] [--seed N] [--out FILE] [--table docs/reliability.md] | chaos --check FILE \
             | report --criterion DIR --throughput FILE --gas FILE [--peer FILE] [--scale FILE] [--agent FILE] \
             [--utilisation FILE] --out FILE | section utilisation|peer|scale|agent FILE",
        ),
    }
}

/// The "Peer: Kueue MultiKueue" section from the JSON `gpufed-bench peer` wrote.
fn peer_section(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let r: PeerResult =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(gpufed_e2e::peer::report::markdown(&r))
}

/// The "Scale" section from the JSON `gpufed-bench scale` wrote.
fn scale_section(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let r: ScaleReport =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(gpufed_e2e::bench::scale::report::markdown(&r))
}

/// The "Member agent" section from the JSON `gpufed-bench agent` wrote.
fn agent_section(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let r: AgentScaleReport =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(gpufed_e2e::bench::agent_scale::markdown(&r))
}

fn utilisation_section(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let r: UtilisationReport =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(gpufed_e2e::bench::utilisation::markdown(&r))
}

/// Mean nanoseconds per iteration and elements per iteration of one criterion benchmark.
fn criterion_estimate(dir: &Path, id: &str) -> Result<(f64, u64), String> {
    let base = dir.join(id).join("new");
    let read = |f: &str| -> Result<serde_json::Value, String> {
        let text = std::fs::read_to_string(base.join(f))
            .map_err(|e| format!("{}: {e}", base.join(f).display()))?;
        serde_json::from_str(&text).map_err(|e| e.to_string())
    };
    let mean = read("estimates.json")?["mean"]["point_estimate"]
        .as_f64()
        .ok_or("no mean in estimates.json")?;
    let elements = read("benchmark.json")?["throughput"]["Elements"]
        .as_u64()
        .unwrap_or(1);
    Ok((mean, elements))
}

/// `(label, gas per job)` lines from the forge gas test output.
fn gas_lines(text: &str) -> Vec<(String, u64)> {
    let mut out = vec![];
    let mut label = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with("settleBatch (") {
            label = line.to_string();
        }
        if let Some(rest) = line.strip_prefix("execution gas per job:")
            && let Ok(v) = rest.trim().parse()
        {
            out.push((label.clone(), v));
        }
    }
    out
}

/// The scheduler core's rows (criterion ids, pool and batch sizes) and how one decision's cost
/// grows with 10× the clusters. `schedule_batch` returns every decision at once; `place_each`
/// drops each one once made, which is what lets 100,000 jobs on 10,000 clusters fit in memory.
const SCHEDULER_ROWS: [(&str, &str, u64); 4] = [
    ("schedule_batch/clusters/100", "`schedule_batch`", 100),
    ("schedule_batch/clusters/1000", "`schedule_batch`", 1000),
    ("place_each/clusters/1000", "`place` per job", 1000),
    ("place_each/clusters/10000", "`place` per job", 10000),
];

/// The "Scheduler core" section from criterion's estimates under `criterion`.
fn scheduler_section(criterion: &Path) -> Result<String, String> {
    let mut md = String::from(
        "## Scheduler core (criterion, one thread)\n\n| pool | batch | decided with | time per batch | decisions/s |\n|---|---|---|---|---|\n",
    );
    let mut per_decision = vec![];
    for (id, how, clusters) in SCHEDULER_ROWS {
        let (ns, elements) = criterion_estimate(criterion, id)?;
        let rate = elements as f64 / (ns / 1e9);
        per_decision.push(ns / elements as f64);
        md.push_str(&format!(
            "| {clusters} clusters | {elements} jobs | {how} | {:.2} ms | {:.0} |\n",
            ns / 1e6,
            rate
        ));
    }
    if let [small, mid_batch, mid_each, large] = per_decision[..] {
        md.push_str(&format!(
            "\nOne decision costs {:.1}× as much with 10× the clusters from 100 to 1,000 (`schedule_batch`) and \
             {:.1}× from 1,000 to 10,000 (`place` per job). Goal: at least 20,000 decisions/s with 10,000 clusters \
             and 100,000 pending jobs.\n\n",
            mid_batch / small,
            large / mid_each
        ));
    }
    Ok(md)
}

fn report(criterion: &Path, tp: &Path, gas: &Path) -> Result<String, String> {
    let mut md = String::from(
        "# Benchmarks\n\n\
         Generated by `make bench` (`e2e/src/bin/gpufed-bench.rs`); each section's figures come from one run \
         on one machine (`make bench` runs them all in one go; a section that names a checkout measured that one), and \
         comparisons are ratios within that run. Tests never assert on time.\n\n",
    );
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    md.push_str(&format!("Machine: {cores} cores, {machine}.\n\n"));

    md.push_str(&scheduler_section(criterion)?);

    let throughput: ThroughputReport = serde_json::from_str(
        &std::fs::read_to_string(tp).map_err(|e| format!("{}: {e}", tp.display()))?,
    )
    .map_err(|e| format!("{}: {e}", tp.display()))?;
    md.push_str(&gpufed_e2e::bench::report::markdown(&throughput));

    let gas_text = std::fs::read_to_string(gas).map_err(|e| format!("{}: {e}", gas.display()))?;
    md.push_str("## Settlement gas (forge, deterministic)\n\n| scenario | execution gas per settled job |\n|---|---|\n");
    for (label, g) in gas_lines(&gas_text) {
        md.push_str(&format!("| {label} | {g} |\n"));
    }
    md.push_str("\nGoal: at most 15,000 gas per job in a batch of 100 (`contracts/test/JobEscrowGas.t.sol` asserts it).\n");
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheduler_section_lists_every_size_and_both_scaling_ratios() {
        let dir = std::env::temp_dir().join(format!("gpufed-bench-test-{}", std::process::id()));
        for (id, ns, jobs) in [
            ("schedule_batch/clusters/100", 1e6, 1000),
            ("schedule_batch/clusters/1000", 30e6, 10000),
            ("place_each/clusters/1000", 30e6, 10000),
            ("place_each/clusters/10000", 1200e6, 100000),
        ] {
            let base = dir.join(id).join("new");
            std::fs::create_dir_all(&base).unwrap();
            std::fs::write(
                base.join("estimates.json"),
                format!(r#"{{"mean":{{"point_estimate":{ns}}}}}"#),
            )
            .unwrap();
            std::fs::write(
                base.join("benchmark.json"),
                format!(r#"{{"throughput":{{"Elements":{jobs}}}}}"#),
            )
            .unwrap();
        }
        let md = scheduler_section(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            md.contains("| 10000 clusters | 100000 jobs | `place` per job | 1200.00 ms | 83333 |"),
            "{md}"
        );
        assert!(md.contains("| 100 clusters | 1000 jobs | `schedule_batch` | 1.00 ms | 1000000 |"));
        assert!(
            md.contains("costs 3.0× as much with 10× the clusters from 100 to 1,000"),
            "{md}"
        );
        assert!(md.contains("and 4.0× from 1,000 to 10,000"), "{md}");
    }

    #[test]
    fn gas_lines_are_read_from_forge_console_output() {
        let text = "  settleBatch (cold start) 100 3 4\n  ^ jobs, payers, providers\n  execution gas per job:     14012\n";
        assert_eq!(
            gas_lines(text),
            [("settleBatch (cold start) 100 3 4".to_string(), 14012)]
        );
    }
}
