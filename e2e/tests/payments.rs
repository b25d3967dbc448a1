//! Payment against a real anvil and a real apiserver, with the hub as a process and the test
//! standing in for the member agents: a completed job moves exactly `used × price − fee` to the
//! provider and refunds the rest; an underfunded payer waits in Funding; a hub killed between
//! sending a settlement and recording it settles exactly once after restart; settlements finish
//! after the RPC comes back; an unbonded member is skipped with the reason shown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use alloy::primitives::U256;
use gpufed_crds::{JobPhase, SettlementState, TokenAmount};
use gpufed_e2e::chain::{accounts, tokens};
use gpufed_e2e::hubctl::{placements, start_hub, wait_job};
use gpufed_e2e::market::{self, STEP as T, settled, settlement};
use gpufed_e2e::{run_test, wait_until};
use kube::Client;
use kube::api::Api;

/// The most a test here may take, start-up included: past it the test fails and its
/// components are killed (see [`run_test`]).
const HARD_DEADLINE: Duration = Duration::from_secs(360);

async fn market(name: &str, deposit: u64) -> market::Market {
    market::market(name, deposit, serde_json::json!({}))
        .await
        .unwrap()
}

async fn member(c: &Client, name: &str, wallet: &str, model: &str, price: &str) {
    market::member(c, name, wallet, model, price).await.unwrap();
}

async fn wait_condition(c: &Client, member: &str, cond: &str, want: bool) {
    market::wait_condition(c, member, cond, want).await.unwrap();
}

async fn submit(c: &Client, ns: &str, name: &str, model: &str, gpus: u32, max_price: &str) {
    market::submit(c, ns, name, model, gpus, max_price)
        .await
        .unwrap();
}

async fn finish(c: &Client, cluster: &str, gpu_seconds: u64) {
    market::finish(c, cluster, "", gpu_seconds).await.unwrap();
}

/// A token amount in the ERC-20's base units.
fn atto(a: TokenAmount) -> U256 {
    U256::from(a.atto())
}

#[test]
fn a_completed_job_pays_usage_times_price_minus_fee_and_refunds_the_rest() {
    run_test(HARD_DEADLINE, || async {
        let mut m = market("pay-complete", 1000).await;
        start_hub(&m.tools, &mut m.hub, "hub-0", &[]).unwrap();
        let c = m.hub.client();
        member(&c, "alpha", accounts::ALPHA.1, "H100", "3.60").await;
        wait_condition(&c, "alpha", "Schedulable", true).await;
        let provider_before = m.balance(accounts::ALPHA.1).await.unwrap();
        let treasury_before = m.balance(accounts::TREASURY.1).await.unwrap();

        submit(&c, "team-a", "train", "H100", 1, "3.60").await;
        // No lock, no run: the Placement appears only after the escrow holds 3.60 × 1 GPU × 1 h.
        let j = wait_job(&c, "team-a", "train", T, "funds locked", |j| {
            settlement(j, 1).is_some_and(|s| s.state == SettlementState::Locked)
        })
        .await
        .unwrap();
        let s = settlement(&j, 1).unwrap();
        assert_eq!(s.locked.unwrap().to_string(), "3.60");
        assert!(s.lock_tx.is_some());
        assert_eq!(m.lock_state(&s.job_id).await.unwrap(), 1);
        assert_eq!(
            m.deposit(accounts::PAYER_A.1).await.unwrap(),
            tokens(1000) - tokens(36) / U256::from(10)
        );

        // The member reports far more than one GPU can have used since the placement: the hub records
        // at most what was possible, and pays exactly that.
        tokio::time::sleep(Duration::from_secs(3)).await;
        finish(&c, "alpha", 1000).await;
        let j = wait_job(&c, "team-a", "train", T, "settled", settled)
            .await
            .unwrap();
        let s = settlement(&j, 1).unwrap();
        let st = j.status.unwrap();
        assert_eq!(st.phase, JobPhase::Succeeded);
        let used = st.attempts[0].gpu_seconds;
        assert!(
            (3..1000).contains(&used),
            "usage capped by the time since placement: {used}"
        );
        let price: TokenAmount = "3.60".parse().unwrap();
        let paid = price.cost_of_gpu_seconds(used).unwrap();
        let fee = TokenAmount::from_atto(paid.atto() * 500 / 10_000);
        let locked: TokenAmount = "3.60".parse().unwrap();
        assert_eq!(s.paid, Some(paid));
        assert_eq!(s.refunded, Some(locked.checked_sub(paid).unwrap()));
        assert!(s.settle_tx.is_some());
        assert_eq!(st.cost, Some(paid));
        let provider_after = m.balance(accounts::ALPHA.1).await.unwrap();
        let treasury_after = m.balance(accounts::TREASURY.1).await.unwrap();
        assert_eq!(
            provider_after - provider_before,
            atto(paid.checked_sub(fee).unwrap())
        );
        assert_eq!(treasury_after - treasury_before, atto(fee));
        assert_eq!(
            m.deposit(accounts::PAYER_A.1).await.unwrap(),
            tokens(1000) - atto(paid)
        );
        assert_eq!(m.lock_state(&s.job_id).await.unwrap(), 2);
    });
}

