//! The short chaos profile (docs/reliability.md): a paying pool of two members with real agents,
//! two hub replicas and anvil, a mixed workload under random faults (kill -9 of agents, member
//! apiservers, gpu-probe and the hub leader; SIGSTOP of the leader past its lease; agent–hub
//! partitions; anvil stopped), a history recorded from every side, and the checker's invariants.
//! The seed is drawn per run and printed; `GPUFED_CHAOS_SEED=N` replays one.
//!
//! Needs `make tools` and `cargo build --bins` first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gpufed_e2e::chaos::history::Event;
use gpufed_e2e::chaos::run::{Profile, run, seed_from_env};
use gpufed_e2e::{Tools, run_test};

/// Start-up (about a minute on a loaded machine), 90 s of faults, up to 120 s of quiescence.
const HARD_DEADLINE: Duration = Duration::from_secs(420);

#[test]
fn the_short_chaos_profile_keeps_every_invariant() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let seed = seed_from_env().unwrap();
        eprintln!("chaos: seed {seed} (replay with GPUFED_CHAOS_SEED={seed})");
        let dir = tempfile::tempdir().unwrap();
        let (history, report) = run(&tools, &Profile::short(), seed, dir.path())
            .await
            .unwrap_or_else(|e| panic!("chaos run failed: {e} (GPUFED_CHAOS_SEED={seed})"));
        eprint!("{report}");
        if !report.ok() {
            let path = std::env::temp_dir().join(format!("gpufed-chaos-{seed}.json"));
            std::fs::write(&path, serde_json::to_string_pretty(&history).unwrap()).unwrap();
            panic!(
                "chaos invariants violated; history in {} (re-check: gpufed-bench chaos --check {}); \
                 replay with GPUFED_CHAOS_SEED={seed}\n{report}",
                path.display(),
                path.display()
            );
        }
        // The run did something worth checking: faults, and jobs and attempts to check.
        let faults = history
            .events
            .iter()
            .filter(|e| matches!(e, Event::Fault { healed: false, .. }))
            .count();
        assert!(faults > 0, "no fault was injected:\n{report}");
        for row in &report.rows[..2] {
            assert!(
                row.checked > 0,
                "{} checked nothing:\n{report}",
                row.invariant
            );
        }
    });
}
