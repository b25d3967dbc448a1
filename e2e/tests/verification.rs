//! The hub verifies its members' GPUs on its own (ADR 0027), on real pods: in a pool with
//! `verification.required`, the hub sends each member a `gpu-probe challenge` job (the real
//! program, CPU backend, in a real container on a real node), reads the answer from the
//! termination message, checks it and writes the verdict on the MemberCluster. The honest member
//! passes and then runs a tenant job; a provider whose image answers wrongly
//! (`GPU_PROBE_CHALLENGE_CHEAT_WRONG` baked into its image's environment: the hub sends both the
//! same job) fails, with the reason on its status, a `Verified=False` condition, an Event and
//! evidence whose hash its status names, and gets no tenant job: a job that may only go there
//! waits with "failed GPU verification" and the verdict's message in its explanation. A provider
//! too slow for the pool's deadline (`GPU_PROBE_CHALLENGE_CHEAT_DELAY` in its image: it reports
//! whatever time it likes, but the hub's own clock runs from the Placement) fails
//! `DeadlineExceeded`. The honest member's image carries `NVIDIA_VISIBLE_DEVICES` with the UUIDs
//! its gpu-probe reports in `GpuNode` status (what the NVIDIA device plugin sets), so its answer
//! names them; an impostor whose answer is correct but names GPUs its probe does not report
//! (`CPU-0`, `CPU-1`) fails `UnknownGpu` (ADR 0027, "as built" 2026-12-05).
//!
//! Needs root and `make tools`, and `cargo build --bins` first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gpufed_crds::naming::{HUB_JOBS_NAMESPACE, LABEL_VERIFIES};
use gpufed_crds::{ComputeJob, GpuNode, JobPhase, MemberCluster, VerificationVerdict};
use gpufed_e2e::hubctl::wait_job;
use gpufed_e2e::image::Image;
use gpufed_e2e::joining::{MemberPlan, Pool, wait_ready_with_free};
use gpufed_e2e::wait::wait_until;
use gpufed_e2e::{NodeSpec, Tools, run_test};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};

const HARD_DEADLINE: Duration = Duration::from_secs(420);
const LONG: Duration = Duration::from_secs(180);
const NS: &str = "tenant";
const IMAGE: &str = "docker.io/gpufed/probe:e2e";

/// The GPU UUIDs gpu-probe reports on `node` of a member, once it has.
async fn probe_uuids(member: &Client, node: &str) -> Vec<String> {
    let nodes: Api<GpuNode> = Api::all(member.clone());
    wait_until(LONG, "gpu-probe to report the node's GPUs", || {
        let nodes = nodes.clone();
        async move {
            let g = nodes.get_opt(node).await.ok()??;
            let uuids: Vec<String> = g.status?.gpus.into_iter().map(|d| d.uuid).collect();
            (!uuids.is_empty()).then_some(uuids)
        }
    })
    .await
    .unwrap()
}

/// The member's verdict once the hub reached one.
async fn verdict(hub: &Client, name: &str) -> gpufed_crds::MemberVerification {
    let api: Api<MemberCluster> = Api::all(hub.clone());
    wait_until(LONG, &format!("a verdict on {name}"), || {
        let api = api.clone();
        async move { api.get(name).await.ok()?.status?.verification }
    })
    .await
    .unwrap()
}

async fn submit(hub: &Client, name: &str, exclude: &[&str]) {
    gpufed_e2e::joining::pool::apply(
        hub,
        "computejobs",
        &json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"replicas": 1, "gpusPerReplica": 1, "gpu": {"models": ["L4"]},
                         "maxPricePerGpuHour": "1.00", "maxDuration": "5m",
                         "excludeClusters": exclude,
                         "template": {"containers": [{"name": "main", "image": IMAGE,
                             "command": ["/usr/local/bin/gpu-probe", "--version"]}]}}}),
    )
    .await
    .unwrap();
}

