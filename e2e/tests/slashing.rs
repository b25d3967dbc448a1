//! Slashing with evidence (ADR 0023) through the hub's own chain client, against a real anvil
//! with the real contracts: a slash proposed with an evidence hash freezes the amount, cannot be
//! executed inside the appeal window, pays the harmed tenants their shares and the treasury the
//! rest once executed, and its evidence hash can never be used again; bad input is refused by name
//! and moves no token; an appeal stops execution until the hub (or a referee) decides.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{B256, U256};
use gpufed_crds::{ChainSpec, EvmAddress, TokenAmount};
use gpufed_e2e::chain::{APPEAL_WINDOW_SECS, Chain, Contracts, accounts, tokens};
use gpufed_e2e::{Tools, run_test};
use gpufed_operator::hub::chain::{ChainClient, Refusal, SlashProposal, SlashState};
use sha2::{Digest, Sha256};

/// The most a test here may take, start-up included.
const HARD_DEADLINE: Duration = Duration::from_secs(180);

/// anvil with the contracts deployed (each provider staked 200 tokens) and the hub's chain client
/// signing as the bond's arbiter (the admin account holds the role).
async fn setup(dir: &std::path::Path) -> (Chain, Contracts, Arc<ChainClient>) {
    let tools = Tools::locate().unwrap();
    let chain = Chain::start(&tools, dir).await.unwrap();
    let c = chain.deploy_all(&tools, 500, 10_000, 0, 200).await.unwrap();
    let spec: ChainSpec = serde_json::from_value(serde_json::json!({
        "rpcUrl": chain.url, "chainId": 31337,
        "token": c.token.to_string(), "escrow": c.escrow.to_string(), "bond": c.bond.to_string(),
        "hubKeySecretRef": {"namespace": "gpufed-system", "name": "k", "key": "privateKey"}
    }))
    .unwrap();
    let leadership = gpufed_operator::leader::Leadership::new();
    leadership.extend(Instant::now() + Duration::from_secs(3600));
    let refused = prometheus::IntCounterVec::new(
        prometheus::Opts::new("refused_total", "refused writes"),
        &["target"],
    )
    .unwrap();
    let fence = gpufed_operator::fenced::WriteFence::new(leadership, refused);
    let client = ChainClient::new(&spec, accounts::ADMIN.0, fence).unwrap();
    (chain, c, client)
}

fn evm(a: &str) -> EvmAddress {
    EvmAddress::from_str(a).unwrap()
}

fn amount(s: &str) -> TokenAmount {
    s.parse().unwrap()
}

/// The evidence hash of an evidence record: its sha256.
fn evidence(record: &str) -> B256 {
    B256::from_slice(&Sha256::digest(record.as_bytes()))
}

/// Token balances of payer A, payer B, the treasury and the bond contract.
async fn balances(chain: &Chain, c: &Contracts) -> [U256; 4] {
    [
        chain.balance_of(c, accounts::PAYER_A.1).await.unwrap(),
        chain.balance_of(c, accounts::PAYER_B.1).await.unwrap(),
        chain.balance_of(c, accounts::TREASURY.1).await.unwrap(),
        chain.balance_of(c, &c.bond.to_string()).await.unwrap(),
    ]
}

fn refused(r: Result<gpufed_operator::hub::chain::Mined, Refusal>, name: &str) {
    match r {
        Err(Refusal::Other(s)) if s.contains(name) => {}
        other => panic!("expected a refusal naming {name}, got {other:?}"),
    }
}

