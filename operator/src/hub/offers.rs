//! The hub's check of members' Offers (ADR 0024). In a pool that pays on a chain an Offer counts
//! only if the member's wallet signed it (EIP-712, `gpufed_crds::offer::typed`), it has not
//! expired, and its nonce is above the last accepted one. The verdict goes into the Offer's
//! status (condition `Accepted`, and `status.accepted`, the offer accepted last); the scheduler
//! and the pool roll-up price the member by `status.accepted` while it is usable
//! ([`usable`]), so a refused update leaves the member at its last accepted prices rather than
//! off the market. In a pool without a chain there is no wallet: the Offer is accepted as the
//! member's own credential wrote it.
//!
//! Verdicts are pure functions; [`run`] applies them to every Offer in the hub's cache when an
//! Offer changes, and every [`RECHECK_EVERY`] for expiries and changed wallets.

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::Address;
use gpufed_crds::conditions::{self, status_str};
use gpufed_crds::naming::member_of_namespace;
use gpufed_crds::offer::{ACCEPTED, typed};
use gpufed_crds::{
    EvmAddress, GpuPool, MemberCluster, Offer, OfferSigning, OfferStatus, SignedOffer,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};

use crate::hub::context::{Context, MANAGER, now};

/// How often every Offer is checked again without a change (expiries, wallets, pools).
pub const RECHECK_EVERY: Duration = Duration::from_secs(5);

/// How the offers of a member of `pool` must be signed.
#[derive(Clone, Debug, PartialEq)]
pub enum Signing {
    /// The pool has no chain: offers are not signed.
    Unsigned,
    /// Signed by `wallet` in this domain.
    Signed(OfferSigning),
    /// The pool pays on a chain but the member has no wallet to sign with.
    NoWallet,
}

/// How member `member` of `pool` signs its offers.
pub fn signing(pool: &GpuPool, member: &MemberCluster) -> Signing {
    let Some(chain) = pool.spec.chain.as_ref() else {
        return Signing::Unsigned;
    };
    let Some(wallet) = member.spec.wallet.clone() else {
        return Signing::NoWallet;
    };
    Signing::Signed(OfferSigning {
        pool: pool.name_any(),
        chain_id: chain.chain_id,
        verifying_contract: chain.bond.clone().unwrap_or_else(|| chain.escrow.clone()),
        wallet,
    })
}

/// The hub's verdict on an Offer's spec.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Used from now on.
    Accept(SignedOffer),
    /// Not used: a reason (one word) and a message naming the field and the fix.
    Refuse {
        /// `Unsigned`, `BadSignature`, `WrongSigner`, `Expired`, `NonceReused`, `NoWallet`.
        reason: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
}

fn refuse(reason: &'static str, message: String) -> Verdict {
    Verdict::Refuse { reason, message }
}

fn address(a: &EvmAddress) -> Address {
    Address::from(a.to_bytes())
}

