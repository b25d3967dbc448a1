//! Payments that cannot stall or be taken, against a real anvil and a real apiserver (the hub is a
//! process; the test stands in for member agents). Each test breaks one thing on the chain side
//! and checks that every later payment still lands, without restarting the hub:
//! * a lock the escrow refuses (two jobs, one deposit) costs no nonce and no attempt number;
//! * a transaction not mined in time is replaced at the same nonce;
//! * a hub out of gas money recovers when refunded;
//! * a job deleted while its lock is unmined has the lock cancelled, not orphaned;
//! * a lock on chain that is not the attempt's is never adopted or settled;
//! * a settlement counts only after its confirmations, and is sent again after a reorg;
//! * a lock a reorg removes is made again when the attempt ends, and then settled;
//! * the provider claims with the hub's signed receipt when the hub cannot settle;
//! * nothing is settled nor published for a provider to claim before the job's status records it;
//! * a payer who has not authorised the hub waits in Funding with the command to run;
//! * a token with 6 decimals is locked and paid in its own base units;
//! * a lock the escrow rejects for good (an amount above its limit) uses up the job's attempts and
//!   fails it, instead of placing it again forever.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use alloy::primitives::U256;
use gpufed_crds::{AttemptPhase, ComputeJob, JobPhase, SettlementState, TokenAmount};
use gpufed_e2e::chain::{accounts, tokens};
use gpufed_e2e::hubctl::{start_hub, wait_job};
use gpufed_e2e::market::{self, Market, STEP as T, finish, settled, settlement};
use gpufed_e2e::{run_test, wait_until};
use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

/// The most a test here may take, start-up included.
const HARD_DEADLINE: Duration = Duration::from_secs(420);

/// A market with a hub running and member alpha (8 H100 at 3.60) schedulable.
async fn started(name: &str, deposit: u64, chain_extra: serde_json::Value) -> Market {
    market::started(name, deposit, chain_extra).await.unwrap()
}

async fn submit(m: &Market, ns: &str, name: &str) {
    market::submit(&m.hub.client(), ns, name, "H100", 1, "3.60")
        .await
        .unwrap();
}

/// Submits team-a's job `name` and waits until attempt 1 is locked.
async fn submit_locked(m: &Market, name: &str) -> ComputeJob {
    submit(m, "team-a", name).await;
    wait_job(&m.hub.client(), "team-a", name, T, "locked", |j| {
        in_state(j, 1, SettlementState::Locked)
    })
    .await
    .unwrap()
}

fn in_state(j: &ComputeJob, attempt: u32, state: SettlementState) -> bool {
    settlement(j, attempt).is_some_and(|s| s.state == state)
}

/// The hub's account has no transaction waiting: every nonce it used was mined.
async fn no_nonce_gap(m: &Market) {
    let (mined, pending) = m.chain.nonces(accounts::HUB.1).await.unwrap();
    assert_eq!(mined, pending, "the hub's account has transactions waiting");
}

