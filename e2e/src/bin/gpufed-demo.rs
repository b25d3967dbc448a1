//! `make demo` / `make demo-down`: starts the demo federation and leaves it running, or stops it.
//!
//! ```text
//! gpufed-demo up [--dir .demo] [--sim-duration SECS]
//! gpufed-demo down [--dir .demo]
//! ```

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use gpufed_e2e::demo::{DemoConfig, run};
use gpufed_e2e::process::{detached_processes, set_detached, set_work_dir, signal_group};
use gpufed_e2e::{Tools, init_test_logging};
use serde_json::json;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("gpufed-demo: {msg}");
    std::process::exit(1)
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

/// Stops every process group recorded in the state file and removes the demo directory.
fn down(dir: &Path) {
    let Ok(text) = std::fs::read_to_string(state_file(dir)) else {
        println!("no demo running (no {})", state_file(dir).display());
        return;
    };
    let state: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let pids: Vec<u32> = state["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["pid"].as_u64().and_then(|v| u32::try_from(v).ok()))
        .collect();
    for pid in &pids {
        signal_group(*pid, libc::SIGTERM);
    }
    std::thread::sleep(Duration::from_secs(2));
    for pid in &pids {
        signal_group(*pid, libc::SIGKILL);
    }
    // The real node's bridge and cgroups belong to the `up` process, which is gone.
    std::thread::sleep(Duration::from_millis(500));
    gpufed_e2e::realnode::sweep();
    let _ = std::fs::remove_dir_all(dir);
    println!(
        "stopped {} processes and removed {}",
        pids.len(),
        dir.display()
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(arg(&args, "--dir").unwrap_or_else(|| ".demo".into()));
    match args.first().map(String::as_str) {
        Some("down") => down(&dir),
        Some("up") => {
            if state_file(&dir).exists() {
                fail(format!(
                    "a demo is already running ({}); run `make demo-down` first",
                    state_file(&dir).display()
                ));
            }
            init_test_logging();
            let dir = std::path::absolute(&dir).unwrap_or_else(|e| fail(e));
            set_detached(true);
            set_work_dir(dir.join("clusters"));
            let secs: u64 = arg(&args, "--sim-duration")
                .map_or(Ok(20), |s| s.parse())
                .unwrap_or_else(|e| fail(e));
            let cfg = DemoConfig {
                dir: dir.clone(),
                sim_duration: Duration::from_secs(secs),
                step_timeout: Duration::from_secs(300),
            };
            let tools = Tools::locate().unwrap_or_else(|e| fail(e));
            let mut out = std::io::stdout();
            let result = run(&tools, &cfg, &mut out).await;
            // Every process started is recorded, so `make demo-down` stops them whatever happened.
            let processes: Vec<_> = detached_processes()
                .into_iter()
                .map(|(name, pid)| json!({"name": name, "pid": pid}))
                .collect();
            let report = result.as_ref().ok().map(|d| json!(d.report));
            let state = json!({"processes": processes, "report": report});
            std::fs::write(
                state_file(&dir),
                serde_json::to_string_pretty(&state).unwrap_or_default(),
            )
            .unwrap_or_else(|e| fail(e));
            match result {
                // Leave everything running: dropping the handles in detached mode kills nothing.
                Ok(demo) => drop(demo),
                Err(e) => fail(format!(
                    "{e}\nthe federation is left as it is for inspection (logs under {}); `make demo-down` stops it",
                    dir.join("clusters").display()
                )),
            }
        }
        _ => fail("usage: gpufed-demo up [--dir DIR] [--sim-duration SECS] | down [--dir DIR]"),
    }
}
