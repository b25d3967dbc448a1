//! Automatic slashing on a failed challenge (ADR 0023, ADR 0027, issue 13 item 3), through the
//! real hub binary, a real apiserver and a real anvil with the real contracts. A tenant's job runs
//! and is paid on member `wrong`; then the pool admin turns on verification with
//! `slash.amount: 50`. The hub challenges both members by itself; the test stands in for their
//! agents (as every payment test does) and answers with the real `gpu-probe` CPU computation:
//! honestly for `honest`, wrongly for `wrong`. The hub then, with nobody acting: fails `wrong`
//! with `WrongResult`, proposes a slash on chain keyed by the sha256 of the evidence record its
//! status names, naming the harmed payer, executes it once the bond's appeal window has passed,
//! and the harmed payer's token balance rises by its share while the payer whose job ran on the
//! honest member gets nothing. The honest member is never slashed.
//!
//! Why not real pods: the real-pod path from a dishonest image's answer to a `WrongResult` verdict
//! is `tests/verification.rs`; what is new here is verdict → chain, which needs a settled tenant
//! attempt on the member before the verdict — something the payment harness (test-written
//! member status) does in seconds and deterministically.
//!
//! Needs `make tools` and `cargo build --bins` first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use alloy::primitives::U256;
use gpufed_crds::naming::HUB_JOBS_NAMESPACE;
use gpufed_crds::{GpuPool, MemberCluster, SlashPhase, TokenAmount, VerificationVerdict};
use gpufed_e2e::chain::{APPEAL_WINDOW_SECS, accounts};
use gpufed_e2e::hubctl::{start_hub, wait_job};
use gpufed_e2e::market::{self, settled};
use gpufed_e2e::run_test;
use gpufed_e2e::wait::wait_until;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use sha2::{Digest, Sha256};

const HARD_DEADLINE: Duration = Duration::from_secs(360);
const T: Duration = Duration::from_secs(90);

#[path = "support/challenges.rs"]
mod challenges;
use challenges::{answer_challenges, member, slash_executed, slash_proposed};

fn tokens(n: u64) -> U256 {
    gpufed_e2e::chain::tokens(n)
}