#[test]
fn the_hub_verifies_an_honest_member_fails_a_wrong_and_a_slow_one_and_places_tenant_jobs_only_on_the_verified()
 {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let plan = |name: &str| {
            MemberPlan::new(name, vec![], "L4", "0.80").real_node(NodeSpec::new(
                &format!("{name}-node"),
                "L4-24GB",
                2,
                "eu-west",
            ))
        };
        let pool = Pool::join(
            &tools,
            "30s",
            &[
                plan("honest"),
                plan("wrong"),
                plan("slow"),
                plan("impostor"),
            ],
        )
        .await
        .unwrap();
        let hub = pool.hub.client();
        for m in ["honest", "wrong", "slow", "impostor"] {
            wait_ready_with_free(&hub, m, 2, LONG).await.unwrap();
        }
        pool.hub.create_namespace(NS).await.unwrap();
        let probe = tools.workspace_bin("gpu-probe").unwrap();
        let image = || {
            Image::new(IMAGE)
                .binary(&probe, "usr/local/bin/gpu-probe")
                .unwrap()
                .entrypoint(&["/usr/local/bin/gpu-probe"])
                .user("65534:65534")
        };
        // The honest member's pods get the UUIDs of their GPUs, as the device plugin gives them.
        let uuids = probe_uuids(&pool.member("honest").unwrap().client(), "honest-node").await;
        pool.member("honest")
            .unwrap()
            .real_node()
            .unwrap()
            .import(&image().env(&format!("NVIDIA_VISIBLE_DEVICES={}", uuids.join(","))))
            .unwrap();
        // The impostor computes correctly, but for GPUs its probe does not report.
        pool.member("impostor")
            .unwrap()
            .real_node()
            .unwrap()
            .import(&image())
            .unwrap();
        // The dishonest provider's image answers every challenge wrongly.
        pool.member("wrong")
            .unwrap()
            .real_node()
            .unwrap()
            .import(&image().env("GPU_PROBE_CHALLENGE_CHEAT_WRONG=true"))
            .unwrap();
        // This one takes 45 s per device, past the pool's 30 s deadline (an honest one answers in
        // about 5 s here).
        pool.member("slow")
            .unwrap()
            .real_node()
            .unwrap()
            .import(&image().env("GPU_PROBE_CHALLENGE_CHEAT_DELAY=45s"))
            .unwrap();

        // The admin turns verification on (the whole spec, as the same field manager).
        gpufed_e2e::joining::pool::apply(
            &hub,
            "gpupools",
            &json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "GpuPool",
                    "metadata": {"name": "default"},
                    "spec": {"heartbeatTimeout": "30s",
                             "verification": {"required": true, "image": IMAGE,
                                              "backend": "Cpu", "matrixSize": 64,
                                              "deadline": "30s"}}}),
        )
        .await
        .unwrap();
        // Submitted before any verdict: it may not go anywhere yet.
        submit(&hub, "train", &[]).await;

        let honest = verdict(&hub, "honest").await;
        assert_eq!(honest.verdict, VerificationVerdict::Passed, "{honest:?}");
        assert_eq!(honest.reason, "Verified");
        assert_eq!((honest.gpus, honest.model.as_str()), (2, "L4"));

        let wrong = verdict(&hub, "wrong").await;
        assert_eq!(wrong.verdict, VerificationVerdict::Failed, "{wrong:?}");
        assert_eq!(wrong.reason, "WrongResult", "{wrong:?}");
        assert!(
            wrong.message.contains("does not match the product"),
            "{wrong:?}"
        );
        let impostor = verdict(&hub, "impostor").await;
        assert_eq!(
            impostor.verdict,
            VerificationVerdict::Failed,
            "{impostor:?}"
        );
        assert_eq!(impostor.reason, "UnknownGpu", "{impostor:?}");
        assert!(
            impostor.message.contains("CPU-0, CPU-1")
                && impostor.message.contains("node impostor-node"),
            "{impostor:?}"
        );
        let slow = verdict(&hub, "slow").await;
        assert_eq!(slow.verdict, VerificationVerdict::Failed, "{slow:?}");
        assert_eq!(slow.reason, "DeadlineExceeded", "{slow:?}");
        assert!(slow.message.contains("30s"), "{slow:?}");
        let members: Api<MemberCluster> = Api::all(hub.clone());
        let m = members.get("wrong").await.unwrap();
        let cond = m
            .status
            .unwrap()
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Verified")
            .unwrap();
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("False", "WrongResult")
        );
        // The evidence is kept, and its hash is the one on the status.
        let cms: Api<ConfigMap> = Api::namespaced(hub.clone(), HUB_JOBS_NAMESPACE);
        let cm = cms.get(&wrong.evidence).await.unwrap();
        let data = cm.data.unwrap();
        let record = &data["evidence.json"];
        assert_eq!(
            hex::encode(Sha256::digest(record.as_bytes())),
            wrong.evidence_sha256
        );
        assert!(record.contains("\"checked\""), "{record}");
        // Judged challenges are removed; what the member saw was an ordinary job.
        let left: Api<ComputeJob> = Api::namespaced(hub.clone(), HUB_JOBS_NAMESPACE);
        wait_until(LONG, "judged challenges removed", || {
            let left = left.clone();
            async move {
                let l = left.list(&Default::default()).await.ok()?;
                l.items.is_empty().then_some(())
            }
        })
        .await
        .unwrap();
        // One challenge per member: the pool sets no `every` and no inventory changed, so the
        // hub sent nothing after the first verdicts (it used to send a second `Join` challenge
        // right after judging the first, from a member in hand that predated the verdict).
        for member in ["honest", "wrong", "slow", "impostor"] {
            let evidence = cms
                .list(&ListParams::default().labels(&format!("{LABEL_VERIFIES}={member}")))
                .await
                .unwrap();
            assert_eq!(
                evidence.items.len(),
                1,
                "{member} was judged more than once: {:?}",
                evidence
                    .items
                    .iter()
                    .map(|c| c.name_any())
                    .collect::<Vec<_>>()
            );
        }

        // The tenant job runs on the verified member only.
        let job = wait_job(&hub, NS, "train", LONG, "train to finish", |j| {
            j.status.as_ref().is_some_and(|s| s.phase.is_finished())
        })
        .await
        .unwrap();
        let st = job.status.unwrap();
        assert_eq!(st.phase, JobPhase::Succeeded, "{st:?}");
        assert!(st.attempts.iter().all(|a| a.cluster == "honest"), "{st:?}");

        // A job that may only go to the failed member waits, and says why.
        submit(&hub, "elsewhere", &["honest", "slow", "impostor"]).await;
        let job = wait_job(&hub, NS, "elsewhere", LONG, "a reason to wait", |j| {
            j.status
                .as_ref()
                .and_then(|s| s.explanation.as_deref())
                .is_some_and(|e| e.contains("failed GPU verification"))
        })
        .await
        .unwrap();
        let st = job.status.unwrap();
        let explanation = st.explanation.unwrap();
        assert!(
            explanation.contains("does not match the product"),
            "{explanation}"
        );
        assert_eq!(st.phase, JobPhase::Pending);
        assert!(st.attempts.is_empty(), "{:?}", st.attempts);

        // The verdicts and the tenant attempt count in each member's reputation (recounted every
        // 30 s from the evidence records and the jobs).
        for (member, passed, failed, succeeded) in
            [("honest", 1, 0, 1), ("wrong", 0, 1, 0), ("slow", 0, 1, 0)]
        {
            let members = members.clone();
            wait_until(LONG, &format!("{member}'s reputation"), || {
                let members = members.clone();
                async move {
                    let r = members.get(member).await.ok()?.status?.reputation?;
                    (r.challenges_passed == passed
                        && r.challenges_failed == failed
                        && r.attempts_succeeded == succeeded)
                        .then_some(())
                }
            })
            .await
            .unwrap();
        }
    });
}
