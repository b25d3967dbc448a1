//! Offers signed by the provider's wallet (ADR 0024) in a pool that pays on a real anvil: the hub
//! publishes the signing domain in the member's status, accepts an Offer only when the member's
//! wallet signed it with a nonce above the last accepted one and before its expiry, keeps the last
//! accepted prices while a later Offer is refused, and copies the signed offer into every attempt
//! it places there, so that anyone can recompute the digest and recover the wallet that asked the
//! price. The test signs with the agent's own signing code and stands in for the agent; the agent
//! itself signing from its key file is proved in `offers.rs`.
//!
//! Needs `cargo build --bins` first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr as _;
use std::time::Duration;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use gpufed_crds::naming::member_namespace;
use gpufed_crds::offer::typed;
use gpufed_crds::{ComputeJob, GpuPool, MemberCluster, Offer, OfferSigning, SignedOffer};
use gpufed_e2e::chain::accounts;
use gpufed_e2e::hubctl::wait_job;
use gpufed_e2e::{market, run_test, wait_until};
use gpufed_operator::agent::offer::{apply_body, parse_offer, sign};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

const HARD_DEADLINE: Duration = Duration::from_secs(360);
const T: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Alpha's Offer of H100 at `price` as the agent applies it, signed by `key` at `at_ms` (after
/// nonce `last`) when given.
fn body(
    price: &str,
    signed: Option<(&str, &OfferSigning, u64, Option<u64>)>,
) -> (serde_json::Value, Option<u64>) {
    let prices = [parse_offer(&format!("H100={price}")).unwrap()];
    let signed = signed.map(|(key, d, at_ms, last)| {
        let key = PrivateKeySigner::from_str(key).unwrap();
        sign(&key, d, "alpha", &prices, HOUR, at_ms, last).unwrap()
    });
    (
        apply_body("alpha", &prices, signed.as_ref()),
        signed.map(|s| s.nonce),
    )
}

async fn apply(c: &Client, body: &serde_json::Value) {
    Api::<Offer>::namespaced(c.clone(), &member_namespace("alpha"))
        .patch(
            "offer",
            &PatchParams::apply("gpufed-agent").force(),
            &Patch::Apply(body),
        )
        .await
        .unwrap();
}

/// Waits until alpha's Offer of generation `generation` has the verdict `reason`; returns its
/// message and the offer accepted last.
async fn verdict(c: &Client, generation: i64, reason: &str) -> (String, Option<SignedOffer>) {
    let offers: Api<Offer> = Api::namespaced(c.clone(), &member_namespace("alpha"));
    wait_until(T, &format!("the offer's verdict {reason}"), || async {
        let o = offers.get("offer").await.ok()?;
        let st = o.status?;
        let cond = st
            .conditions
            .iter()
            .find(|c| c.type_ == "Accepted" && c.observed_generation == Some(generation))?;
        (cond.reason == reason).then(|| (cond.message.clone(), st.accepted.clone()))
    })
    .await
    .unwrap()
}

async fn generation(c: &Client) -> i64 {
    Api::<Offer>::namespaced(c.clone(), &member_namespace("alpha"))
        .get("offer")
        .await
        .unwrap()
        .metadata
        .generation
        .unwrap()
}

/// The cheapest H100 ask in the pool's status.
async fn min_price(c: &Client) -> Option<String> {
    let p = Api::<GpuPool>::all(c.clone()).get("market").await.ok()?;
    let cap = p.status?.capacity.into_iter().find(|m| m.model == "H100")?;
    Some(cap.min_price?.to_string())
}

async fn wait_min_price(c: &Client, want: &str) {
    wait_until(T, &format!("the pool prices H100 at {want}"), || async {
        (min_price(c).await? == want).then_some(())
    })
    .await
    .unwrap();
}

/// Submits `name` and returns its first attempt's price and offer once placed.
async fn placed(c: &Client, name: &str) -> (String, Option<SignedOffer>) {
    market::submit(c, "team-a", name, "H100", 1, "3.60")
        .await
        .unwrap();
    let j: ComputeJob = wait_job(c, "team-a", name, T, "placed", |j| {
        j.status.as_ref().is_some_and(|s| !s.attempts.is_empty())
    })
    .await
    .unwrap();
    let a = j.status.unwrap().attempts.remove(0);
    (a.price_per_gpu_hour.to_string(), a.offer.map(|o| *o))
}

