//! Result checks by replication (ADR 0034, issue 13 item 5), through the real hub binary, a real
//! apiserver and a real anvil with the real contracts. Three members of one pool, each paid into
//! its own wallet, all with H100s: beta is the cheapest, alpha next, gamma dearest, so the hub's
//! cheapest-fit choice is known. The pool verifies its members (the test answers the challenges
//! honestly, as the real `gpu-probe` CPU computation) and says `lostDisputes: Fail` with
//! `slash.amount: 50`.
//!
//! * team-b's job asks for a result check; it runs on beta, its replica (made by the hub) on alpha,
//!   and both write the same digest: the check ends `Agreed`, nobody is blamed.
//! * team-a's job runs on beta, which writes a wrong digest; the replica on alpha writes another,
//!   so the hub runs a referee on gamma, which agrees with alpha. With nobody acting, the hub then
//!   keeps the evidence record, fails beta's verification with `WrongTenantResult` keyed by the
//!   record's sha256, proposes a slash with that hash naming the payers whose attempts ran on beta
//!   (team-a, and team-b, as for any slash: ADR 0023), executes it after the bond's appeal
//!   window, and each payer's balance rises by exactly its share. alpha and gamma are never
//!   blamed.
//!
//! Why not real pods: the test stands in for the agents (as every payment test does), because
//! what is new is the hub's part: making the runs on the right members, comparing what they
//! reported, and turning a lost dispute into a slash. The path from a container's termination
//! message to a Placement's `exits` is the agent's, tested with real pods in `real_pods.rs`.
//!
//! Needs `make tools` and `cargo build --bins` first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use alloy::primitives::U256;
use gpufed_crds::naming::HUB_JOBS_NAMESPACE;
use gpufed_crds::{ComputeJob, GpuPool, ResultCheckPhase, ResultCheckStatus, VerificationVerdict};
use gpufed_e2e::chain::{APPEAL_WINDOW_SECS, accounts};
use gpufed_e2e::hubctl::{start_hub, wait_job};
use gpufed_e2e::market::{self, settled};
use gpufed_e2e::run_test;
use gpufed_e2e::wait::wait_until;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};

#[path = "support/challenges.rs"]
mod challenges;
use challenges::{answer_challenges, member, slash_executed, slash_proposed};

const HARD_DEADLINE: Duration = Duration::from_secs(420);
const T: Duration = Duration::from_secs(90);

async fn job(c: &Client, ns: &str, name: &str) -> ComputeJob {
    Api::<ComputeJob>::namespaced(c.clone(), ns)
        .get(name)
        .await
        .unwrap()
}

/// Waits until the check of `ns/name` reaches `phase`.
async fn check_reaches(
    c: &Client,
    ns: &str,
    name: &str,
    phase: ResultCheckPhase,
) -> (ComputeJob, ResultCheckStatus) {
    wait_until(T, &format!("the check of {name} {phase:?}"), || async {
        let j = job(c, ns, name).await;
        let st = j.status.as_ref()?.result_check.as_deref().cloned()?;
        assert!(
            st.phase == phase || !st.phase.is_final(),
            "the check of {name} ended {:?} ({:?}), not {phase:?}",
            st.phase,
            st.message
        );
        (st.phase == phase).then_some((j, st))
    })
    .await
    .unwrap()
}