#[test]
fn a_slash_pays_the_tenants_their_shares_and_the_treasury_the_rest_after_the_window_once_per_hash()
{
    run_test(HARD_DEADLINE, || async {
        let dir = tempfile::tempdir().unwrap();
        let (chain, c, hub) = setup(dir.path()).await;
        let alpha = evm(accounts::ALPHA.1);
        let hash = evidence("challenge 7 on alpha: wrong answer, rows 3 and 9 differ");
        let proposal = SlashProposal {
            provider: alpha.clone(),
            evidence_hash: hash,
            amount: amount("50"),
            tenants: vec![
                (evm(accounts::PAYER_A.1), amount("20")),
                (evm(accounts::PAYER_B.1), amount("25")),
            ],
        };
        let before = balances(&chain, &c).await;
        hub.propose_slash(&proposal).await.unwrap().unwrap();

        let rec = hub.slash_record(hash).await.unwrap().unwrap();
        assert_eq!(rec.state, SlashState::Proposed);
        assert_eq!(rec.amount, amount("50"));
        assert_eq!(rec.tenants.len(), 2);
        assert_eq!(hub.frozen_of(&alpha).await.unwrap(), Some(amount("50")));
        let bond = hub.bond_of(&alpha).await.unwrap().unwrap();
        assert_eq!(bond.bonded, amount("150"), "frozen out of the bond at once");
        assert_eq!(hub.appeal_window().await.unwrap(), Some(APPEAL_WINDOW_SECS));

        // Inside the window: refused by name, nothing moves.
        refused(hub.execute_slash(hash).await.unwrap(), "TooEarly");
        assert_eq!(balances(&chain, &c).await, before);

        chain.advance_time(APPEAL_WINDOW_SECS).await.unwrap();
        hub.execute_slash(hash).await.unwrap().unwrap();
        let after = balances(&chain, &c).await;
        assert_eq!(after[0] - before[0], tokens(20), "payer A got its share");
        assert_eq!(after[1] - before[1], tokens(25), "payer B got its share");
        assert_eq!(after[2] - before[2], tokens(5), "the treasury got the rest");
        assert_eq!(
            before[3] - after[3],
            tokens(50),
            "the bond paid exactly the slash"
        );
        let rec = hub.slash_record(hash).await.unwrap().unwrap();
        assert_eq!(rec.state, SlashState::Executed);
        let bond = hub.bond_of(&alpha).await.unwrap().unwrap();
        assert_eq!(bond.slashed_total, amount("50"));
        assert_eq!(
            hub.frozen_of(&alpha).await.unwrap(),
            Some(TokenAmount::ZERO)
        );
        let events = hub.slashes_of(&alpha).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].evidence_hash, hash.to_string());

        // The same evidence can never be used again, not even for another provider.
        let mut again = proposal.clone();
        again.provider = evm(accounts::BETA.1);
        refused(
            hub.propose_slash(&again).await.unwrap(),
            "EvidenceAlreadyUsed",
        );
        refused(hub.execute_slash(hash).await.unwrap(), "SlashNotInState");
        assert_eq!(balances(&chain, &c).await, after);
    });
}

#[test]
fn bad_slash_input_is_refused_by_name_and_moves_no_token() {
    run_test(HARD_DEADLINE, || async {
        let dir = tempfile::tempdir().unwrap();
        let (chain, c, hub) = setup(dir.path()).await;
        let alpha = evm(accounts::ALPHA.1);
        let before = balances(&chain, &c).await;
        let base = SlashProposal {
            provider: alpha.clone(),
            evidence_hash: evidence("bad input"),
            amount: amount("10"),
            tenants: vec![(evm(accounts::PAYER_A.1), amount("10"))],
        };
        let cases: Vec<(SlashProposal, &str)> = vec![
            (
                SlashProposal {
                    amount: TokenAmount::ZERO,
                    tenants: vec![],
                    ..base.clone()
                },
                "ZeroAmount",
            ),
            (
                SlashProposal {
                    amount: amount("200.000000000000000001"),
                    tenants: vec![],
                    ..base.clone()
                },
                "SlashExceedsBond",
            ),
            (
                SlashProposal {
                    tenants: vec![
                        (evm(accounts::PAYER_A.1), amount("6")),
                        (evm(accounts::PAYER_B.1), amount("5")),
                    ],
                    ..base.clone()
                },
                "SharesExceedAmount",
            ),
            (
                SlashProposal {
                    tenants: vec![(alpha.clone(), amount("1"))],
                    ..base.clone()
                },
                "TenantIsProvider",
            ),
            (
                SlashProposal {
                    evidence_hash: B256::ZERO,
                    ..base.clone()
                },
                "ZeroEvidence",
            ),
        ];
        for (p, name) in cases {
            refused(hub.propose_slash(&p).await.unwrap(), name);
        }
        refused(
            hub.execute_slash(evidence("never proposed")).await.unwrap(),
            "SlashNotInState",
        );
        assert_eq!(balances(&chain, &c).await, before);
        assert_eq!(
            hub.frozen_of(&alpha).await.unwrap(),
            Some(TokenAmount::ZERO)
        );
        assert_eq!(
            hub.bond_of(&alpha).await.unwrap().unwrap().bonded,
            amount("200")
        );
        assert!(
            hub.slash_record(base.evidence_hash)
                .await
                .unwrap()
                .is_none()
        );
    });
}

