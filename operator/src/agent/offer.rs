//! Publishes the provider's own prices (ADR 0024): the agent applies the `Offer` named `offer` in
//! its member namespace on the hub from `--offer MODEL=PRICE` (the member chart's `offer.prices`),
//! with its own hub credential. Without `--offer` it publishes nothing and the admin's
//! `MemberCluster.spec.prices` apply. It applies again every [`REPUBLISH_EVERY`], so an Offer that
//! was deleted or edited by hand comes back as the owner's values say.
//!
//! With `--offer-signing-key-file` (the chart's `offer.signingKeySecret`) the Offer is signed by
//! the member's wallet, as pools that pay on a chain require: EIP-712 typed data
//! (`gpufed_crds::offer::typed`) in the domain the hub publishes in the member's
//! `status.offerSigning`, with a nonce above every earlier one (Unix milliseconds when signed) and
//! an expiry `--offer-valid-for` ahead. The same signed Offer is applied again until half its
//! validity has passed or the domain changes; then it is signed anew. Until the hub has published
//! a domain (or in a pool without a chain, where it never does) the Offer goes out unsigned.

use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use alloy::primitives::Address;
use alloy::signers::SignerSync as _;
use alloy::signers::local::PrivateKeySigner;
use gpufed_crds::naming::member_namespace;
use gpufed_crds::offer::typed;
use gpufed_crds::{ModelPrice, OFFER_NAME, Offer, OfferSigning};
use kube::api::{Api, Patch, PatchParams};

use crate::agent::api::{API_TIMEOUT, FIELD_MANAGER, timed};
use crate::error::{Error, Result};

/// How often the Offer is applied again while the agent runs.
pub const REPUBLISH_EVERY: Duration = Duration::from_secs(60);
/// How soon the agent looks again for the signing domain while the hub has not published one.
pub const DOMAIN_RETRY: Duration = Duration::from_secs(5);

/// Parses one `--offer` value, `MODEL=PRICE[,gpus=N][,minDuration=D][,maxDuration=D]` (e.g.
/// `H100=2.40` or `H100=2.40,gpus=8,maxDuration=24h`; [`ModelPrice`]'s `FromStr`).
pub fn parse_offer(text: &str) -> std::result::Result<ModelPrice, String> {
    text.parse()
}

/// The wallet key and how long each signed Offer is valid.
pub struct Signer {
    /// The member wallet's key.
    pub key: PrivateKeySigner,
    /// Validity of each signed Offer.
    pub valid_for: Duration,
}

/// Reads the wallet key (hex, `0x` optional, surrounding whitespace ignored) from `path`.
pub fn read_key(path: &Path) -> Result<PrivateKeySigner> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("--offer-signing-key-file {}: {e}", path.display())))?;
    PrivateKeySigner::from_str(text.trim()).map_err(|_| {
        Error::Config(format!(
            "--offer-signing-key-file {}: not a hex secp256k1 private key (64 hex digits)",
            path.display()
        ))
    })
}

/// The signed fields and signature of one Offer.
#[derive(Clone, Debug, PartialEq)]
pub struct Signed {
    /// The domain it was signed in.
    pub domain: OfferSigning,
    /// Nonce.
    pub nonce: u64,
    /// Expiry, Unix seconds.
    pub expires: u64,
    /// Signature, hex with `0x`.
    pub signature: String,
}

/// Signs `prices` of member `cluster` in `domain` with `key`, at `now_ms` (Unix milliseconds):
/// the nonce is `now_ms`, or one above `last_nonce` if that is not lower.
pub fn sign(
    key: &PrivateKeySigner,
    domain: &OfferSigning,
    cluster: &str,
    prices: &[ModelPrice],
    valid_for: Duration,
    now_ms: u64,
    last_nonce: Option<u64>,
) -> Result<Signed> {
    let nonce = last_nonce.map_or(now_ms, |n| now_ms.max(n.saturating_add(1)));
    let expires = (now_ms / 1000).saturating_add(valid_for.as_secs().max(1));
    let fields = typed::OfferFields {
        pool: &domain.pool,
        cluster,
        prices,
        nonce,
        expires,
    };
    let digest = typed::signing_hash(
        &fields,
        domain.chain_id,
        Address::from(domain.verifying_contract.to_bytes()),
    );
    let sig = key
        .sign_hash_sync(&digest)
        .map_err(|e| Error::Config(format!("signing the offer: {e}")))?;
    Ok(Signed {
        domain: domain.clone(),
        nonce,
        expires,
        signature: format!("0x{}", alloy::hex::encode(sig.as_bytes())),
    })
}