/// The wallet that signed `proof` for alpha in `d`, from the proof alone.
fn signer_of(proof: &SignedOffer, d: &OfferSigning) -> (Address, String) {
    let fields = typed::OfferFields {
        pool: &d.pool,
        cluster: "alpha",
        prices: &proof.prices,
        nonce: proof.nonce.unwrap(),
        expires: proof.expires.as_ref().unwrap().0.as_second() as u64,
    };
    let (signer, digest) = typed::signer(
        &fields,
        proof.signature.as_deref().unwrap(),
        d.chain_id,
        Address::from(d.verifying_contract.to_bytes()),
    )
    .unwrap();
    (signer, format!("{digest}"))
}

/// A paying market with alpha schedulable, and alpha's signing domain once the hub published it.
async fn market_with_domain(name: &str) -> (market::Market, OfferSigning) {
    let m = market::started(name, 1000, json!({})).await.unwrap();
    let members: Api<MemberCluster> = Api::all(m.hub.client());
    let d = wait_until(T, "alpha's signing domain", || async {
        members.get("alpha").await.ok()?.status?.offer_signing
    })
    .await
    .unwrap();
    (m, d)
}

#[test]
fn a_members_signed_offer_prices_its_attempts_with_a_proof_and_every_bad_offer_is_refused() {
    run_test(HARD_DEADLINE, || async {
        // The hub publishes where alpha's wallet signs.
        let (m, d) = market_with_domain("signed-offers").await;
        let c = m.hub.client();
        let alpha = Address::from_str(accounts::ALPHA.1).unwrap();
        assert_eq!((d.pool.as_str(), d.chain_id), ("market", 31337));
        assert_eq!(
            Address::from(d.verifying_contract.to_bytes()),
            m.contracts.bond
        );
        assert_eq!(Address::from(d.wallet.to_bytes()), alpha);
        wait_min_price(&c, "3.60").await;

        // Unsigned: refused, the admin's 3.60 stays.
        apply(&c, &body("1.10", None).0).await;
        let (msg, kept) = verdict(&c, generation(&c).await, "Unsigned").await;
        assert!(
            msg.starts_with("spec.signature: missing; pool market pays on chain 31337"),
            "{msg}"
        );
        assert!(
            msg.ends_with("the member is priced by MemberCluster.spec.prices"),
            "{msg}"
        );
        assert_eq!(kept, None);
        assert_eq!(min_price(&c).await.as_deref(), Some("3.60"));

        // Signed by alpha's wallet: accepted, and the next job pays 1.10 with the proof.
        let t0 = now_ms();
        let (first, n1) = body("1.10", Some((accounts::ALPHA.0, &d, t0, None)));
        apply(&c, &first).await;
        let (msg, accepted) = verdict(&c, generation(&c).await, "Accepted").await;
        let n1 = n1.unwrap();
        assert_eq!(
            msg,
            format!(
                "signed by the member's wallet {}, nonce {n1}",
                d.wallet.as_str()
            )
        );
        let accepted = accepted.unwrap();
        assert_eq!(accepted.nonce, Some(n1));
        wait_min_price(&c, "1.10").await;
        let (price, proof) = placed(&c, "j-1").await;
        assert_eq!(price, "1.10");
        let proof = proof.expect("the attempt records the signed offer");
        assert_eq!(proof, accepted);
        // Anyone can recover alpha's wallet from the attempt record alone.
        let (signer, digest) = signer_of(&proof, &d);
        assert_eq!(signer, alpha);
        assert_eq!(Some(digest), proof.digest);

        // Signed by another key (beta's) for alpha: refused; alpha stays at 1.10.
        let (forged, _) = body("0.10", Some((accounts::BETA.0, &d, t0 + 10, Some(n1))));
        apply(&c, &forged).await;
        let (msg, kept) = verdict(&c, generation(&c).await, "WrongSigner").await;
        let beta = Address::from_str(accounts::BETA.1).unwrap();
        assert!(
            msg.starts_with(&format!(
                "spec.signature: signed by {beta}, but the member's wallet is {}",
                d.wallet.as_str()
            )),
            "{msg}"
        );
        assert!(
            msg.contains("the member stays priced by the offer accepted at generation"),
            "{msg}"
        );
        assert_eq!(kept.as_ref().and_then(|k| k.nonce), Some(n1));
        assert_eq!(min_price(&c).await.as_deref(), Some("1.10"));

        // A new signed price: accepted; the next job pays it, with the new proof.
        let (second, n2) = body("2.00", Some((accounts::ALPHA.0, &d, now_ms(), Some(n1))));
        let n2 = n2.unwrap();
        apply(&c, &second).await;
        verdict(&c, generation(&c).await, "Accepted").await;
        wait_min_price(&c, "2.00").await;
        let (price, proof) = placed(&c, "j-2").await;
        assert_eq!(price, "2.00");
        let proof = proof.unwrap();
        assert_eq!(proof.nonce, Some(n2));
        assert_eq!(signer_of(&proof, &d).0, alpha);

        // The first signed offer again (a replay of the cheaper price): refused by its nonce.
        apply(&c, &first).await;
        let (msg, kept) = verdict(&c, generation(&c).await, "NonceReused").await;
        assert!(
            msg.starts_with(&format!("spec.nonce: {n1} is not above the accepted {n2}")),
            "{msg}"
        );
        assert_eq!(kept.and_then(|k| k.nonce), Some(n2));

        // Signed by the wallet, but expired an hour ago.
        let (stale, _) = body(
            "0.50",
            Some((accounts::ALPHA.0, &d, now_ms() - 2 * 3_600_000, Some(n2))),
        );
        apply(&c, &stale).await;
        let (msg, _) = verdict(&c, generation(&c).await, "Expired").await;
        assert!(
            msg.starts_with("spec.expires: the offer expired at"),
            "{msg}"
        );
        assert_eq!(min_price(&c).await.as_deref(), Some("2.00"));
        let (price, proof) = placed(&c, "j-3").await;
        assert_eq!(price, "2.00");
        assert_eq!(proof.unwrap().nonce, Some(n2));
    });
}

