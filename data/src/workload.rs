//! Waiting for the workload to exit, from a container of the same pod: the uploader of a job's
//! outputs runs beside the workload's containers with the pod's process namespace shared
//! (`shareProcessNamespace: true`), and uploads once no other process of the pod is left
//! (docs/adr/0029-job-data-on-s3.md, "Outputs").
//!
//! Watching `/proc` rather than waiting for the kubelet's SIGTERM (as a native sidecar would)
//! keeps the pod's short termination grace period: a sidecar gets only that grace to upload.

use std::path::Path;
use std::time::Duration;

use crate::s3::Error;

/// How many polls in a row must see no other process: a workload container that the kubelet is
/// still starting has no process yet for a moment.
const QUIET_POLLS: u32 = 3;

/// Waits until `proc` (the pod's `/proc`) shows no process but the sandbox's (PID 1) and this one,
/// polling every `poll`. Fails at once when this process is PID 1: the namespace is not shared, so
/// the workload cannot be seen.
pub async fn wait_for_exit(proc: &Path, poll: Duration) -> Result<(), Error> {
    let me = std::process::id();
    if me == 1 {
        return Err(Error::Usage(
            "--wait-for-workload needs the pod's shared process namespace (shareProcessNamespace: true): this process is PID 1".into(),
        ));
    }
    let mut quiet = 0;
    loop {
        if others(proc, me)? == 0 {
            quiet += 1;
            if quiet >= QUIET_POLLS {
                eprintln!("gpufed-data: the workload has exited: uploading");
                return Ok(());
            }
        } else {
            quiet = 0;
        }
        tokio::time::sleep(poll).await;
    }
}

/// Live processes in `proc` other than PID 1 and `me` (zombies do not count: their process has
/// exited; one that vanished while being read does not either).
pub fn others(proc: &Path, me: u32) -> Result<usize, Error> {
    let entries = std::fs::read_dir(proc).map_err(Error::io("read", proc))?;
    let mut n = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == 1 || pid == me {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if state(&stat).is_some_and(|s| s != 'Z' && s != 'X') {
            n += 1;
        }
    }
    Ok(n)
}

/// The state letter of a `/proc/<pid>/stat` line: the first field after the command, which is in
/// parentheses and may itself hold `)`.
fn state(stat: &str) -> Option<char> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.trim_start().chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(entries: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (pid, stat) in entries {
            std::fs::create_dir(dir.path().join(pid)).unwrap();
            std::fs::write(dir.path().join(pid).join("stat"), stat).unwrap();
        }
        std::fs::create_dir(dir.path().join("sys")).unwrap();
        dir
    }

    #[test]
    fn the_sandbox_itself_zombies_and_non_processes_are_not_the_workload() {
        let proc = fake_proc(&[
            ("1", "1 (sleep) S 0 1 1"),
            ("7", "7 (gpufed-data) S 0 7 7"),
            ("9", "9 (python (x)) Z 1 9 9"),
        ]);
        assert_eq!(others(proc.path(), 7).unwrap(), 0);
    }

    #[test]
    fn a_running_or_sleeping_process_is_the_workload() {
        let proc = fake_proc(&[
            ("1", "1 (sleep) S 0 1 1"),
            ("7", "7 (gpufed-data) S 0 7 7"),
            ("12", "12 (train) R 1 12 12"),
            ("13", "13 (a) b) S 1 13 13"),
        ]);
        assert_eq!(others(proc.path(), 7).unwrap(), 2);
    }

    #[test]
    fn the_state_is_read_after_a_command_holding_parentheses() {
        assert_eq!(state("5 (we(i)rd) D 1"), Some('D'));
        assert_eq!(state("garbage"), None);
    }
}