/// Whether `current` must be signed anew for `domain` at `now_ms`: none yet, another domain, or
/// half of its validity `valid_for` gone.
pub fn needs_signing(
    current: Option<&Signed>,
    domain: &OfferSigning,
    valid_for: Duration,
    now_ms: u64,
) -> bool {
    match current {
        None => true,
        Some(s) => {
            s.domain != *domain
                || s.expires.saturating_mul(1000)
                    <= now_ms.saturating_add(
                        u64::try_from(valid_for.as_millis() / 2).unwrap_or(u64::MAX),
                    )
        }
    }
}

/// The server-side apply body of member `cluster`'s Offer of `prices`, signed as `signed` says.
pub fn apply_body(
    cluster: &str,
    prices: &[ModelPrice],
    signed: Option<&Signed>,
) -> serde_json::Value {
    let mut spec = serde_json::json!({"prices": prices});
    if let Some(s) = signed {
        spec["nonce"] = serde_json::json!(s.nonce);
        spec["expires"] = serde_json::json!(
            k8s_openapi::jiff::Timestamp::from_second(i64::try_from(s.expires).unwrap_or(i64::MAX))
                .map(|t| t.to_string())
                .unwrap_or_default()
        );
        spec["signature"] = serde_json::json!(s.signature);
    }
    serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1",
        "kind": "Offer",
        "metadata": {"name": OFFER_NAME, "namespace": member_namespace(cluster)},
        "spec": spec,
    })
}