#[test]
fn an_underfunded_payer_waits_in_funding_until_it_deposits() {
    run_test(HARD_DEADLINE, || async {
        let mut m = market("pay-funding", 1).await;
        start_hub(&m.tools, &mut m.hub, "hub-0", &[]).unwrap();
        let c = m.hub.client();
        member(&c, "alpha", accounts::ALPHA.1, "H100", "3.60").await;
        wait_condition(&c, "alpha", "Schedulable", true).await;

        submit(&c, "team-b", "big", "H100", 8, "3.60").await;
        let j = wait_job(&c, "team-b", "big", T, "Funding", |j| {
            j.status
                .as_ref()
                .is_some_and(|s| s.phase == JobPhase::Funding)
        })
        .await
        .unwrap();
        let e = j.status.as_ref().unwrap().explanation.clone().unwrap();
        assert!(e.contains("has 1.00 deposited"), "{e}");
        assert!(e.contains("locks 28.80"), "{e}");
        assert!(
            placements(&c, "alpha").await.unwrap().is_empty(),
            "no lock, no run"
        );

        m.chain
            .deposit(&m.contracts, accounts::PAYER_B.0, tokens(50))
            .await
            .unwrap();
        let j = wait_job(&c, "team-b", "big", T, "placed after the deposit", |j| {
            settlement(j, 1).is_some_and(|s| s.state == SettlementState::Locked)
        })
        .await
        .unwrap();
        assert_eq!(
            j.status.unwrap().attempt,
            1,
            "the wait did not use up attempts"
        );
        wait_until(T, "the placement", || async {
            placements(&c, "alpha").await.ok()?.into_iter().next()
        })
        .await
        .unwrap();
    });
}

#[test]
fn a_hub_killed_between_sending_a_settlement_and_recording_it_settles_exactly_once() {
    run_test(HARD_DEADLINE, || async {
        let mut m = market("pay-crash", 1000).await;
        start_hub(&m.tools, &mut m.hub, "hub-0", &[]).unwrap();
        let c = m.hub.client();
        member(&c, "alpha", accounts::ALPHA.1, "H100", "3.60").await;
        wait_condition(&c, "alpha", "Schedulable", true).await;
        let provider_before = m.balance(accounts::ALPHA.1).await.unwrap();
        submit(&c, "team-a", "crashy", "H100", 1, "3.60").await;
        let j = wait_job(&c, "team-a", "crashy", T, "locked", |j| {
            settlement(j, 1).is_some_and(|s| s.state == SettlementState::Locked)
        })
        .await
        .unwrap();
        let job_id = settlement(&j, 1).unwrap().job_id;
        tokio::time::sleep(Duration::from_secs(2)).await;
        finish(&c, "alpha", 3600).await;
        wait_job(&c, "team-a", "crashy", T, "settling", |j| {
            settlement(j, 1).is_some_and(|s| s.state == SettlementState::Settling)
        })
        .await
        .unwrap();
        // Freeze the hub's apiserver: the hub can still reach the chain but can no longer record.
        m.hub
            .process_mut("kube-apiserver")
            .unwrap()
            .signal(libc::SIGSTOP);
        wait_until(T, "the chain to show the lock settled", || async {
            (m.lock_state(&job_id).await.ok()? == 2).then_some(())
        })
        .await
        .unwrap();
        m.hub.process_mut("hub-0").unwrap().kill();
        m.hub
            .process_mut("kube-apiserver")
            .unwrap()
            .signal(libc::SIGCONT);

        // A new hub finds the status behind the chain and records the settlement from the chain.
        start_hub(&m.tools, &mut m.hub, "hub-1", &[]).unwrap();
        let j = wait_job(&c, "team-a", "crashy", T, "recorded as settled", settled)
            .await
            .unwrap();
        let s = settlement(&j, 1).unwrap();
        let used = j.status.as_ref().unwrap().attempts[0].gpu_seconds;
        let paid = "3.60"
            .parse::<TokenAmount>()
            .unwrap()
            .cost_of_gpu_seconds(used)
            .unwrap();
        assert_eq!(s.paid, Some(paid));
        let fee = TokenAmount::from_atto(paid.atto() * 500 / 10_000);
        let provider_after = m.balance(accounts::ALPHA.1).await.unwrap();
        // The provider's share, exactly once.
        assert_eq!(
            provider_after - provider_before,
            atto(paid.checked_sub(fee).unwrap())
        );
    });
}

