#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use alloy::signers::SignerSync as _;
use alloy::signers::local::PrivateKeySigner;
use gpufed_crds::{Admission, ChainSpec, ModelPrice, SecretKeyRef, Verification};

use super::*;

const NOW: u64 = 1_700_000_000;

fn open_pool() -> GpuPool {
    let addr = |b: u8| -> EvmAddress { Address::repeat_byte(b).to_string().parse().unwrap() };
    let mut p = gpufed_crds::testing::pool("p");
    p.spec.admission = Admission::Open;
    p.spec.min_bond = Some("100".parse().unwrap());
    p.spec.chain = Some(ChainSpec {
        rpc_url: "http://127.0.0.1:8545".into(),
        chain_id: 31337,
        token: addr(1),
        escrow: addr(2),
        bond: Some(addr(3)),
        hub_key_secret_ref: SecretKeyRef {
            namespace: "gpufed-system".into(),
            name: "k".into(),
            key: "k".into(),
        },
        lock_grace: "1h".parse().unwrap(),
        tx_timeout: "60s".parse().unwrap(),
        confirmations: 1,
        log_block_range: 5000,
    });
    p.spec.verification = Some(
        serde_json::from_value::<Verification>(
            serde_json::json!({"required": true, "image": "probe:1", "backend": "Cpu"}),
        )
        .unwrap(),
    );
    p
}

fn signed(key: &PrivateKeySigner, f: impl FnOnce(&mut JoinRequestBody)) -> JoinRequestBody {
    let pool = check_pool("p", Some(&open_pool())).unwrap();
    let mut b = JoinRequestBody {
        pool: "p".into(),
        cluster: "alpha".into(),
        region: "eu-west".into(),
        prices: vec![ModelPrice::new("H100", "2.40".parse().unwrap())],
        nonce: 1,
        expires: NOW + 300,
        wallet: key.address().to_string().parse().unwrap(),
        signature: String::new(),
    };
    f(&mut b);
    let sig = key
        .sign_hash_sync(&typed::signing_hash(&b, pool.chain_id, pool.bond))
        .unwrap();
    b.signature = format!("0x{}", alloy::hex::encode(sig.as_bytes()));
    b
}

#[test]
fn an_honest_request_passes_every_check_and_makes_a_labelled_member() {
    let key = PrivateKeySigner::random();
    let b = signed(&key, |_| {});
    check_shape(&b).unwrap();
    check_expiry(b.expires, NOW).unwrap();
    let pool = check_pool("p", Some(&open_pool())).unwrap();
    let digest = check_signature(&b, &pool).unwrap();
    assert!(!ReplayGuard::default().seen(&digest, NOW));
    assert_eq!(check_name(&b, &digest, None).unwrap(), Existing::None);
    check_bond(&b.wallet, "100".parse().unwrap(), "p", &pool, 0).unwrap();
    let m = member(&b, &digest);
    assert_eq!(m.name_any(), "alpha");
    assert_eq!(m.spec.wallet.as_ref(), Some(&b.wallet));
    assert_eq!(m.labels().get(LABEL_ADMISSION).unwrap(), ADMISSION_OPEN);
    assert_eq!(
        m.annotations().get(ANNOTATION_JOIN_REQUEST).unwrap(),
        &digest.to_string()
    );
}

#[test]
fn a_signature_by_another_key_is_refused_naming_both_addresses() {
    let key = PrivateKeySigner::random();
    let thief = PrivateKeySigner::random();
    // The thief signs a request that claims the victim's (bonded) wallet.
    let b = signed(&thief, |b| {
        b.wallet = key.address().to_string().parse().unwrap()
    });
    let pool = check_pool("p", Some(&open_pool())).unwrap();
    let err = check_signature(&b, &pool).unwrap_err();
    assert_eq!((err.status(), err.reason()), (401, "BadSignature"));
    let msg = err.to_string();
    assert!(msg.contains(&thief.address().to_string()), "{msg}");
    assert!(msg.contains(&key.address().to_string()), "{msg}");
    // A field changed after signing is the same refusal.
    let mut b = signed(&key, |_| {});
    b.region = "us-east".into();
    assert_eq!(
        check_signature(&b, &pool).unwrap_err().reason(),
        "BadSignature"
    );
    b.signature = "0xdead".into();
    assert_eq!(
        check_signature(&b, &pool).unwrap_err().reason(),
        "BadSignature"
    );
}