fn condition(j: &ComputeJob) -> (String, String, String) {
    let conds = &j.status.as_ref().unwrap().conditions;
    let c = gpufed_crds::conditions::find(conds, "ResultVerified").unwrap();
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[test]
fn a_wrong_result_is_found_by_a_referee_and_its_member_slashed_for_the_tenant() {
    run_test(HARD_DEADLINE, || async {
        let mut m = market::market("result-check", 1000, json!({}))
            .await
            .unwrap();
        m.hub.create_namespace(HUB_JOBS_NAMESPACE).await.unwrap();
        m.chain
            .grant_arbiter(&m.contracts, accounts::HUB.1)
            .await
            .unwrap();
        start_hub(&m.tools, &mut m.hub, "hub-0", &[]).unwrap();
        let c = m.hub.client();
        for (name, wallet, price) in [
            ("beta", accounts::BETA.1, "2.00"),
            ("alpha", accounts::ALPHA.1, "3.00"),
            ("gamma", accounts::GAMMA.1, "3.50"),
        ] {
            market::member(&c, name, wallet, "H100", price)
                .await
                .unwrap();
        }
        for name in ["beta", "alpha", "gamma"] {
            market::wait_condition(&c, name, "Schedulable", true)
                .await
                .unwrap();
        }
        Api::<GpuPool>::all(c.clone())
            .patch(
                "market",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"verification": {
                    "image": "docker.io/gpufed/probe:e2e", "backend": "Cpu",
                    "matrixSize": 64, "deadline": "60s", "lostDisputes": "Fail",
                    "slash": {"amount": "50"}}}})),
            )
            .await
            .unwrap();
        for name in ["beta", "alpha", "gamma"] {
            answer_challenges(&c, name, false).await;
        }
        for name in ["beta", "alpha", "gamma"] {
            wait_until(T, &format!("{name} verified"), || async {
                let v = member(&c, name).await.status?.verification?;
                (v.verdict == VerificationVerdict::Passed).then_some(())
            })
            .await
            .unwrap();
        }

        // 1. Two members agree: the check ends after the replica.
        let check = json!({"resultCheck": {}});
        market::submit_with(&c, "team-b", "eval", "H100", 1, "5.00", check.clone())
            .await
            .unwrap();
        market::finish_with(&c, "beta", "eval", 100, Some("sha256:0a0b"))
            .await
            .unwrap();
        check_reaches(&c, "team-b", "eval", ResultCheckPhase::Replicating).await;
        market::finish_with(&c, "alpha", "eval-replica", 100, Some("sha256:0a0b"))
            .await
            .unwrap();
        let (eval, st) = check_reaches(&c, "team-b", "eval", ResultCheckPhase::Agreed).await;
        assert_eq!(st.runs.len(), 2, "{st:?}");
        assert_eq!(st.runs[1].job, "eval-replica");
        assert_eq!(st.runs[1].cluster.as_deref(), Some("alpha"));
        assert_eq!(condition(&eval).1, "ResultsAgree");
        let replica = job(&c, "team-b", "eval-replica").await;
        assert_eq!(
            replica.spec.exclude_clusters,
            Some(vec!["beta".to_string()]),
            "the replica avoids the member that ran the job"
        );
        assert!(
            replica.spec.result_check.is_none(),
            "a replica is not checked again"
        );
        assert_eq!(
            replica.owner_references()[0].uid,
            eval.metadata.uid.clone().unwrap()
        );

        // 2. beta's result is wrong: a referee on gamma sides with alpha.
        market::submit_with(&c, "team-a", "train", "H100", 1, "5.00", check)
            .await
            .unwrap();
        market::finish_with(&c, "beta", "train", 1000, Some("sha256:bad"))
            .await
            .unwrap();
        wait_job(&c, "team-a", "train", T, "settled", settled)
            .await
            .unwrap();
        market::finish_with(&c, "alpha", "train-replica", 100, Some("sha256:good"))
            .await
            .unwrap();
        check_reaches(&c, "team-a", "train", ResultCheckPhase::Refereeing).await;
        let referee = job(&c, "team-a", "train-referee").await;
        assert_eq!(
            referee.spec.exclude_clusters,
            Some(vec!["alpha".to_string(), "beta".to_string()])
        );
        market::finish_with(&c, "gamma", "train-referee", 100, Some("sha256:good"))
            .await
            .unwrap();
        let (train, st) = check_reaches(&c, "team-a", "train", ResultCheckPhase::Resolved).await;
        assert_eq!(st.loser.as_deref(), Some("beta"));
        let (status, reason, message) = condition(&train);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "ResultContradicted")
        );
        assert!(
            message.contains("gamma") && message.contains("train-replica"),
            "{message}"
        );
        // The evidence anyone can read, and its hash.
        let cm = Api::<ConfigMap>::namespaced(c.clone(), HUB_JOBS_NAMESPACE)
            .get(st.evidence.as_deref().unwrap())
            .await
            .unwrap();
        let data = cm.data.unwrap();
        let sha = hex::encode(Sha256::digest(data["evidence.json"].as_bytes()));
        assert_eq!(st.evidence_sha256.as_deref(), Some(sha.as_str()));
        let record: serde_json::Value = serde_json::from_str(&data["evidence.json"]).unwrap();
        assert_eq!(record["loser"], "beta");
        assert_eq!(
            record["runs"][0]["result"]["messages"][0]["message"],
            "sha256:bad"
        );
        assert_eq!(record["runs"][2]["cluster"], "gamma");

        // Balances once every run is paid (the escrow's fee goes to the treasury too).
        for run in ["train-replica", "train-referee"] {
            wait_job(&c, "team-a", run, T, "settled", settled)
                .await
                .unwrap();
        }
        let before = [
            m.balance(accounts::PAYER_A.1).await.unwrap(),
            m.balance(accounts::PAYER_B.1).await.unwrap(),
            m.balance(accounts::TREASURY.1).await.unwrap(),
            m.balance(&m.contracts.bond.to_string()).await.unwrap(),
        ];

        // beta fails verification on that evidence, and is slashed for team-a.
        let (slash, v) = slash_proposed(&c, "beta").await;
        assert_eq!(v.reason, "WrongTenantResult");
        assert_eq!(v.challenge, "team-a/train");
        assert_eq!(v.evidence_sha256, sha);
        assert_eq!(
            slash.evidence_sha256, sha,
            "the slash is keyed by the evidence"
        );
        // Compensated as for any slash (ADR 0023): every payer whose attempt ran on beta since
        // its last passed challenge, by what it paid there: team-a (the wrong result) and team-b
        // (whose result beta got right, but whose GPUs beta's bond answers for all the same).
        let share = |payer: &str| {
            slash
                .tenants
                .iter()
                .find(|t| t.payer.as_str().eq_ignore_ascii_case(payer))
                .map(|t| U256::from(t.amount.atto()))
                .unwrap_or_else(|| panic!("{payer} not compensated: {slash:?}"))
        };
        assert_eq!(slash.tenants.len(), 2, "{slash:?}");
        let (share_a, share_b) = (share(accounts::PAYER_A.1), share(accounts::PAYER_B.1));
        assert!(
            slash
                .message
                .contains("lost the dispute over job team-a/train"),
            "{}",
            slash.message
        );
        m.chain.advance_time(APPEAL_WINDOW_SECS).await.unwrap();
        slash_executed(&c, "beta", Duration::from_secs(APPEAL_WINDOW_SECS)).await;
        let after = [
            m.balance(accounts::PAYER_A.1).await.unwrap(),
            m.balance(accounts::PAYER_B.1).await.unwrap(),
            m.balance(accounts::TREASURY.1).await.unwrap(),
            m.balance(&m.contracts.bond.to_string()).await.unwrap(),
        ];
        let tokens = gpufed_e2e::chain::tokens;
        assert_eq!(after[0] - before[0], share_a, "team-a got its share");
        assert_eq!(after[1] - before[1], share_b, "team-b got its share");
        assert_eq!(
            after[2] - before[2],
            tokens(50) - share_a - share_b,
            "the treasury got the rounding"
        );
        assert_eq!(
            before[3] - after[3],
            tokens(50),
            "the bond paid exactly the slash"
        );
        // Nobody else was blamed.
        for name in ["alpha", "gamma"] {
            let st = member(&c, name).await.status.unwrap();
            assert_eq!(
                st.verification.unwrap().verdict,
                VerificationVerdict::Passed
            );
            assert!(st.slash.is_none(), "{name}: {:?}", st.slash);
        }
    });
}