/// The verdict on `offer` of member `cluster` signed as `signing` says, the offer accepted last
/// being `previous`, at `now_secs` (Unix seconds).
pub fn verdict(
    offer: &Offer,
    cluster: &str,
    signing: &Signing,
    previous: Option<&SignedOffer>,
    now_secs: i64,
) -> Verdict {
    let spec = &offer.spec;
    let generation = offer.metadata.generation;
    if let Some(expires) = spec
        .expires
        .as_ref()
        .filter(|e| gpufed_crds::offer::expired(Some(e), now_secs))
    {
        return refuse(
            "Expired",
            format!(
                "spec.expires: the offer expired at {}; sign it again with a later expiry",
                expires.0
            ),
        );
    }
    let d = match signing {
        Signing::Unsigned => {
            return Verdict::Accept(SignedOffer {
                prices: spec.prices.clone(),
                nonce: spec.nonce,
                expires: spec.expires.clone(),
                digest: None,
                signature: None,
                signer: None,
                generation,
            });
        }
        Signing::NoWallet => {
            return refuse(
                "NoWallet",
                "the pool pays on a chain and the member has no spec.wallet to sign its offer \
                 with: ask the pool admin to set the member's wallet"
                    .into(),
            );
        }
        Signing::Signed(d) => d,
    };
    let (Some(signature), Some(nonce), Some(expires)) =
        (spec.signature.as_deref(), spec.nonce, spec.expires.as_ref())
    else {
        return refuse(
            "Unsigned",
            format!(
                "spec.signature: missing; pool {} pays on chain {}, so the offer must carry a \
                 nonce, an expiry and the signature of the member's wallet {} (EIP-712 domain \
                 gpufed/1, verifying contract {}): set offer.signingKeySecret in the member chart \
                 and the agent signs it",
                d.pool, d.chain_id, d.wallet, d.verifying_contract
            ),
        );
    };
    let fields = typed::OfferFields {
        pool: &d.pool,
        cluster,
        prices: &spec.prices,
        nonce,
        expires: u64::try_from(expires.0.as_second()).unwrap_or(0),
    };
    let (signer, digest) = match typed::signer(
        &fields,
        signature,
        d.chain_id,
        address(&d.verifying_contract),
    ) {
        Ok(s) => s,
        Err(e) => return refuse("BadSignature", format!("spec.signature: {e}")),
    };
    if signer != address(&d.wallet) {
        return refuse(
            "WrongSigner",
            format!(
                "spec.signature: signed by {signer}, but the member's wallet is {}: sign the \
                 offer with the key of the member's spec.wallet (pool {}, chain {}, verifying \
                 contract {})",
                d.wallet, d.pool, d.chain_id, d.verifying_contract
            ),
        );
    }
    let digest = format!("{digest}");
    if let Some(prev) = previous.filter(|p| p.digest.as_deref() != Some(digest.as_str()))
        && let Some(accepted) = prev.nonce
        && nonce <= accepted
    {
        return refuse(
            "NonceReused",
            format!(
                "spec.nonce: {nonce} is not above the accepted {accepted}: an older signed \
                 offer cannot be replayed; sign the new prices with a higher nonce"
            ),
        );
    }
    Verdict::Accept(SignedOffer {
        prices: spec.prices.clone(),
        nonce: Some(nonce),
        expires: Some(expires.clone()),
        digest: Some(digest),
        signature: Some(signature.to_string()),
        signer: Some(d.wallet.clone()),
        generation,
    })
}

/// Whether the member may be priced by `accepted` now: not expired, and signed by the member's
/// wallet where the pool needs a signature.
pub fn usable(accepted: &SignedOffer, signing: &Signing, now_secs: i64) -> bool {
    if accepted.expired_at(now_secs) {
        return false;
    }
    match signing {
        Signing::Unsigned => true,
        Signing::Signed(d) => accepted.signer.as_ref() == Some(&d.wallet),
        Signing::NoWallet => false,
    }
}

/// The Offer's next status from `verdict`, keeping the previous accepted offer (while still
/// usable) when the new spec is refused.
pub fn next_status(
    previous: Option<&OfferStatus>,
    verdict: Verdict,
    signing: &Signing,
    generation: Option<i64>,
    now_secs: i64,
    at: Time,
) -> OfferStatus {
    let mut conds = previous.map(|s| s.conditions.clone()).unwrap_or_default();
    let kept = previous
        .and_then(|s| s.accepted.clone())
        .filter(|a| usable(a, signing, now_secs));
    let (accepted, ok, reason, message) = match verdict {
        Verdict::Accept(offer) => {
            let message = match (&offer.nonce, &offer.signer) {
                (Some(n), Some(w)) => format!("signed by the member's wallet {w}, nonce {n}"),
                _ => "accepted as written (the pool has no chain to sign for)".to_string(),
            };
            (Some(offer), true, "Accepted", message)
        }
        Verdict::Refuse { reason, message } => {
            let priced = match &kept {
                Some(a) => format!(
                    "the member stays priced by the offer accepted at generation {}{}",
                    a.generation.unwrap_or_default(),
                    a.expires
                        .as_ref()
                        .map(|t| format!(" until {}", t.0))
                        .unwrap_or_default()
                ),
                None => "the member is priced by MemberCluster.spec.prices".to_string(),
            };
            (kept, false, reason, format!("{message}; {priced}"))
        }
    };
    conditions::set_condition(
        &mut conds,
        conditions::condition(ACCEPTED, ok, reason, message, generation, at),
    );
    OfferStatus {
        conditions: conds,
        accepted,
    }
}