#[test]
fn expired_and_too_far_requests_are_refused() {
    let err = check_expiry(NOW, NOW).unwrap_err();
    assert_eq!((err.status(), err.reason()), (400, "Expired"));
    assert!(err.to_string().contains("sign a new one"), "{err}");
    let err = check_expiry(NOW + MAX_EXPIRY_AHEAD_SECS + 1, NOW).unwrap_err();
    assert_eq!(err.reason(), "ExpiryTooFar");
    check_expiry(NOW + MAX_EXPIRY_AHEAD_SECS, NOW).unwrap();
}

#[test]
fn a_request_used_once_is_refused_as_replayed_until_it_expires() {
    let key = PrivateKeySigner::random();
    let b = signed(&key, |_| {});
    let pool = check_pool("p", Some(&open_pool())).unwrap();
    let digest = check_signature(&b, &pool).unwrap();
    let mut guard = ReplayGuard::default();
    guard.record(digest, b.expires);
    assert!(guard.seen(&digest, NOW));
    assert!(!guard.seen(&digest, b.expires), "forgotten once expired");
    // The member it created carries the digest: replaying it is Replayed, not NameTaken.
    let created = member(&b, &digest);
    let err = check_name(&b, &digest, Some(&created)).unwrap_err();
    assert_eq!((err.status(), err.reason()), (409, "Replayed"));
    // A fresh request of the same wallet re-issues its own member's credential.
    let again = signed(&key, |b| b.nonce = 2);
    let d2 = check_signature(&again, &pool).unwrap();
    assert_eq!(
        check_name(&again, &d2, Some(&created)).unwrap(),
        Existing::OwnMember
    );
}

#[test]
fn a_name_held_by_another_wallet_or_the_admin_is_taken() {
    let pool = check_pool("p", Some(&open_pool())).unwrap();
    let owner = PrivateKeySigner::random();
    let first = signed(&owner, |_| {});
    let created = member(&first, &check_signature(&first, &pool).unwrap());
    let other = signed(&PrivateKeySigner::random(), |_| {});
    let d = check_signature(&other, &pool).unwrap();
    let err = check_name(&other, &d, Some(&created)).unwrap_err();
    assert_eq!((err.status(), err.reason()), (409, "NameTaken"));
    assert!(err.to_string().contains("choose another name"), "{err}");
    // An admin-made member of the same name, even with the same wallet, is not taken over.
    let admin_made = gpufed_crds::testing::member("alpha", "H100", "2.00").build();
    let mine = signed(&owner, |b| b.nonce = 3);
    let d = check_signature(&mine, &pool).unwrap();
    assert_eq!(
        check_name(&mine, &d, Some(&admin_made))
            .unwrap_err()
            .reason(),
        "NameTaken"
    );
}

#[test]
fn a_bond_below_min_bond_per_member_is_refused_saying_how_much_more() {
    let key = PrivateKeySigner::random();
    let b = signed(&key, |_| {});
    let pool = check_pool("p", Some(&open_pool())).unwrap();
    let err = check_bond(&b.wallet, "40".parse().unwrap(), "p", &pool, 0).unwrap_err();
    assert_eq!((err.status(), err.reason()), (402, "InsufficientBond"));
    assert!(err.to_string().contains("stake 60.00 more"), "{err}");
    // One stake backs floor(bonded / minBond) members: a second name needs 200.
    check_bond(&b.wallet, "150".parse().unwrap(), "p", &pool, 0).unwrap();
    let err = check_bond(&b.wallet, "150".parse().unwrap(), "p", &pool, 1).unwrap_err();
    assert!(err.to_string().contains("stake 50.00 more"), "{err}");
}

#[test]
fn only_an_existing_open_pool_admits() {
    assert_eq!(check_pool("q", None).unwrap_err().reason(), "UnknownPool");
    let mut approved = open_pool();
    approved.spec.admission = Admission::Approved;
    let err = check_pool("p", Some(&approved)).unwrap_err();
    assert_eq!((err.status(), err.reason()), (403, "PoolNotOpen"));
    assert!(
        err.to_string().contains("spec.admission: Approved"),
        "{err}"
    );
    let mut no_bond = open_pool();
    no_bond.spec.chain.as_mut().unwrap().bond = None;
    assert!(
        check_pool("p", Some(&no_bond))
            .unwrap_err()
            .to_string()
            .contains("spec.chain.bond")
    );
}