/// Waits for attempt 1 of team-a's job `name` to be locked (`what`), finishes it on alpha, waits
/// for the settlement and checks that the hub's account left no nonce unmined.
async fn locked_then_settled(m: &Market, name: &str, what: &str) {
    let c = m.hub.client();
    wait_job(&c, "team-a", name, T, what, |j| {
        in_state(j, 1, SettlementState::Locked)
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    finish(&c, "alpha", name, 3600).await.unwrap();
    wait_job(&c, "team-a", name, T, "settled", settled)
        .await
        .unwrap();
    no_nonce_gap(m).await;
}

fn price() -> TokenAmount {
    "3.60".parse().unwrap()
}

#[test]
fn a_refused_lock_costs_no_nonce_and_no_attempt_number_and_later_payments_land() {
    run_test(HARD_DEADLINE, || async {
        // No member yet: both jobs pass the funding check (5 ≥ 3.60) before either is locked.
        let mut m = market::market("pay-refused", 0, json!({})).await.unwrap();
        m.chain
            .deposit(&m.contracts, accounts::PAYER_A.0, tokens(5))
            .await
            .unwrap();
        start_hub(&m.tools, &mut m.hub, "hub-0", &[]).unwrap();
        let c = m.hub.client();
        submit(&m, "team-a", "one").await;
        submit(&m, "team-a", "two").await;
        for name in ["one", "two"] {
            wait_job(&c, "team-a", name, T, "pending", |j| {
                j.status
                    .as_ref()
                    .is_some_and(|s| s.phase == JobPhase::Pending)
            })
            .await
            .unwrap();
        }
        market::member(&c, "alpha", accounts::ALPHA.1, "H100", "3.60")
            .await
            .unwrap();

        // One lock lands; the other is refused by the simulation and nothing is sent for it.
        let api: Api<ComputeJob> = Api::namespaced(c.clone(), "team-a");
        let (winner, loser) = wait_until(T, "one lock and one refusal", || async {
            let one = api.get("one").await.ok()?;
            let two = api.get("two").await.ok()?;
            let refused = |j: &ComputeJob| {
                in_state(j, 1, SettlementState::Closed)
                    && j.status.as_ref().is_some_and(|s| {
                        s.attempts[0].reason.as_deref() == Some("LockRefused")
                            && s.phase == JobPhase::Funding
                    })
            };
            if in_state(&one, 1, SettlementState::Locked) && refused(&two) {
                Some(("one", two))
            } else if in_state(&two, 1, SettlementState::Locked) && refused(&one) {
                Some(("two", one))
            } else {
                None
            }
        })
        .await
        .unwrap();
        let st = loser.status.clone().unwrap();
        assert_eq!(st.attempts[0].phase, AttemptPhase::Cancelled);
        let message = st.attempts[0].message.clone().unwrap();
        assert!(message.contains("deposit more"), "{message}");
        let refused_id = settlement(&loser, 1).unwrap().job_id;
        assert_eq!(m.lock_state(&refused_id).await.unwrap(), 0);
        no_nonce_gap(&m).await;

        // More deposit: the waiting job runs as attempt 2 (attempt 1's number is not reused),
        // and both jobs are paid.
        let loser_name = loser.metadata.name.clone().unwrap();
        m.chain
            .deposit(&m.contracts, accounts::PAYER_A.0, tokens(10))
            .await
            .unwrap();
        let j = wait_job(&c, "team-a", &loser_name, T, "attempt 2 locked", |j| {
            in_state(j, 2, SettlementState::Locked)
        })
        .await
        .unwrap();
        assert_eq!(j.status.unwrap().attempt, 2);
        tokio::time::sleep(Duration::from_secs(2)).await;
        finish(&c, "alpha", winner, 3600).await.unwrap();
        finish(&c, "alpha", &loser_name, 3600).await.unwrap();
        wait_job(&c, "team-a", winner, T, "settled", settled)
            .await
            .unwrap();
        wait_job(&c, "team-a", &loser_name, T, "attempt 2 settled", |j| {
            in_state(j, 2, SettlementState::Settled)
        })
        .await
        .unwrap();
        no_nonce_gap(&m).await;
    });
}

#[test]
fn a_transaction_not_mined_in_time_is_replaced_at_its_nonce_and_later_payments_land() {
    run_test(HARD_DEADLINE, || async {
        let m = started("pay-unmined", 1000, json!({"txTimeout": "5s"})).await;
        let c = m.hub.client();
        m.chain.set_automine(false).await.unwrap();
        submit(&m, "team-a", "slow").await;
        let j = wait_job(
            &c,
            "team-a",
            "slow",
            T,
            "the lock shown as not mined",
            |j| {
                in_state(j, 1, SettlementState::Locking)
                    && settlement(j, 1)
                        .and_then(|s| s.message)
                        .is_some_and(|m| m.contains("to be mined"))
            },
        )
        .await
        .unwrap();
        assert!(
            gpufed_crds::conditions::find(&j.status.unwrap().conditions, "Funded")
                .is_some_and(|c| c.reason == "LockFailed")
        );
        // The hub retries: each retry replaces the waiting transaction instead of queueing a
        // second one behind it.
        tokio::time::sleep(Duration::from_secs(12)).await;
        let pool = m.chain.rpc("txpool_status", json!([])).await.unwrap();
        let pending = u64::from_str_radix(
            pool["pending"].as_str().unwrap().trim_start_matches("0x"),
            16,
        )
        .unwrap();
        assert_eq!(
            pending, 1,
            "one transaction waits, replaced in place: {pool}"
        );

        m.chain.set_automine(true).await.unwrap();
        m.chain.mine(1).await.unwrap();
        locked_then_settled(&m, "slow", "locked once mined").await;
    });
}

#[test]
fn a_hub_out_of_gas_money_recovers_when_its_account_is_refunded() {
    run_test(HARD_DEADLINE, || async {
        let m = started("pay-gas", 1000, json!({})).await;
        let c = m.hub.client();
        m.chain
            .set_balance(accounts::HUB.1, U256::ZERO)
            .await
            .unwrap();
        submit(&m, "team-a", "broke").await;
        let j = wait_job(&c, "team-a", "broke", T, "the lock failing", |j| {
            in_state(j, 1, SettlementState::Locking)
        })
        .await
        .unwrap();
        let message = settlement(&j, 1).unwrap().message.unwrap();
        assert!(message.contains("funds"), "{message}");

        m.chain
            .set_balance(accounts::HUB.1, tokens(100))
            .await
            .unwrap();
        locked_then_settled(&m, "broke", "locked after the refund").await;
    });
}

#[test]
fn a_job_deleted_while_its_lock_is_unmined_cancels_the_lock_and_goes_away() {
    run_test(HARD_DEADLINE, || async {
        let m = started("pay-delete", 1000, json!({"txTimeout": "5s"})).await;
        let c = m.hub.client();
        m.chain.set_automine(false).await.unwrap();
        submit(&m, "team-a", "gone").await;
        let j = wait_job(&c, "team-a", "gone", T, "the lock pending", |j| {
            in_state(j, 1, SettlementState::Locking)
        })
        .await
        .unwrap();
        let id = settlement(&j, 1).unwrap().job_id;
        let api: Api<ComputeJob> = Api::namespaced(c.clone(), "team-a");
        api.delete("gone", &DeleteParams::default()).await.unwrap();
        // Nothing is mined: the hub cannot know the lock will not land, so the job stays.
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(api.get_opt("gone").await.unwrap().is_some());

        m.chain.set_automine(true).await.unwrap();
        m.chain.mine(1).await.unwrap();
        wait_until(T, "the job removed", || async {
            api.get_opt("gone").await.ok()?.is_none().then_some(())
        })
        .await
        .unwrap();
        // What was mined at the lock's nonce is the cancellation: no lock, the deposit whole.
        assert_eq!(m.lock_state(&id).await.unwrap(), 0);
        assert_eq!(m.deposit(accounts::PAYER_A.1).await.unwrap(), tokens(1000));
        no_nonce_gap(&m).await;
    });
}

#[test]
fn a_lock_on_chain_that_is_not_the_attempts_is_never_used_and_its_number_never_reused() {
    run_test(HARD_DEADLINE, || async {
        let mut m = market::market("pay-conflict", 1000, json!({}))
            .await
            .unwrap();
        start_hub(&m.tools, &mut m.hub, "hub-0", &[]).unwrap();
        let c = m.hub.client();
        submit(&m, "team-a", "contested").await;
        let j = wait_job(&c, "team-a", "contested", T, "pending", |j| {
            j.status
                .as_ref()
                .is_some_and(|s| s.phase == JobPhase::Pending)
        })
        .await
        .unwrap();
        // Attempt 1's lock id already holds a lock for another provider (an earlier hub's
        // orphan): it must not be taken for this attempt, nor settled to that provider.
        let uid = j.metadata.uid.clone().unwrap();
        let id = gpufed_crds::naming::chain_job_id_hex(&uid, 1);
        m.chain
            .lock_as(
                &m.contracts,
                accounts::HUB.0,
                &id,
                accounts::PAYER_A.1,
                accounts::BETA.1,
                tokens(1),
            )
            .await
            .unwrap();
        let beta_before = m.balance(accounts::BETA.1).await.unwrap();
        market::member(&c, "alpha", accounts::ALPHA.1, "H100", "3.60")
            .await
            .unwrap();
        let j = wait_job(&c, "team-a", "contested", T, "attempt 2 locked", |j| {
            in_state(j, 2, SettlementState::Locked)
        })
        .await
        .unwrap();
        let st = j.status.unwrap();
        assert_eq!(st.attempts[0].reason.as_deref(), Some("LockConflict"));
        assert!(in_state_record(&st.attempts[0], SettlementState::Closed));
        tokio::time::sleep(Duration::from_secs(2)).await;
        finish(&c, "alpha", "contested", 3600).await.unwrap();
        wait_job(&c, "team-a", "contested", T, "attempt 2 settled", |j| {
            in_state(j, 2, SettlementState::Settled)
        })
        .await
        .unwrap();
        assert_eq!(
            m.balance(accounts::BETA.1).await.unwrap(),
            beta_before,
            "the foreign lock's provider got nothing"
        );
        assert_eq!(
            m.lock_state(&id).await.unwrap(),
            1,
            "the foreign lock is left for its payer to expire"
        );
    });
}

fn in_state_record(a: &gpufed_crds::AttemptRecord, state: SettlementState) -> bool {
    a.settlement.as_ref().is_some_and(|s| s.state == state)
}

#[test]
fn a_settlement_counts_after_its_confirmations_and_is_sent_again_after_a_reorg() {
    run_test(HARD_DEADLINE, || async {
        let m = started("pay-reorg", 1000, json!({"confirmations": 3})).await;
        let c = m.hub.client();
        let provider_before = m.balance(accounts::ALPHA.1).await.unwrap();
        submit_locked(&m, "shaky").await;
        // Bury the lock, so that the reorg below removes only the settlement.
        m.chain.mine(5).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        finish(&c, "alpha", "shaky", 3600).await.unwrap();
        let j = wait_job(&c, "team-a", "shaky", T, "settled but unconfirmed", |j| {
            settlement(j, 1)
                .is_some_and(|s| s.state == SettlementState::Settling && s.settle_block.is_some())
        })
        .await
        .unwrap();
        let first = settlement(&j, 1).unwrap();
        let id = first.job_id.clone();
        assert_eq!(m.lock_state(&id).await.unwrap(), 2);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            !settled(
                &wait_job(&c, "team-a", "shaky", T, "read", |_| true)
                    .await
                    .unwrap()
            ),
            "one block is not three confirmations"
        );

        // The block with the settlement is replaced by an empty one.
        m.chain.rpc("anvil_reorg", json!([1, []])).await.unwrap();
        // The hub sees the lock Locked again and sends the settlement again.
        wait_until(T, "the settlement sent again", || async {
            (m.lock_state(&id).await.ok()? == 2).then_some(())
        })
        .await
        .unwrap();
        m.chain.mine(3).await.unwrap();
        let j = wait_job(&c, "team-a", "shaky", T, "settled and confirmed", settled)
            .await
            .unwrap();
        let s = settlement(&j, 1).unwrap();
        assert_ne!(
            s.settle_block, first.settle_block,
            "the settlement recorded is the one sent again, in a later block"
        );
        let paid = s.paid.unwrap();
        let fee = TokenAmount::from_atto(paid.atto() * 500 / 10_000);
        let provider_after = m.balance(accounts::ALPHA.1).await.unwrap();
        assert_eq!(
            provider_after - provider_before,
            U256::from(paid.checked_sub(fee).unwrap().atto()),
            "paid exactly once"
        );
        no_nonce_gap(&m).await;
    });
}

#[test]
fn a_lock_removed_by_a_reorg_is_made_again_and_the_work_is_paid() {
    run_test(HARD_DEADLINE, || async {
        let m = started("pay-relock", 1000, json!({})).await;
        let c = m.hub.client();
        let j = submit_locked(&m, "rebuilt").await;
        let first = settlement(&j, 1).unwrap();
        // The block with the lock (the chain's last) is replaced by an empty one.
        m.chain.rpc("anvil_reorg", json!([1, []])).await.unwrap();
        assert_eq!(m.lock_state(&first.job_id).await.unwrap(), 0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        finish(&c, "alpha", "rebuilt", 3600).await.unwrap();
        let j = wait_job(&c, "team-a", "rebuilt", T, "settled", settled)
            .await
            .unwrap();
        let s = settlement(&j, 1).unwrap();
        assert_ne!(s.lock_tx, first.lock_tx, "the lock was made again");
        assert_eq!(
            s.paid.unwrap(),
            price()
                .cost_of_gpu_seconds(j.status.unwrap().attempts[0].gpu_seconds)
                .unwrap()
        );
        no_nonce_gap(&m).await;
    });
}

#[test]
fn a_provider_claims_with_the_hubs_signed_receipt_when_the_hub_cannot_settle() {
    run_test(HARD_DEADLINE, || async {
        let m = started("pay-claim", 1000, json!({})).await;
        let c = m.hub.client();
        submit_locked(&m, "claimed").await;
        // The hub can no longer pay for gas: it signs the receipt but cannot settle.
        m.chain
            .set_balance(accounts::HUB.1, U256::ZERO)
            .await
            .unwrap();
        let provider_before = m.balance(accounts::ALPHA.1).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        finish(&c, "alpha", "claimed", 3600).await.unwrap();
        let j = wait_job(&c, "team-a", "claimed", T, "a signed receipt", |j| {
            settlement(j, 1).is_some_and(|s| s.receipt.is_some())
        })
        .await
        .unwrap();
        let s = settlement(&j, 1).unwrap();
        let receipt = s.receipt.unwrap();
        assert_eq!(
            receipt.signer.to_lowercase(),
            accounts::HUB.1.to_lowercase()
        );
        let paid = U256::from_str_radix(&receipt.paid_base_units, 10).unwrap();
        let used = j.status.as_ref().unwrap().attempts[0].gpu_seconds;
        assert_eq!(
            paid,
            U256::from(price().cost_of_gpu_seconds(used).unwrap().atto())
        );

        // The receipt is on the Placement, where the provider's member credentials read it; the
        // provider submits it itself with the plugin.
        wait_until(T, "the receipt on the placement", || async {
            let ps = gpufed_e2e::hubctl::placements(&c, "alpha").await.ok()?;
            ps.iter()
                .any(|p| {
                    p.metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key("gpufed.io/usage-receipt"))
                })
                .then_some(())
        })
        .await
        .unwrap();
        let key_file = m.hub.dir().unwrap().join("alpha.key");
        std::fs::write(&key_file, accounts::ALPHA.0).unwrap();
        let claim = |dry: bool| {
            let mut cmd =
                std::process::Command::new(m.tools.workspace_bin("kubectl-gpufed").unwrap());
            cmd.args([
                "--kubeconfig",
                &m.hub.kubeconfig().display().to_string(),
                "claim",
                "--member",
                "alpha",
                "--key-file",
                &key_file.display().to_string(),
            ]);
            if dry {
                cmd.arg("--dry-run");
            }
            let out = cmd.output().unwrap();
            let shown = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(
                out.status.success(),
                "{shown}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            if std::env::var_os("GPUFED_E2E_SHOW").is_some() {
                eprintln!(
                    "$ kubectl gpufed claim --member alpha --key-file alpha.key{}\n{shown}",
                    if dry { " --dry-run" } else { "" }
                );
            }
            shown
        };
        let dry = claim(true);
        assert!(
            dry.contains(&format!("{} claimable: {paid} base units", s.job_id)),
            "{dry}"
        );
        let done = claim(false);
        assert!(
            done.contains(&format!("{} claimed: {paid} base units", s.job_id)),
            "{done}"
        );
        assert_eq!(m.lock_state(&s.job_id).await.unwrap(), 2);
        let again = claim(false);
        assert!(again.contains("already settled: skipped"), "{again}");
        let j = wait_job(&c, "team-a", "claimed", T, "recorded as settled", settled)
            .await
            .unwrap();
        let recorded = settlement(&j, 1).unwrap().paid.unwrap();
        assert_eq!(U256::from(recorded.atto()), paid);
        let fee = paid * U256::from(500u64) / U256::from(10_000u64);
        let provider_after = m.balance(accounts::ALPHA.1).await.unwrap();
        assert_eq!(provider_after - provider_before, paid - fee);
    });
}

/// Lines of the hub's log where a pass over a job failed because `refusal` (an admission
/// policy's message) refused its write.
fn refused_passes(m: &Market, refusal: &str) -> usize {
    let log = m.hub.dir().unwrap().join("hub-0.log");
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("reconcile failed") && l.contains(refusal))
        .count()
}