#[test]
fn settlements_complete_after_the_rpc_comes_back() {
    run_test(HARD_DEADLINE, || async {
        let mut m = market("pay-outage", 1000).await;
        start_hub(&m.tools, &mut m.hub, "hub-0", &[]).unwrap();
        let c = m.hub.client();
        member(&c, "alpha", accounts::ALPHA.1, "H100", "3.60").await;
        wait_condition(&c, "alpha", "Schedulable", true).await;
        submit(&c, "team-a", "patient", "H100", 1, "3.60").await;
        wait_job(&c, "team-a", "patient", T, "locked", |j| {
            settlement(j, 1).is_some_and(|s| s.state == SettlementState::Locked)
        })
        .await
        .unwrap();

        tokio::time::sleep(Duration::from_secs(2)).await;
        m.chain.stop();
        finish(&c, "alpha", 1800).await;
        let j = wait_job(
            &c,
            "team-a",
            "patient",
            T,
            "the outage shown on the job",
            |j| {
                j.status.as_ref().is_some_and(|s| {
                    s.phase == JobPhase::Succeeded
                        && gpufed_crds::conditions::find(&s.conditions, "Funded")
                            .is_some_and(|c| c.reason == "ChainUnavailable")
                })
            },
        )
        .await
        .unwrap();
        assert!(!settled(&j));
        // The RPC stays down for 30 s, then returns with its state.
        tokio::time::sleep(Duration::from_secs(30)).await;
        m.chain.resume().await.unwrap();
        let j = wait_job(
            &c,
            "team-a",
            "patient",
            Duration::from_secs(120),
            "settled after the outage",
            settled,
        )
        .await
        .unwrap();
        let used = j.status.as_ref().unwrap().attempts[0].gpu_seconds;
        assert!(used > 0);
        let paid = "3.60"
            .parse::<TokenAmount>()
            .unwrap()
            .cost_of_gpu_seconds(used)
            .unwrap();
        assert_eq!(settlement(&j, 1).unwrap().paid, Some(paid));
    });
}

#[test]
fn a_member_without_enough_bond_is_skipped_with_the_reason_shown() {
    run_test(HARD_DEADLINE, || async {
        let mut m = market("pay-bond", 1000).await;
        start_hub(&m.tools, &mut m.hub, "hub-0", &[]).unwrap();
        let c = m.hub.client();
        member(&c, "gamma", accounts::GAMMA.1, "RTX4090", "0.35").await;
        wait_condition(&c, "gamma", "Bonded", true).await;
        // gamma unbonds everything: its bond no longer covers the pool minimum.
        m.chain
            .request_unbond(&m.contracts, accounts::GAMMA.0, tokens(200))
            .await
            .unwrap();
        wait_condition(&c, "gamma", "Bonded", false).await;
        let bond = wait_until(T, "the ProviderBond mirror", || async {
            let b = Api::<gpufed_crds::ProviderBond>::all(c.clone())
                .get("gamma")
                .await
                .ok()?;
            let s = b.status?;
            (!s.eligible).then_some(s)
        })
        .await
        .unwrap();
        assert_eq!(bond.bonded.unwrap().to_string(), "0.00");
        assert_eq!(bond.unbonding.unwrap().to_string(), "200.00");
        assert_eq!(bond.required.unwrap().to_string(), "100.00");

        submit(&c, "team-a", "cheap", "RTX4090", 1, "1.00").await;
        let j = wait_job(&c, "team-a", "cheap", T, "explained", |j| {
            j.status
                .as_ref()
                .and_then(|s| s.explanation.as_deref())
                .is_some_and(|e| e.contains("0/1 clusters fit"))
        })
        .await
        .unwrap();
        let e = j.status.unwrap().explanation.unwrap();
        assert!(e.contains("gamma: bond 0.00 < required 100.00"), "{e}");
    });
}
