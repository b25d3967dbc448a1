//! The `gpu-probe` binary's `--print --once` mode: one JSON snapshot, no apiserver.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use serde_json::Value;

fn probe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gpu-probe"))
        .args(args)
        .env_remove("NODE_NAME")
        .env_remove("KUBECONFIG")
        .output()
        .unwrap()
}

#[test]
fn sim_print_once_prints_one_json_snapshot_of_the_profile() {
    let out = probe(&[
        "--backend",
        "sim",
        "--sim-profile",
        "L40S-48GB",
        "--sim-gpus",
        "2",
        "--seed",
        "9",
        "--node-name",
        "kwok-1",
        "--print",
        "--once",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let snap: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(snap["nodeName"], "kwok-1");
    assert_eq!(snap["backend"], "Sim");
    assert_eq!(snap["labels"]["gpufed.io/gpu-model"], "L40S");
    assert_eq!(snap["labels"]["gpufed.io/gpu-memory-mib"], "46068");
    assert_eq!(snap["status"]["gpuCount"], 2);
    assert_eq!(snap["status"]["healthyGpus"], 2);
    assert_eq!(snap["status"]["gpus"][1]["memoryTotalMiB"], 46068);
    assert_eq!(snap["readings"][0]["slowdownTemperatureCelsius"], 90);
}

#[test]
fn the_same_seed_prints_the_same_gpus_in_two_runs() {
    let args = [
        "--backend",
        "sim",
        "--sim-profile",
        "T4-16GB",
        "--seed",
        "3",
        "--node-name",
        "n",
        "--print",
        "--once",
    ];
    let uuids = |out: std::process::Output| {
        let snap: Value = serde_json::from_slice(&out.stdout).unwrap();
        snap["status"]["gpus"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["uuid"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let a = uuids(probe(&args));
    assert_eq!(a.len(), 4);
    assert_eq!(a, uuids(probe(&args)));
}

#[test]
fn nvml_print_once_prints_a_snapshot_or_explains_what_is_missing() {
    let out = probe(&["--backend", "nvml", "--print", "--once"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        let snap: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(snap["backend"], "Nvml");
        assert!(snap["status"]["gpuCount"].as_u64().unwrap() >= 1);
        println!("{}", String::from_utf8_lossy(&out.stdout));
    } else {
        println!("no GPU here: {stderr}");
        assert!(stderr.contains("libnvidia-ml"), "{stderr}");
        assert!(stderr.contains("--backend sim"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn nvml_cannot_serve_all_nodes() {
    let out = probe(&[
        "--backend",
        "nvml",
        "--all-nodes",
        "--kubeconfig",
        "/nonexistent",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--all-nodes needs --backend sim"),
        "{stderr}"
    );
}