#[test]
fn nothing_is_paid_nor_claimable_before_the_job_records_it() {
    run_test(HARD_DEADLINE, || async {
        let m = started("pay-unrecorded", 1000, json!({})).await;
        let c = m.hub.client();
        let locked = submit_locked(&m, "unrecorded").await;
        let id = settlement(&locked, 1).unwrap().job_id;

        // An admission policy refuses every write of a job status in team-a: the hub computes
        // the end of the attempt, its receipt and its settlement, and cannot record them.
        let refusal = "job statuses in team-a are frozen";
        gpufed_e2e::hubctl::deny_writes(
            &c,
            "frozen-jobs",
            "team-a",
            ("gpufed.io", "computejobs/status"),
            &["UPDATE"],
            refusal,
        )
        .await
        .unwrap();
        let jobs: Api<ComputeJob> = Api::namespaced(c.clone(), "team-a");
        wait_until(T, "the policy refusing job statuses", || async {
            let dry = PatchParams {
                dry_run: true,
                ..Default::default()
            };
            let touch = json!({"status": {"message": "probe"}});
            matches!(jobs.patch_status("unrecorded", &dry, &Patch::Merge(&touch)).await,
                     Err(kube::Error::Api(e)) if e.message.contains(refusal))
            .then_some(())
        })
        .await
        .unwrap();
        // Counted from the attempt's end: a pass refused before it had nothing to pay.
        let before_end = refused_passes(&m, refusal);
        finish(&c, "alpha", "unrecorded", 3600).await.unwrap();
        wait_until(
            T,
            "three passes refused after the attempt ended",
            || async { (refused_passes(&m, refusal) >= before_end + 3).then_some(()) },
        )
        .await
        .unwrap();
        // Nothing the job does not record went out: no settlement, no receipt to claim with.
        assert_eq!(m.lock_state(&id).await.unwrap(), 1, "still locked");
        let ps = gpufed_e2e::hubctl::placements(&c, "alpha").await.unwrap();
        assert!(
            ps.iter().all(|p| p
                .metadata
                .annotations
                .as_ref()
                .is_none_or(|a| !a.contains_key("gpufed.io/usage-receipt"))),
            "a receipt was published before the job recorded it"
        );
        let before = jobs.get("unrecorded").await.unwrap();
        assert!(in_state(&before, 1, SettlementState::Locked));

        // The policy goes: the job records its end, then it is published and paid, for what the
        // job records.
        let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(c.clone());
        bindings
            .delete("frozen-jobs", &DeleteParams::default())
            .await
            .unwrap();
        let j = wait_job(&c, "team-a", "unrecorded", T, "settled", settled)
            .await
            .unwrap();
        let s = settlement(&j, 1).unwrap();
        let used = j.status.as_ref().unwrap().attempts[0].gpu_seconds;
        assert_eq!(s.paid.unwrap(), price().cost_of_gpu_seconds(used).unwrap());
        let receipt = s.receipt.unwrap();
        assert_eq!(receipt.paid_base_units, s.paid.unwrap().atto().to_string());
        let ps = gpufed_e2e::hubctl::placements(&c, "alpha").await.unwrap();
        let shown: gpufed_crds::ClaimableReceipt = ps
            .iter()
            .find_map(|p| {
                p.metadata
                    .annotations
                    .as_ref()?
                    .get("gpufed.io/usage-receipt")
            })
            .map(|v| serde_json::from_str(v).unwrap())
            .expect("the receipt on the placement");
        assert_eq!(shown.receipt, receipt);
        assert_eq!(shown.job_id, id);
        no_nonce_gap(&m).await;
    });
}