/// Whether `a` and `b` differ in more than the conditions' transition times.
fn differs(a: Option<&OfferStatus>, b: &OfferStatus) -> bool {
    let Some(a) = a else {
        return true;
    };
    let key = |s: &OfferStatus| {
        s.conditions
            .iter()
            .map(|c| {
                (
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.message.clone(),
                    c.observed_generation,
                )
            })
            .collect::<Vec<_>>()
    };
    a.accepted != b.accepted || key(a) != key(b)
}

/// Checks every Offer in the cache and writes the statuses that changed.
async fn check_all(ctx: &Context) {
    let at = now();
    let now_secs = at.0.as_second();
    for offer in ctx.stores.offers.state() {
        let Some(ns) = offer.namespace() else {
            continue;
        };
        let Some(cluster) = member_of_namespace(&ns) else {
            continue;
        };
        let Some(member) = ctx.stores.member(cluster) else {
            continue;
        };
        let signing = ctx.stores.signing(&member);
        let previous = offer.status.as_ref();
        let v = verdict(
            &offer,
            cluster,
            &signing,
            previous.and_then(|s| s.accepted.as_ref()),
            now_secs,
        );
        let next = next_status(
            previous,
            v,
            &signing,
            offer.metadata.generation,
            now_secs,
            at.clone(),
        );
        if !differs(previous, &next) {
            continue;
        }
        write(ctx, &offer, &ns, cluster, &next).await;
    }
}

async fn write(ctx: &Context, offer: &Offer, ns: &str, cluster: &str, next: &OfferStatus) {
    let ok = next
        .conditions
        .iter()
        .find(|c| c.type_ == ACCEPTED)
        .map(|c| {
            (
                c.status == status_str(true),
                c.reason.clone(),
                c.message.clone(),
            )
        });
    let body = serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1",
        "kind": "Offer",
        "metadata": {"name": offer.name_any(), "namespace": ns},
        "status": next,
    });
    match Api::<Offer>::namespaced(ctx.client.clone(), ns)
        .patch_status(
            &offer.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
    {
        Ok(_) => {
            if let Some((accepted, reason, message)) = ok {
                if accepted {
                    tracing::info!(member = %cluster, %message, "offer accepted");
                } else {
                    tracing::warn!(member = %cluster, %reason, %message, "offer refused");
                }
                ctx.event(offer, !accepted, &reason, "CheckOffer", message);
            }
        }
        Err(e) => {
            tracing::warn!(member = %cluster, error = %e, "could not write the offer's status; retrying");
        }
    }
}