#[test]
fn malformed_fields_are_refused_before_anything_else() {
    let key = PrivateKeySigner::random();
    for (f, want) in [
        (
            (|b: &mut JoinRequestBody| b.cluster = "Alpha!".into()) as fn(&mut JoinRequestBody),
            "cluster \"Alpha!\"",
        ),
        (|b| b.cluster = "a".repeat(50), "at most 49"),
        (|b| b.region = "".into(), "region"),
        (|b| b.prices.clear(), "between 1 and 32"),
        (|b| b.prices.push(b.prices[0].clone()), "listed twice"),
    ] {
        let err = check_shape(&signed(&key, f)).unwrap_err();
        assert_eq!(err.reason(), "Malformed");
        assert!(err.to_string().contains(want), "{err}");
    }
}

fn leave(key: &PrivateKeySigner, f: impl FnOnce(&mut LeaveRequestBody)) -> LeaveRequestBody {
    let pool = check_pool("p", Some(&open_pool())).unwrap();
    let mut b = LeaveRequestBody {
        pool: "p".into(),
        cluster: "alpha".into(),
        nonce: 2,
        expires: NOW + 300,
        wallet: key.address().to_string().parse().unwrap(),
        signature: String::new(),
    };
    f(&mut b);
    let sig = key
        .sign_hash_sync(&typed::leave_signing_hash(&b, pool.chain_id, pool.bond))
        .unwrap();
    b.signature = format!("0x{}", alloy::hex::encode(sig.as_bytes()));
    b
}

#[test]
fn the_member_s_own_wallet_may_leave_and_nobody_else() {
    let pool = check_pool("p", Some(&open_pool())).unwrap();
    let owner = PrivateKeySigner::random();
    let joined = signed(&owner, |_| {});
    let alpha = member(&joined, &check_signature(&joined, &pool).unwrap());

    let ok = leave(&owner, |_| {});
    check_leave_shape(&ok).unwrap();
    let id = check_leave_signature(&ok, &pool).unwrap();
    check_leaver(&ok, &id, Some(&alpha)).unwrap();

    // Another wallet signing for itself: a valid signature, but not the member's wallet.
    let stranger = PrivateKeySigner::random();
    let theirs = leave(&stranger, |_| {});
    let id = check_leave_signature(&theirs, &pool).unwrap();
    let err = check_leaver(&theirs, &id, Some(&alpha)).unwrap_err();
    assert_eq!((err.status(), err.reason()), (403, "NotYourMember"));
    assert!(
        err.to_string()
            .contains("sign with the member's own wallet"),
        "{err}"
    );

    // Another wallet claiming the owner's: the signature says who signed.
    let mut claimed = leave(&stranger, |_| {});
    claimed.wallet = ok.wallet.clone();
    let err = check_leave_signature(&claimed, &pool).unwrap_err();
    assert_eq!(err.reason(), "BadSignature");

    // The owner's join signature over the same names is no leave request.
    let mut from_join = ok.clone();
    from_join.signature = joined.signature.clone();
    assert_eq!(
        check_leave_signature(&from_join, &pool)
            .unwrap_err()
            .reason(),
        "BadSignature"
    );

    // The wrong pool, an unknown member, an admin-made member, a replay.
    let other_pool = leave(&owner, |b| b.pool = "q".into());
    let id = check_leave_signature(&other_pool, &pool).unwrap();
    assert_eq!(
        check_leaver(&other_pool, &id, Some(&alpha))
            .unwrap_err()
            .reason(),
        "NotYourMember"
    );
    let id = check_leave_signature(&ok, &pool).unwrap();
    let err = check_leaver(&ok, &id, None).unwrap_err();
    assert_eq!((err.status(), err.reason()), (404, "UnknownMember"));
    let mut admin_made = alpha.clone();
    admin_made.metadata.labels = None;
    let err = check_leaver(&ok, &id, Some(&admin_made)).unwrap_err();
    assert_eq!((err.status(), err.reason()), (401, "Unauthorized"));
    assert!(err.to_string().contains("pool admin"), "{err}");
    let mut leaving = alpha.clone();
    leaving
        .annotations_mut()
        .insert(ANNOTATION_LEAVE_REQUEST.into(), id.to_string());
    assert_eq!(
        check_leaver(&ok, &id, Some(&leaving)).unwrap_err().reason(),
        "Replayed"
    );
    // A new request (new nonce) for a member already leaving is answered again.
    let again = leave(&owner, |b| b.nonce = 3);
    let id = check_leave_signature(&again, &pool).unwrap();
    check_leaver(&again, &id, Some(&leaving)).unwrap();

    let bad = leave(&owner, |b| b.cluster = "Alpha_1".into());
    assert_eq!(check_leave_shape(&bad).unwrap_err().reason(), "Malformed");
}