/// The job's explanation once it contains `text`.
async fn explained(c: &Client, name: &str, text: &str) -> String {
    let j = wait_job(c, "team-a", name, T, text, |j| {
        j.status
            .as_ref()
            .and_then(|s| s.explanation.as_deref())
            .is_some_and(|e| e.contains(text))
    })
    .await
    .unwrap();
    j.status.unwrap().explanation.unwrap()
}

#[test]
fn an_offers_gpu_count_and_job_lengths_bound_what_is_placed_on_the_member() {
    run_test(HARD_DEADLINE, || async {
        let (m, d) = market_with_domain("offer-limits").await;
        let c = m.hub.client();
        // alpha (8 H100s) offers 2 of them, for jobs of 30 minutes to 2 hours, signed.
        let prices = [parse_offer("H100=1.10,gpus=2,minDuration=30m,maxDuration=2h").unwrap()];
        let key = PrivateKeySigner::from_str(accounts::ALPHA.0).unwrap();
        let s = sign(&key, &d, "alpha", &prices, HOUR, now_ms(), None).unwrap();
        apply(&c, &apply_body("alpha", &prices, Some(&s))).await;
        let (_, accepted) = verdict(&c, generation(&c).await, "Accepted").await;
        assert_eq!(accepted.unwrap().prices, prices);
        wait_min_price(&c, "1.10").await;

        // A 3-hour job is outside the offer's lengths.
        market::submit_with(
            &c,
            "team-a",
            "long",
            "H100",
            1,
            "3.60",
            json!({"maxDuration": "3h"}),
        )
        .await
        .unwrap();
        let e = explained(&c, "long", "H100 offered for jobs of 30m to 2h, not 3h").await;
        assert!(e.starts_with("0/1 clusters fit"), "{e}");

        // Two one-hour one-GPU jobs take the two GPUs offered; a third waits for one of them.
        for name in ["a-1", "a-2"] {
            let (price, proof) = placed(&c, name).await;
            assert_eq!(price, "1.10");
            assert!(proof.is_some());
        }
        market::submit(&c, "team-a", "a-3", "H100", 1, "3.60")
            .await
            .unwrap();
        explained(&c, "a-3", "0 free GPUs, needs 1").await;
        // a-1 ends: its GPU is offered again and a-3 is placed.
        market::finish(&c, "alpha", "a-1", 60).await.unwrap();
        wait_job(&c, "team-a", "a-3", T, "placed after a-1 ended", |j| {
            j.status.as_ref().is_some_and(|s| !s.attempts.is_empty())
        })
        .await
        .unwrap();
        // The long job still waits, for its length.
        let long: ComputeJob = Api::namespaced(c.clone(), "team-a")
            .get("long")
            .await
            .unwrap();
        assert!(long.status.unwrap().attempts.is_empty());
    });
}
