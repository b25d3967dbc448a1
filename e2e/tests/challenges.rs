//! Challenges on real pods (docs/adr/0022-challenges.md): the real `gpu-probe challenge` (CPU
//! backend) runs as an ordinary ComputeJob in a real container on a member whose node is real, its
//! answer travels as the termination message through the agent into the job's status, and the
//! hub's check (`gpu_probe::challenge::verify`) passes the honest member (two GPUs, an answer
//! longer than 256 bytes) and refuses a wrong answer, an answer for fewer GPUs than the attempt was
//! given and a replay. The node has 4 GPUs and the three jobs ask for 5: one waits for another.
//!
//! The hub does not send challenges by itself yet: this test submits them as jobs and runs the
//! check the hub will run.
//!
//! Needs root and `make tools`, and `cargo build --bins` first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gpu_probe::challenge::{Challenge, Refusal, profile_for, verify};
use gpufed_crds::{ComputeJob, JobPhase};
use gpufed_e2e::hubctl::wait_job;
use gpufed_e2e::image::Image;
use gpufed_e2e::joining::{MemberPlan, Pool, wait_ready_with_free};
use gpufed_e2e::{NodeSpec, Tools, run_test};
use kube::Client;
use serde_json::json;

const HARD_DEADLINE: Duration = Duration::from_secs(300);
const LONG: Duration = Duration::from_secs(120);
const NS: &str = "challenges";
const IMAGE: &str = "docker.io/gpufed/probe:e2e";
const NONCE: &str = "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";
const N: usize = 64;

/// Submits the challenge `id` as a ComputeJob of `gpus` GPUs running `gpu-probe challenge`.
async fn submit(hub: &Client, id: &str, gpus: u32, extra_args: &[&str], env: serde_json::Value) {
    let mut command = vec![
        "/usr/local/bin/gpu-probe".to_string(),
        "challenge".into(),
        "--backend".into(),
        "cpu".into(),
        "--id".into(),
        id.into(),
        "--nonce".into(),
        NONCE.into(),
        "--n".into(),
        N.to_string(),
    ];
    command.extend(extra_args.iter().map(|s| s.to_string()));
    gpufed_e2e::joining::pool::apply(
        hub,
        "computejobs",
        &json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                "metadata": {"name": id, "namespace": NS},
                "spec": {"replicas": 1, "gpusPerReplica": gpus, "gpu": {"models": ["L4"]},
                         "maxPricePerGpuHour": "1.00", "maxDuration": "5m",
                         "retry": {"maxAttempts": 1},
                         "template": {"containers": [{"name": "main", "image": IMAGE,
                                                      "command": command, "env": env}]}}}),
    )
    .await
    .unwrap();
}

/// The termination message of challenge job `id` once it finished.
async fn answer(hub: &Client, id: &str) -> String {
    let job: ComputeJob = wait_job(hub, NS, id, LONG, &format!("{id} to finish"), |j| {
        j.status.as_ref().is_some_and(|s| s.phase.is_finished())
    })
    .await
    .unwrap();
    let st = job.status.unwrap();
    assert_eq!(st.phase, JobPhase::Succeeded, "{id}: {st:?}");
    st.attempts[0].exits[0]
        .message
        .clone()
        .unwrap_or_else(|| panic!("{id} has no termination message: {:?}", st.attempts[0]))
}

#[test]
fn real_challenge_answers_verify_when_honest_and_are_refused_when_wrong_or_short_of_gpus() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let pool = Pool::join(
            &tools,
            "30s",
            &[
                MemberPlan::new("metal", vec![], "L4", "0.80").real_node(NodeSpec::new(
                    "metal-node",
                    "L4-24GB",
                    4,
                    "eu-west",
                )),
            ],
        )
        .await
        .unwrap();
        let hub = pool.hub.client();
        wait_ready_with_free(&hub, "metal", 4, LONG).await.unwrap();
        pool.hub.create_namespace(NS).await.unwrap();
        // The member runs the real gpu-probe binary, from an image built here.
        pool.member("metal")
            .unwrap()
            .real_node()
            .unwrap()
            .import(
                &Image::new(IMAGE)
                    .binary(
                        &tools.workspace_bin("gpu-probe").unwrap(),
                        "usr/local/bin/gpu-probe",
                    )
                    .unwrap()
                    .entrypoint(&["/usr/local/bin/gpu-probe"])
                    .user("65534:65534"),
            )
            .unwrap();

        // Two devices: an answer of about 330 bytes, more than the 256 the agent kept before
        // the first exit's message could hold 4096.
        submit(&hub, "honest", 2, &["--cpu-devices", "2"], json!([])).await;
        submit(
            &hub,
            "wrong",
            1,
            &[],
            json!([{"name": "GPU_PROBE_CHALLENGE_CHEAT_WRONG", "value": "true"}]),
        )
        .await;
        // Given 2 GPUs, it answers for the one device it has.
        submit(&hub, "short", 2, &["--cpu-devices", "1"], json!([])).await;

        let max_ms = profile_for("CPU", 256).unwrap().max_ms;
        let all = [0, 1, 2, 3, 4, 5, 6, 7];
        let check = |id: &str, gpus: usize, raw: &str| {
            verify(
                &Challenge::new(id, NONCE, N).unwrap(),
                gpus,
                max_ms,
                raw,
                &all,
            )
        };

        let raw = answer(&hub, "honest").await;
        assert!(raw.len() > 256, "{raw}");
        let verdict = check("honest", 2, &raw);
        assert!(verdict.result.is_ok(), "{:?} for {raw}", verdict.result);
        assert_eq!(verdict.evidence.checked.len(), 16);

        let raw = answer(&hub, "wrong").await;
        let verdict = check("wrong", 1, &raw);
        assert!(
            matches!(verdict.result, Err(Refusal::WrongResult { .. })),
            "{:?}",
            verdict.result
        );
        assert!(
            verdict
                .evidence
                .outcome
                .contains("does not match the product")
        );

        let raw = answer(&hub, "short").await;
        assert_eq!(
            check("short", 2, &raw).result,
            Err(Refusal::TooFewGpus {
                expected: 2,
                got: 1
            })
        );
        // The honest answer, replayed for another challenge, is refused.
        let honest = answer(&hub, "honest").await;
        assert!(matches!(
            check("short", 2, &honest).result,
            Err(Refusal::WrongChallenge { .. })
        ));
    });
}
