//! Answering the hub's challenges as a member's agent would, for the e2e tests that stand in for
//! agents (`auto_slashing.rs`, `result_check.rs`): the real `gpu-probe` CPU computation, honest or
//! wrong.

use std::time::Duration;

use gpu_probe::challenge::Challenge;
use gpu_probe::challenge::run::{Misbehaviour, run_cpu_as};
use gpufed_crds::naming::HUB_JOBS_NAMESPACE;
use gpufed_crds::{ComputeJob, PlacementStatus};
use gpufed_e2e::hubctl::{gpu_uuid, placements, report_placement};
use gpufed_e2e::wait::wait_until;
use kube::Client;
use kube::api::{Api, ListParams};
use serde_json::json;

const T: Duration = Duration::from_secs(90);

/// Waits for the hub's challenges of `member` and answers each as the member's agent would (the
/// real CPU computation, wrong when `cheat`); returns their names. Every open one is answered:
/// one left unanswered would later fail `DeadlineExceeded` and replace the verdict.
pub async fn answer_challenges(c: &Client, member: &str, cheat: bool) -> Vec<String> {
    let jobs: Api<ComputeJob> = Api::namespaced(c.clone(), HUB_JOBS_NAMESPACE);
    let label = format!("gpufed.io/verifies={member}");
    let open = wait_until(T, &format!("a challenge for {member}"), || {
        let jobs = jobs.clone();
        let lp = ListParams::default().labels(&label);
        async move { Some(jobs.list(&lp).await.ok()?.items).filter(|v| !v.is_empty()) }
    })
    .await
    .unwrap();
    let mut names = vec![];
    for job in open {
        names.push(answer(c, member, &job, cheat).await);
    }
    names
}

async fn answer(c: &Client, member: &str, job: &ComputeJob, cheat: bool) -> String {
    let name = job.metadata.name.clone().unwrap();
    let cmd = job.spec.template.containers[0].command.clone();
    let arg = |flag: &str| {
        let i = cmd.iter().position(|a| a == flag).unwrap();
        cmd[i + 1].clone()
    };
    let mut nonce = [0u8; 32];
    nonce.copy_from_slice(&hex::decode(arg("--nonce")).unwrap());
    let challenge = Challenge {
        id: arg("--id"),
        nonce,
        n: arg("--n").parse().unwrap(),
    };
    let devices: u32 = arg("--cpu-devices").parse().unwrap();
    let uid = gpufed_e2e::placements::job_uid(c, HUB_JOBS_NAMESPACE, &name)
        .await
        .unwrap();
    let p = wait_until(T, &format!("the placement of {name}"), || async {
        placements(c, member)
            .await
            .ok()?
            .into_iter()
            .find(|p| p.spec.job.uid == uid)
    })
    .await
    .unwrap();
    // Answered for the GPUs of the node the challenge was planned on, by the UUIDs the member
    // reports for them (the hub checks them against its inventory).
    let status = Api::<ComputeJob>::namespaced(c.clone(), HUB_JOBS_NAMESPACE)
        .get(&name)
        .await
        .unwrap()
        .status
        .unwrap();
    let attempt = status
        .attempts
        .iter()
        .find(|a| a.attempt == p.spec.attempt)
        .unwrap();
    let planned = &attempt.planned_nodes[0].node;
    let uuids: Vec<String> = (0..devices).map(|i| gpu_uuid(planned, i)).collect();
    let answer = run_cpu_as(
        &challenge,
        &uuids,
        Misbehaviour {
            wrong: cheat,
            ..Default::default()
        },
    );
    let message = serde_json::to_string(&answer).unwrap();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status: PlacementStatus = serde_json::from_value(json!({
        "phase": "Succeeded", "startTime": now, "finishTime": now, "gpuSeconds": 1,
        "exits": [{"replica": 0, "container": "main", "exitCode": 0, "reason": "Completed",
                   "message": message}]
    }))
    .unwrap();
    report_placement(c, &p, status).await.unwrap();
    name
}

/// The MemberCluster `name`.
pub async fn member(c: &Client, name: &str) -> gpufed_crds::MemberCluster {
    Api::<gpufed_crds::MemberCluster>::all(c.clone())
        .get(name)
        .await
        .unwrap()
}

/// Waits for a slash proposed on `name`; returns it and the failed verdict it rests on.
pub async fn slash_proposed(
    c: &Client,
    name: &str,
) -> (gpufed_crds::MemberSlash, gpufed_crds::MemberVerification) {
    let (slash, v) = wait_until(T, &format!("a slash proposed on {name}"), || async {
        let st = member(c, name).await.status?;
        st.slash
            .filter(|s| s.phase == gpufed_crds::SlashPhase::Proposed)
            .map(|s| (s, st.verification))
    })
    .await
    .unwrap();
    let v = v.unwrap();
    assert_eq!(v.verdict, gpufed_crds::VerificationVerdict::Failed);
    (slash, v)
}

/// Waits until the slash on `name` is executed (after the bond's appeal window, `window`); returns
/// it.
pub async fn slash_executed(c: &Client, name: &str, window: Duration) -> gpufed_crds::MemberSlash {
    wait_until(
        T + window,
        "the slash executed after the appeal window",
        || async {
            member(c, name)
                .await
                .status?
                .slash
                .filter(|s| s.phase == gpufed_crds::SlashPhase::Executed)
        },
    )
    .await
    .unwrap()
}