#[test]
fn an_appeal_stops_execution_until_decided_and_a_cancelled_slash_returns_the_bond() {
    run_test(HARD_DEADLINE, || async {
        let dir = tempfile::tempdir().unwrap();
        let (chain, c, hub) = setup(dir.path()).await;
        let alpha = evm(accounts::ALPHA.1);
        let hash = evidence("challenge 8 on alpha: too slow");
        hub.propose_slash(&SlashProposal {
            provider: alpha.clone(),
            evidence_hash: hash,
            amount: amount("30"),
            tenants: vec![(evm(accounts::PAYER_A.1), amount("30"))],
        })
        .await
        .unwrap()
        .unwrap();
        let answer: [u8; 32] = Sha256::digest(b"the provider's answer").into();
        chain
            .appeal(&c, accounts::ALPHA.0, hash.0, answer)
            .await
            .unwrap();
        let rec = hub.slash_record(hash).await.unwrap().unwrap();
        assert_eq!(rec.state, SlashState::Appealed);
        assert_eq!(rec.appeal_answer, Some(B256::from(answer)));
        chain.advance_time(APPEAL_WINDOW_SECS).await.unwrap();
        let before = balances(&chain, &c).await;
        refused(hub.execute_slash(hash).await.unwrap(), "SlashNotInState");
        assert_eq!(balances(&chain, &c).await, before);
        // The hub checks the answer and withdraws its proposal: the tokens go back to the bond.
        hub.cancel_slash(hash).await.unwrap().unwrap();
        assert_eq!(
            hub.slash_record(hash).await.unwrap().unwrap().state,
            SlashState::Cancelled
        );
        assert_eq!(
            hub.bond_of(&alpha).await.unwrap().unwrap().bonded,
            amount("200")
        );
        assert_eq!(balances(&chain, &c).await, before);
    });
}

#[test]
fn shares_computed_from_what_the_tenants_paid_reach_them_and_the_rounding_reaches_the_treasury() {
    run_test(HARD_DEADLINE, || async {
        let dir = tempfile::tempdir().unwrap();
        let (chain, c, hub) = setup(dir.path()).await;
        let tenants = gpufed_operator::hub::compensation::tenant_shares(
            amount("10"),
            &[
                (evm(accounts::PAYER_A.1), amount("1")),
                (evm(accounts::PAYER_B.1), amount("1.5")),
                (evm(accounts::PAYER_B.1), amount("0.5")),
            ],
        );
        assert_eq!(tenants.len(), 2);
        let hash = evidence("challenge 9 on beta: fewer GPUs than claimed");
        let before = balances(&chain, &c).await;
        hub.propose_slash(&SlashProposal {
            provider: evm(accounts::BETA.1),
            evidence_hash: hash,
            amount: amount("10"),
            tenants,
        })
        .await
        .unwrap()
        .unwrap();
        chain.advance_time(APPEAL_WINDOW_SECS).await.unwrap();
        hub.execute_slash(hash).await.unwrap().unwrap();
        let after = balances(&chain, &c).await;
        // A paid a third, B two thirds: 3.333… and 6.666… tokens, rounded down; 1 base unit left.
        let third = tokens(10) / U256::from(3u8);
        assert_eq!(after[0] - before[0], third);
        assert_eq!(
            after[1] - before[1],
            tokens(10) * U256::from(2u8) / U256::from(3u8)
        );
        assert_eq!(
            after[2] - before[2],
            U256::from(1u8),
            "the rounding to the treasury"
        );
        assert_eq!(before[3] - after[3], tokens(10));
    });
}