/// Applies the Offer once.
pub async fn publish(
    hub: &kube::Client,
    cluster: &str,
    prices: &[ModelPrice],
    signed: Option<&Signed>,
) -> Result<()> {
    let api: Api<Offer> = Api::namespaced(hub.clone(), &member_namespace(cluster));
    timed(
        "applying the Offer",
        API_TIMEOUT,
        api.patch(
            OFFER_NAME,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(apply_body(cluster, prices, signed)),
        ),
    )
    .await
    .map(|_| ())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The Offer to publish now, in the signing domain `d` the hub published (none: the pool does
/// not pay on a chain): signed when there is a domain (signed anew when [`needs_signing`]);
/// `Ok(None)` to publish it unsigned. `current` keeps the last signature; `warned` the key and
/// wallet a mismatch was last logged for, so it is logged once, not every minute.
fn signed_now(
    d: Option<&OfferSigning>,
    cluster: &str,
    prices: &[ModelPrice],
    signer: &Signer,
    current: &mut Option<Signed>,
    warned: &mut Option<String>,
) -> Result<Option<Signed>> {
    let Some(d) = d else {
        return Ok(None);
    };
    if d.wallet.to_bytes() != signer.key.address().0.0 {
        let pair = format!("{} {}", signer.key.address(), d.wallet);
        if warned.as_ref() != Some(&pair) {
            tracing::error!(
                key = %signer.key.address(),
                wallet = %d.wallet,
                "offer.signingKeySecret holds the key of another account than the member's wallet; \
                 the hub refuses the offer (WrongSigner)"
            );
            *warned = Some(pair);
        }
    }
    let now = now_ms();
    if needs_signing(current.as_ref(), d, signer.valid_for, now) {
        let last = current.as_ref().map(|s| s.nonce);
        *current = Some(sign(
            &signer.key,
            d,
            cluster,
            prices,
            signer.valid_for,
            now,
            last,
        )?);
        tracing::info!(nonce = ?current.as_ref().map(|s| s.nonce), "offer signed");
    }
    Ok(current.clone())
}

/// Applies the Offer now and every [`REPUBLISH_EVERY`] (signed when `signer` is given and the hub
/// published a domain); nothing without `prices`. The domain is the one the inventory task last
/// read from the member's MemberCluster ([`super::state::Shared::offer_signing`]).
pub async fn run(
    hub: kube::Client,
    shared: std::sync::Arc<super::state::Shared>,
    cluster: String,
    prices: Vec<ModelPrice>,
    signer: Option<Signer>,
) {
    if prices.is_empty() {
        return;
    }
    let mut current: Option<Signed> = None;
    let mut warned: Option<String> = None;
    loop {
        let signed = match &signer {
            Some(s) => {
                let Some(domain) = shared.offer_signing() else {
                    // The MemberCluster has not been read yet.
                    tokio::time::sleep(DOMAIN_RETRY).await;
                    continue;
                };
                match signed_now(
                    domain.as_ref(),
                    &cluster,
                    &prices,
                    s,
                    &mut current,
                    &mut warned,
                ) {
                    Ok(signed) => signed,
                    Err(e) => {
                        tracing::warn!(error = %e, "signing the offer; retrying");
                        tokio::time::sleep(DOMAIN_RETRY).await;
                        continue;
                    }
                }
            }
            None => None,
        };
        match publish(&hub, &cluster, &prices, signed.as_ref()).await {
            Ok(()) => tracing::debug!(
                models = prices.len(),
                signed = signed.is_some(),
                "offer published"
            ),
            Err(Error::Kube { source, .. }) if is_invalid(&source) => {
                // The hub's schema refused it: retrying the same values cannot help.
                tracing::error!(error = %source, "the hub refused the offer; fix offer.prices");
            }
            Err(e) => tracing::warn!(error = %e, "publishing the offer; retrying"),
        }
        let wait = if signer.is_some() && signed.is_none() {
            DOMAIN_RETRY
        } else {
            REPUBLISH_EVERY
        };
        tokio::time::sleep(wait).await;
    }
}

fn is_invalid(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 422)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_values_parse_as_model_and_exact_price() {
        let p = parse_offer("H100=2.40").unwrap();
        assert_eq!(
            (p.model.as_str(), p.price_per_gpu_hour.to_string().as_str()),
            ("H100", "2.40")
        );
        for bad in [
            "H100",
            "=2.40",
            "H100=",
            "H100=-1",
            "H 100=2.40",
            "H100=2,40",
        ] {
            assert!(parse_offer(bad).is_err(), "{bad}");
        }
        assert!(parse_offer("H100").unwrap_err().contains("MODEL=PRICE"));
        let limited = parse_offer("H100=2.40,gpus=8,minDuration=10m,maxDuration=24h").unwrap();
        assert_eq!(limited.gpus, Some(8));
        assert_eq!(limited.min_duration.map(|d| d.as_secs_ceil()), Some(600));
        assert_eq!(limited.max_duration.map(|d| d.as_secs_ceil()), Some(86_400));
        for (bad, says) in [
            ("H100=2.40,gpus=0", "gpus must be a whole number"),
            ("H100=2.40,cpus=8", "unknown \"cpus\""),
            ("H100=2.40,maxDuration=soon", "maxDuration"),
            (
                "H100=2.40,minDuration=2h,maxDuration=1h",
                "minDuration is above maxDuration",
            ),
            ("H100=2.40,gpus", "is not KEY=VALUE"),
        ] {
            let e = parse_offer(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_offer_is_named_offer_in_the_members_own_namespace() {
        let body = apply_body("alpha", &[parse_offer("L4=0.35").unwrap()], None);
        assert_eq!(body["metadata"]["namespace"], "gpufed-member-alpha");
        assert_eq!(body["metadata"]["name"], "offer");
        assert_eq!(
            body["spec"]["prices"],
            serde_json::json!([{"model": "L4", "pricePerGpuHour": "0.35"}])
        );
    }

    fn domain() -> OfferSigning {
        gpufed_crds::testing::offer_signing("0x00000000000000000000000000000000000000cc")
    }

    #[test]
    fn the_offer_is_signed_only_in_a_published_domain_and_a_wrong_key_is_noted_once() {
        let signer = Signer {
            key: PrivateKeySigner::random(),
            valid_for: Duration::from_secs(3600),
        };
        let prices = [parse_offer("H100=1.10").unwrap()];
        let (mut current, mut warned) = (None, None);
        // No domain published (a pool without a chain): unsigned.
        let s = signed_now(None, "alpha", &prices, &signer, &mut current, &mut warned).unwrap();
        assert!(s.is_none() && current.is_none() && warned.is_none());
        // The member's wallet is another account: signed all the same (the hub says WrongSigner),
        // and the mismatch is remembered so it is logged once.
        let d = domain();
        let s = signed_now(
            Some(&d),
            "alpha",
            &prices,
            &signer,
            &mut current,
            &mut warned,
        )
        .unwrap()
        .unwrap();
        assert_eq!(Some(&s), current.as_ref());
        let noted = warned.clone().unwrap();
        assert!(noted.contains(&d.wallet.to_string()), "{noted}");
        signed_now(
            Some(&d),
            "alpha",
            &prices,
            &signer,
            &mut current,
            &mut warned,
        )
        .unwrap();
        assert_eq!(warned, Some(noted));
        // The right key: nothing to note.
        let mut right = d.clone();
        right.wallet = signer.key.address().to_string().parse().unwrap();
        let mut fresh = None;
        signed_now(
            Some(&right),
            "alpha",
            &prices,
            &signer,
            &mut None,
            &mut fresh,
        )
        .unwrap();
        assert!(fresh.is_none());
    }

    #[test]
    fn a_signed_offer_recovers_to_the_key_and_carries_its_nonce_and_expiry() {
        let key = PrivateKeySigner::random();
        let prices = [parse_offer("H100=1.10").unwrap()];
        let d = domain();
        let s = sign(
            &key,
            &d,
            "alpha",
            &prices,
            Duration::from_secs(3600),
            1_700_000_000_123,
            None,
        )
        .unwrap();
        assert_eq!((s.nonce, s.expires), (1_700_000_000_123, 1_700_003_600));
        let fields = typed::OfferFields {
            pool: "default",
            cluster: "alpha",
            prices: &prices,
            nonce: s.nonce,
            expires: s.expires,
        };
        let verifying = Address::from(d.verifying_contract.to_bytes());
        let (signer, _) = typed::signer(&fields, &s.signature, 31337, verifying).unwrap();
        assert_eq!(signer, key.address());
        // Another cluster's fields do not recover to the key.
        let other = typed::OfferFields {
            cluster: "beta",
            ..fields
        };
        assert_ne!(
            typed::signer(&other, &s.signature, 31337, verifying)
                .unwrap()
                .0,
            key.address()
        );
        // A clock that went back still gives a higher nonce.
        let again = sign(
            &key,
            &d,
            "alpha",
            &prices,
            Duration::from_secs(3600),
            5,
            Some(s.nonce),
        )
        .unwrap();
        assert_eq!(again.nonce, s.nonce + 1);
        let body = apply_body("alpha", &prices, Some(&s));
        assert_eq!(body["spec"]["nonce"], 1_700_000_000_123u64);
        assert_eq!(body["spec"]["expires"], "2023-11-14T23:13:20Z");
        assert_eq!(body["spec"]["signature"], s.signature);
    }

    #[test]
    fn an_offer_is_signed_again_at_half_its_validity_or_for_another_domain() {
        let key = PrivateKeySigner::random();
        let prices = [parse_offer("H100=1.10").unwrap()];
        let hour = Duration::from_secs(3600);
        let d = domain();
        assert!(needs_signing(None, &d, hour, 0));
        let s = sign(&key, &d, "alpha", &prices, hour, 1_000_000, None).unwrap();
        assert!(!needs_signing(Some(&s), &d, hour, 1_000_000 + 1_799_000));
        assert!(needs_signing(Some(&s), &d, hour, 1_000_000 + 1_800_000));
        let moved = OfferSigning {
            chain_id: 1,
            ..domain()
        };
        assert!(needs_signing(Some(&s), &moved, hour, 1_000_000));
    }

    #[test]
    fn a_key_file_is_read_as_hex_and_a_bad_one_named() {
        let dir = std::env::temp_dir().join(format!("gpufed-offer-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(
            &good,
            "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80\n",
        )
        .unwrap();
        assert_eq!(
            read_key(&good).unwrap().address().to_string(),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        );
        let bad = dir.join("bad");
        std::fs::write(&bad, "not a key").unwrap();
        let err = read_key(&bad).unwrap_err().to_string();
        assert!(
            err.contains("--offer-signing-key-file") && err.contains("64 hex digits"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