#[test]
fn a_payer_who_has_not_authorised_the_hub_waits_with_the_command_to_run() {
    run_test(HARD_DEADLINE, || async {
        let m = started("pay-authorise", 1000, json!({})).await;
        let c = m.hub.client();
        m.chain
            .authorise(
                &m.contracts,
                accounts::PAYER_B.0,
                accounts::HUB.1,
                U256::ZERO,
                0,
            )
            .await
            .unwrap();
        submit(&m, "team-b", "unsigned").await;
        let j = wait_job(&c, "team-b", "unsigned", T, "Funding", |j| {
            j.status.as_ref().is_some_and(|s| {
                s.phase == JobPhase::Funding && s.reason.as_deref() == Some("SpendingNotAuthorised")
            })
        })
        .await
        .unwrap();
        let e = j.status.unwrap().explanation.unwrap();
        assert!(e.contains("kubectl gpufed authorise"), "{e}");
        assert!(
            e.contains(&accounts::HUB.1.to_lowercase()) || e.contains(accounts::HUB.1),
            "{e}"
        );

        // The payer authorises with the plugin, signing an EIP-712 permit.
        let key_file = m.hub.dir().unwrap().join("payer-b.key");
        std::fs::write(&key_file, accounts::PAYER_B.0).unwrap();
        let out = std::process::Command::new(m.tools.workspace_bin("kubectl-gpufed").unwrap())
            .args([
                "--kubeconfig",
                &m.hub.kubeconfig().display().to_string(),
                "authorise",
                "--pool",
                "market",
                "--amount",
                "100",
                "--valid-for",
                "720h",
                "--key-file",
                &key_file.display().to_string(),
            ])
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{shown}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(shown.starts_with("authorised 0x"), "{shown}");
        if std::env::var_os("GPUFED_E2E_SHOW").is_some() {
            eprintln!(
                "$ kubectl gpufed authorise --pool market --amount 100 --valid-for 720h --key-file payer-b.key\n{shown}"
            );
        }
        let (remaining, _) = m
            .chain
            .allowance(&m.contracts, accounts::PAYER_B.1, accounts::HUB.1)
            .await
            .unwrap();
        assert_eq!(remaining, tokens(100));
        wait_job(&c, "team-b", "unsigned", T, "locked once authorised", |j| {
            in_state(j, 1, SettlementState::Locked)
        })
        .await
        .unwrap();
        let (remaining, _) = m
            .chain
            .allowance(&m.contracts, accounts::PAYER_B.1, accounts::HUB.1)
            .await
            .unwrap();
        assert_eq!(
            remaining,
            tokens(100) - U256::from(price().atto()),
            "the lock counts against the authorisation"
        );
    });
}

