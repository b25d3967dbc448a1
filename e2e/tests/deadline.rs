//! The backstop every e2e test runs under (`run_test`): a body that finishes passes, a body that
//! panics fails with its own message, and a body stuck where no tokio timeout can fire fails at the
//! hard deadline with the components it started killed. No clusters needed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

use gpufed_e2e::{Process, run_test};

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// The state letter of process `pid` in /proc (R, S, Z…), or None once it is gone.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S …": the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

#[test]
fn a_body_that_finishes_passes() {
    run_test(Duration::from_secs(30), || async {
        tokio::time::sleep(Duration::from_millis(10)).await;
    });
}

#[test]
fn a_body_that_panics_fails_with_its_own_message() {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        run_test(Duration::from_secs(30), || async {
            panic!("the placement never ran");
        })
    }));
    let text = panic_text(outcome.expect_err("the test must fail"));
    assert_eq!(text, "the placement never ran");
}

#[test]
fn a_stuck_body_fails_at_the_hard_deadline_and_its_components_are_killed() {
    let (pid_tx, pid_rx) = std::sync::mpsc::channel();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        run_test(Duration::from_secs(3), move || async move {
            let dir = tempfile::tempdir().unwrap();
            let sleeper = Process::spawn(
                "sleeper",
                Path::new("/bin/sleep"),
                &["600".to_string()],
                &[],
                &dir.path().join("sleeper.log"),
            )
            .unwrap();
            pid_tx.send(sleeper.pid().unwrap()).unwrap();
            // Blocks the thread the runtime drives this body on: a timeout in here could not
            // fire, and the runtime could not shut down.
            std::thread::sleep(Duration::from_secs(3600));
            drop(sleeper);
        })
    }));
    let text = panic_text(outcome.expect_err("a stuck test must fail"));
    assert!(text.contains("hard deadline of 3s"), "{text}");
    let pid = pid_rx.recv().unwrap();
    // Killed, and left unreaped (a zombie) by its stuck owner until the test process exits.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(proc_state(pid), Some('Z') | None) {
        assert!(
            Instant::now() < deadline,
            "the stuck test's component {pid} still runs: {:?}",
            proc_state(pid)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