#[test]
fn a_wrong_challenge_answer_is_slashed_automatically_and_pays_the_tenant_it_harmed() {
    run_test(HARD_DEADLINE, || async {
        let mut m = market::market("auto-slash", 1000, json!({})).await.unwrap();
        m.hub.create_namespace(HUB_JOBS_NAMESPACE).await.unwrap();
        // The hub proposes slashes: the bond's admin makes its account an arbiter.
        m.chain
            .grant_arbiter(&m.contracts, accounts::HUB.1)
            .await
            .unwrap();
        let port = start_hub(&m.tools, &mut m.hub, "hub-0", &[]).unwrap();
        let c = m.hub.client();
        market::member(&c, "wrong", accounts::ALPHA.1, "H100", "3.60")
            .await
            .unwrap();
        market::member(&c, "honest", accounts::BETA.1, "L4", "1.00")
            .await
            .unwrap();
        for name in ["wrong", "honest"] {
            market::wait_condition(&c, name, "Schedulable", true)
                .await
                .unwrap();
        }

        // Team A's job runs and is paid on `wrong` (the only H100s); team B's on `honest`.
        market::submit(&c, "team-a", "train", "H100", 1, "3.60")
            .await
            .unwrap();
        market::submit(&c, "team-b", "eval", "L4", 1, "1.00")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        market::finish(&c, "wrong", "train", 1000).await.unwrap();
        market::finish(&c, "honest", "eval", 1000).await.unwrap();
        for (ns, job) in [("team-a", "train"), ("team-b", "eval")] {
            wait_job(&c, ns, job, T, "settled", settled).await.unwrap();
        }
        let before = [
            m.balance(accounts::PAYER_A.1).await.unwrap(),
            m.balance(accounts::PAYER_B.1).await.unwrap(),
            m.balance(accounts::TREASURY.1).await.unwrap(),
            m.balance(&m.contracts.bond.to_string()).await.unwrap(),
        ];

        // The admin turns verification on, with automatic slashing.
        Api::<GpuPool>::all(c.clone())
            .patch(
                "market",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"verification": {
                    "image": "docker.io/gpufed/probe:e2e", "backend": "Cpu",
                    "matrixSize": 64, "deadline": "60s", "slash": {"amount": "50"}}}})),
            )
            .await
            .unwrap();
        answer_challenges(&c, "honest", false).await;
        let challenges = answer_challenges(&c, "wrong", true).await;

        // The verdict, then the proposal, with nobody acting.
        let (slash, v) = slash_proposed(&c, "wrong").await;
        assert_eq!(v.reason, "WrongResult");
        assert!(challenges.contains(&slash.challenge), "{challenges:?}");
        assert_eq!(
            slash.evidence_sha256, v.evidence_sha256,
            "keyed by the verdict's evidence"
        );
        let cm = Api::<ConfigMap>::namespaced(c.clone(), HUB_JOBS_NAMESPACE)
            .get(&v.evidence)
            .await
            .unwrap();
        let data = cm.data.unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(data["evidence.json"].as_bytes())),
            slash.evidence_sha256,
            "the hash on chain is the sha256 of the evidence record anyone can read"
        );
        assert_eq!(slash.amount, Some("50".parse::<TokenAmount>().unwrap()));
        assert_eq!(slash.tenants.len(), 1, "{slash:?}");
        assert_eq!(
            slash.tenants[0].payer.as_str().to_lowercase(),
            accounts::PAYER_A.1.to_lowercase()
        );
        assert!(slash.propose_tx.is_some());
        let share = U256::from(slash.tenants[0].amount.atto());
        // A leader that died after its proposal was mined but before it wrote the status: the
        // next pass finds the slash on chain by its evidence hash and adopts it, never proposing
        // again (the contract would refuse the hash anyway).
        Api::<MemberCluster>::all(c.clone())
            .patch_status(
                "wrong",
                &PatchParams::default(),
                &Patch::<()>::Json(
                    serde_json::from_value(json!([{"op": "remove", "path": "/status/slash"}]))
                        .unwrap(),
                ),
            )
            .await
            .unwrap();
        let adopted = wait_until(T, "the proposed slash adopted again", || async {
            member(&c, "wrong")
                .await
                .status?
                .slash
                .filter(|s| s.propose_tx.is_none())
        })
        .await
        .unwrap();
        assert_eq!(adopted.evidence_sha256, slash.evidence_sha256);
        assert_eq!(adopted.phase, SlashPhase::Proposed, "{adopted:?}");
        assert_eq!(adopted.tenants, slash.tenants);
        // Frozen at once out of the bond; nobody paid inside the appeal window.
        assert_eq!(m.balance(accounts::PAYER_A.1).await.unwrap(), before[0]);
        // anvil mines only on transactions, and the contract judges the window by the latest
        // block's time: a block past the window stands in for a live chain's steady blocks. The
        // hub still waits for its own clock to pass the window.
        m.chain.advance_time(APPEAL_WINDOW_SECS).await.unwrap();

        let executed = slash_executed(&c, "wrong", Duration::from_secs(APPEAL_WINDOW_SECS)).await;
        assert_eq!(executed.evidence_sha256, v.evidence_sha256);
        assert!(executed.execute_tx.is_some());
        let after = [
            m.balance(accounts::PAYER_A.1).await.unwrap(),
            m.balance(accounts::PAYER_B.1).await.unwrap(),
            m.balance(accounts::TREASURY.1).await.unwrap(),
            m.balance(&m.contracts.bond.to_string()).await.unwrap(),
        ];
        assert_eq!(
            after[0] - before[0],
            share,
            "the harmed payer got its share"
        );
        assert_eq!(
            share,
            tokens(50),
            "the only harmed payer gets the whole slash"
        );
        assert_eq!(
            after[1], before[1],
            "a payer whose job ran elsewhere gets nothing"
        );
        assert_eq!(
            after[2] - before[2],
            tokens(50) - share,
            "the treasury got the rest"
        );
        assert_eq!(
            before[3] - after[3],
            tokens(50),
            "the bond paid exactly the slash"
        );

        // The honest member passed and was never slashed.
        let honest = member(&c, "honest").await.status.unwrap();
        assert_eq!(
            honest.verification.unwrap().verdict,
            VerificationVerdict::Passed
        );
        assert!(honest.slash.is_none(), "{:?}", honest.slash);
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        // Proposed twice: once sent, once adopted after the status was lost.
        for (state, want) in [("Proposed", 2.0), ("Executed", 1.0), ("NotSlashed", 0.0)] {
            let key = format!("gpufed_hub_slashes_total{{pool=\"market\",state=\"{state}\"}}");
            let got = gpufed_e2e::joining::scrape(addr, &key).await.unwrap_or(0.0);
            assert_eq!(got, want, "{key}");
        }
    });
}