#[test]
fn a_token_with_six_decimals_is_locked_and_paid_in_its_own_base_units() {
    run_test(HARD_DEADLINE, || async {
        let m = market::started_with_token("pay-decimals", 1000, json!({}), "SixDecimalsToken", 6)
            .await
            .unwrap();
        let c = m.hub.client();
        let provider_before = m.balance(accounts::ALPHA.1).await.unwrap();
        let j = submit_locked(&m, "usdc").await;
        let s = settlement(&j, 1).unwrap();
        assert_eq!(s.locked.unwrap().to_string(), "3.60");
        // 3.60 tokens of 6 decimals.
        assert_eq!(
            m.chain.lock_state(&m.contracts, &s.job_id).await.unwrap().1,
            3_600_000
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        finish(&c, "alpha", "usdc", 3600).await.unwrap();
        let j = wait_job(&c, "team-a", "usdc", T, "settled", settled)
            .await
            .unwrap();
        let used = j.status.as_ref().unwrap().attempts[0].gpu_seconds;
        let paid = settlement(&j, 1).unwrap().paid.unwrap();
        // What the status says was paid is what moved, in 6-decimal units (rounded down).
        let paid_base = price().cost_of_gpu_seconds(used).unwrap().atto() / 1_000_000_000_000;
        assert_eq!(paid.atto(), paid_base * 1_000_000_000_000);
        let fee = paid_base * 500 / 10_000;
        let provider_after = m.balance(accounts::ALPHA.1).await.unwrap();
        assert_eq!(
            provider_after - provider_before,
            U256::from(paid_base - fee)
        );
    });
}

#[test]
fn a_lock_the_escrow_rejects_for_good_uses_up_the_attempts_and_fails_the_job() {
    run_test(HARD_DEADLINE, || async {
        let m = started("pay-rejected", 1000, json!({})).await;
        let c = m.hub.client();
        // Enough deposit and authorisation for a lock above the escrow's limit (2^96 − 1 base units,
        // about 7.9e10 tokens): 1e11 tokens × 1 GPU × 1 h.
        let huge = tokens(200_000_000_000);
        m.chain
            .mint(&m.contracts, accounts::PAYER_B.1, huge)
            .await
            .unwrap();
        m.chain
            .deposit(&m.contracts, accounts::PAYER_B.0, huge)
            .await
            .unwrap();
        m.chain
            .authorise(
                &m.contracts,
                accounts::PAYER_B.0,
                accounts::HUB.1,
                huge,
                gpufed_e2e::chain::unix_now() + 86_400,
            )
            .await
            .unwrap();
        let j = json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                       "metadata": {"name": "whale", "namespace": "team-b"},
                       "spec": {"pool": "market", "gpusPerReplica": 1, "gpu": {"models": ["H100"]},
                                "maxPricePerGpuHour": "100000000000", "maxDuration": "1h",
                                "retry": {"maxAttempts": 2},
                                "template": {"containers": [{"name": "main", "image": "busybox"}]}}});
        gpufed_e2e::hubctl::apply::<ComputeJob>(&c, &j)
            .await
            .unwrap();
        let j = wait_job(&c, "team-b", "whale", T, "failed", |j| {
            j.status
                .as_ref()
                .is_some_and(|s| s.phase == JobPhase::Failed)
        })
        .await
        .unwrap();
        let st = j.status.unwrap();
        assert_eq!(st.attempt, 2);
        for a in &st.attempts {
            assert_eq!(a.reason.as_deref(), Some("LockRejected"));
            assert_eq!(
                a.settlement.as_ref().unwrap().state,
                SettlementState::Closed
            );
        }
        let message = st.message.unwrap();
        assert!(
            message.contains("AmountTooLarge") && message.contains("no attempts left"),
            "{message}"
        );
        assert!(
            gpufed_e2e::hubctl::placements(&c, "alpha")
                .await
                .unwrap()
                .is_empty()
        );
        no_nonce_gap(&m).await;
    });
}