/// Runs until the task is dropped: checks every Offer when one changes (`changed` is notified by
/// the Offer cache) and every [`RECHECK_EVERY`].
pub async fn run(ctx: Arc<Context>, changed: Arc<tokio::sync::Notify>) {
    loop {
        check_all(&ctx).await;
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(RECHECK_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use alloy::signers::local::PrivateKeySigner;

    use super::*;
    use crate::agent::offer::{apply_body, parse_offer, sign};

    const NOW: i64 = 1_700_000_000;

    fn domain(wallet: &PrivateKeySigner) -> OfferSigning {
        gpufed_crds::testing::offer_signing(&wallet.address().to_string())
    }

    /// Alpha's Offer of H100 at `price`, signed by `key` in `d` at `now_ms` after `last`.
    fn signed_offer(
        key: &PrivateKeySigner,
        d: &OfferSigning,
        price: &str,
        now_ms: u64,
        last: Option<u64>,
    ) -> Offer {
        let prices = [parse_offer(&format!("H100={price}")).unwrap()];
        let s = sign(
            key,
            d,
            "alpha",
            &prices,
            Duration::from_secs(3600),
            now_ms,
            last,
        )
        .unwrap();
        let mut o: Offer = serde_json::from_value(apply_body("alpha", &prices, Some(&s))).unwrap();
        o.metadata.generation = Some(1);
        o
    }

    fn accepted(v: Verdict) -> SignedOffer {
        match v {
            Verdict::Accept(a) => a,
            Verdict::Refuse { reason, message } => panic!("refused: {reason}: {message}"),
        }
    }

    fn refused(v: Verdict) -> (&'static str, String) {
        match v {
            Verdict::Accept(a) => panic!("accepted: {a:?}"),
            Verdict::Refuse { reason, message } => (reason, message),
        }
    }

    #[test]
    fn an_offer_signed_by_the_members_wallet_is_accepted_with_its_proof() {
        let key = PrivateKeySigner::random();
        let d = domain(&key);
        let o = signed_offer(&key, &d, "1.10", NOW as u64 * 1000, None);
        let a = accepted(verdict(&o, "alpha", &Signing::Signed(d.clone()), None, NOW));
        assert_eq!(a.signer.as_ref(), Some(&d.wallet));
        assert_eq!(a.nonce, o.spec.nonce);
        assert_eq!(a.signature, o.spec.signature);
        // The digest is what the signature recovers from.
        let fields = typed::OfferFields {
            pool: "default",
            cluster: "alpha",
            prices: &a.prices,
            nonce: a.nonce.unwrap(),
            expires: a.expires.as_ref().unwrap().0.as_second() as u64,
        };
        let verifying = address(&d.verifying_contract);
        assert_eq!(
            a.digest.as_deref(),
            Some(format!("{}", typed::signing_hash(&fields, 31337, verifying)).as_str())
        );
        // The same offer checked again (a hub restart) is still accepted: not a replay.
        accepted(verdict(&o, "alpha", &Signing::Signed(d), Some(&a), NOW));
    }

    #[test]
    fn every_bad_offer_is_refused_naming_the_field_and_the_fix() {
        let key = PrivateKeySigner::random();
        let d = domain(&key);
        let signing = Signing::Signed(d.clone());
        let first = signed_offer(&key, &d, "1.10", NOW as u64 * 1000, None);
        let prev = accepted(verdict(&first, "alpha", &signing, None, NOW));

        let mut unsigned = first.clone();
        unsigned.spec.signature = None;
        let (r, m) = refused(verdict(&unsigned, "alpha", &signing, None, NOW));
        assert_eq!(r, "Unsigned");
        assert!(
            m.starts_with("spec.signature: missing") && m.contains("offer.signingKeySecret"),
            "{m}"
        );

        let thief = PrivateKeySigner::random();
        let forged = signed_offer(&thief, &d, "0.10", NOW as u64 * 1000 + 5, Some(0));
        let (r, m) = refused(verdict(&forged, "alpha", &signing, Some(&prev), NOW));
        assert_eq!(r, "WrongSigner");
        assert!(
            m.contains(&thief.address().to_string()) && m.contains(d.wallet.as_str()),
            "{m}"
        );

        // Signed for another member: the hub checks it as alpha's, so the signer differs.
        let mut elsewhere = first.clone();
        elsewhere.spec.prices[0].price_per_gpu_hour = "0.01".parse().unwrap();
        assert_eq!(
            refused(verdict(&elsewhere, "alpha", &signing, None, NOW)).0,
            "WrongSigner"
        );

        let mut garbage = first.clone();
        garbage.spec.signature = Some(format!("0x{}", "00".repeat(65)));
        let (r, m) = refused(verdict(&garbage, "alpha", &signing, None, NOW));
        assert_eq!(r, "BadSignature");
        assert!(m.starts_with("spec.signature: "), "{m}");

        let (r, m) = refused(verdict(&first, "alpha", &signing, None, NOW + 3600));
        assert_eq!(r, "Expired");
        assert!(m.starts_with("spec.expires: the offer expired at"), "{m}");

        // A newer offer was accepted: the older one cannot come back.
        let newer = signed_offer(&key, &d, "2.00", NOW as u64 * 1000 + 9, prev.nonce);
        let newer_accepted = accepted(verdict(&newer, "alpha", &signing, Some(&prev), NOW));
        let (r, m) = refused(verdict(
            &first,
            "alpha",
            &signing,
            Some(&newer_accepted),
            NOW,
        ));
        assert_eq!(r, "NonceReused");
        assert!(
            m.starts_with(&format!(
                "spec.nonce: {} is not above the accepted {}",
                prev.nonce.unwrap(),
                newer_accepted.nonce.unwrap()
            )),
            "{m}"
        );

        assert_eq!(
            refused(verdict(&first, "alpha", &Signing::NoWallet, None, NOW)).0,
            "NoWallet"
        );
    }

    #[test]
    fn a_refused_update_keeps_the_last_accepted_offer_while_it_is_usable() {
        let key = PrivateKeySigner::random();
        let d = domain(&key);
        let signing = Signing::Signed(d.clone());
        let at = |s: i64| Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap());
        let first = signed_offer(&key, &d, "1.10", NOW as u64 * 1000, None);
        let v = verdict(&first, "alpha", &signing, None, NOW);
        let st = next_status(None, v, &signing, Some(1), NOW, at(NOW));
        let a = st.accepted.clone().unwrap();
        assert_eq!(st.conditions[0].status, "True");

        let mut unsigned = first.clone();
        unsigned.spec.signature = None;
        let v = verdict(&unsigned, "alpha", &signing, Some(&a), NOW + 1);
        let st2 = next_status(Some(&st), v, &signing, Some(2), NOW + 1, at(NOW + 1));
        assert_eq!(st2.accepted.as_ref(), Some(&a));
        assert_eq!(st2.conditions[0].status, "False");
        assert_eq!(st2.conditions[0].reason, "Unsigned");
        assert!(
            st2.conditions[0]
                .message
                .contains("stays priced by the offer accepted at generation 1 until")
        );
        assert!(differs(Some(&st), &st2));
        assert!(!differs(Some(&st2), &st2.clone()));

        // Once expired, the kept offer goes and the admin's prices apply.
        let v = verdict(&unsigned, "alpha", &signing, Some(&a), NOW + 3600);
        let st3 = next_status(Some(&st2), v, &signing, Some(2), NOW + 3600, at(NOW + 3600));
        assert_eq!(st3.accepted, None);
        assert!(
            st3.conditions[0]
                .message
                .ends_with("the member is priced by MemberCluster.spec.prices")
        );

        // A wallet change drops an offer signed by the old one.
        let other = Signing::Signed(domain(&PrivateKeySigner::random()));
        assert!(!usable(&a, &other, NOW));
        assert!(usable(&a, &signing, NOW));
    }

    #[test]
    fn a_pool_without_a_chain_accepts_the_offer_as_written() {
        let mut pool = gpufed_crds::testing::pool("default");
        let member = gpufed_crds::testing::member("alpha", "H100", "2.40").build();
        assert_eq!(signing(&pool, &member), Signing::Unsigned);
        let o: Offer = serde_json::from_value(apply_body(
            "alpha",
            &[parse_offer("H100=1.10").unwrap()],
            None,
        ))
        .unwrap();
        let a = accepted(verdict(&o, "alpha", &Signing::Unsigned, None, NOW));
        assert_eq!((a.signature, a.signer, a.digest), (None, None, None));
        // With a chain, the member's wallet signs in the bond contract's domain.
        pool.spec.chain = Some(
            serde_json::from_value(serde_json::json!({
                "rpcUrl": "http://127.0.0.1:8545", "chainId": 31337,
                "token": "0x00000000000000000000000000000000000000a1",
                "escrow": "0x00000000000000000000000000000000000000a2",
                "bond": "0x00000000000000000000000000000000000000a3",
                "hubKeySecretRef": {"namespace": "gpufed-system", "name": "k", "key": "k"}
            }))
            .unwrap(),
        );
        assert_eq!(signing(&pool, &member), Signing::NoWallet);
        let mut paid = member.clone();
        paid.spec.wallet = Some(
            "0x00000000000000000000000000000000000000cc"
                .parse()
                .unwrap(),
        );
        let Signing::Signed(d) = signing(&pool, &paid) else {
            panic!("not signed");
        };
        assert_eq!(
            d.verifying_contract.as_str(),
            "0x00000000000000000000000000000000000000a3"
        );
        assert_eq!((d.pool.as_str(), d.chain_id), ("default", 31337));
    }
}
