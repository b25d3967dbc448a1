//! `gpu-probe challenge`: the real binary's answer, checked by the library the hub uses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use gpu_probe::challenge::{Challenge, Refusal, profile_for, verify};

const NONCE: &str = "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5";

fn challenge_run(extra: &[&str], env: &[(&str, &str)]) -> (std::process::Output, String) {
    let dir = std::env::temp_dir().join(format!("gpu-probe-challenge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("answer-{}", extra.join("_").replace('/', "")));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gpu-probe"));
    cmd.args(["challenge", "--id", "ch-7", "--nonce", NONCE, "--n", "64"])
        .arg("--answer-file")
        .arg(&file)
        .args(extra)
        .env_remove("GPU_PROBE_CHALLENGE_CPU_DEVICES");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let written = std::fs::read_to_string(&file).unwrap_or_default();
    (out, written)
}

fn ch() -> Challenge {
    Challenge::new("ch-7", NONCE, 64).unwrap()
}

fn max_ms() -> u64 {
    profile_for("CPU", 256).unwrap().max_ms
}

#[test]
fn honest_answer_from_the_binary_verifies_and_is_also_the_termination_message() {
    let (out, written) = challenge_run(&["--cpu-devices", "2"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.trim(), written);
    let verdict = verify(&ch(), 2, max_ms(), &written, &[0, 7]);
    assert!(verdict.result.is_ok(), "{:?}", verdict.result);
}

#[test]
fn cheating_binary_is_caught() {
    let (out, written) = challenge_run(&[], &[("GPU_PROBE_CHALLENGE_CHEAT_WRONG", "true")]);
    assert!(out.status.success());
    assert!(matches!(
        verify(&ch(), 1, max_ms(), &written, &[4]).result,
        Err(Refusal::WrongResult { group: 4, .. })
    ));
    let (_, written) = challenge_run(&["--cpu-devices", "1"], &[]);
    assert!(matches!(
        verify(&ch(), 4, max_ms(), &written, &[4]).result,
        Err(Refusal::TooFewGpus {
            expected: 4,
            got: 1
        })
    ));
    let (_, written) = challenge_run(&[], &[("GPU_PROBE_CHALLENGE_CHEAT_DELAY", "300ms")]);
    assert!(matches!(
        verify(&ch(), 1, 250, &written, &[4]).result,
        Err(Refusal::TooSlow { .. })
    ));
}

#[test]
fn bad_challenge_arguments_exit_non_zero_with_the_reason() {
    let out = Command::new(env!("CARGO_BIN_EXE_gpu-probe"))
        .args([
            "challenge",
            "--id",
            "x",
            "--nonce",
            "00",
            "--n",
            "64",
            "--stdout-only",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonce must be 64 hex digits"));
    let out = Command::new(env!("CARGO_BIN_EXE_gpu-probe"))
        .args([
            "challenge",
            "--id",
            "x",
            "--nonce",
            NONCE,
            "--n",
            "63",
            "--stdout-only",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("multiple of 8"));
}
