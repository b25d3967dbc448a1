//! The open-join protocol (ADR 0031): what a provider sends to the hub's registration endpoint to
//! join a pool whose `spec.admission` is `Open`, and what it gets back.
//!
//! The wire types are plain serde; the EIP-712 typed data the provider's wallet signs is behind
//! the `eip712` feature ([`typed`]), shared by the hub (which checks it) and `kubectl gpufed join`
//! (which signs it), so that signer and checker cannot drift apart.

use serde::{Deserialize, Serialize};

use crate::member::ModelPrice;
use crate::units::EvmAddress;

/// Path of the join request on the registration endpoint.
pub const JOIN_PATH: &str = "/v1/join";
/// Path of the credential renewal on the registration endpoint.
pub const RENEW_PATH: &str = "/v1/renew";
/// Path of a leave request on the registration endpoint.
pub const LEAVE_PATH: &str = "/v1/leave";
/// Path prefix of a pool's signing domain on the registration endpoint (`GET /v1/pools/<pool>`).
pub const POOLS_PATH: &str = "/v1/pools/";
/// Furthest in the future a join request may expire, in seconds from the hub's now: a captured
/// request is worth replaying for at most this long.
pub const MAX_EXPIRY_AHEAD_SECS: u64 = 900;
/// Label on a MemberCluster created by the registration endpoint (value [`ADMISSION_OPEN`]).
pub const LABEL_ADMISSION: &str = "gpufed.io/admission";
/// Value of [`LABEL_ADMISSION`] for members that joined by stake.
pub const ADMISSION_OPEN: &str = "open";
/// Annotation with the EIP-712 digest (hex) of the join request that created a member.
pub const ANNOTATION_JOIN_REQUEST: &str = "gpufed.io/join-request";
/// Annotation with the nonce of that join request.
pub const ANNOTATION_JOIN_NONCE: &str = "gpufed.io/join-nonce";
/// Annotation on a member whose provider asked to leave (a signed leave request): when it was
/// asked (RFC 3339). The member is cordoned; the hub deletes it once no attempt runs there.
pub const ANNOTATION_LEAVING: &str = "gpufed.io/leaving";
/// Annotation with the EIP-712 digest (hex) of that leave request.
pub const ANNOTATION_LEAVE_REQUEST: &str = "gpufed.io/leave-request";

/// A join request as sent to [`JOIN_PATH`]: the signed fields, the wallet that claims to have
/// signed them, and the signature.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequestBody {
    /// The GpuPool to join.
    pub pool: String,
    /// Name of the MemberCluster to create (a DNS label of at most 49 characters).
    pub cluster: String,
    /// Region of the cluster.
    pub region: String,
    /// Price per GPU-hour per model (become `MemberCluster.spec.prices`).
    pub prices: Vec<ModelPrice>,
    /// A number the signer picks so that each signed request is unique.
    pub nonce: u64,
    /// Unix time (seconds) after which the hub refuses the request.
    pub expires: u64,
    /// The provider's wallet, which must have signed the request and be bonded.
    pub wallet: EvmAddress,
    /// The 65-byte secp256k1 signature of the EIP-712 digest, hex with `0x`.
    pub signature: String,
}

/// What a provider needs to sign a join request for an open pool (`GET /v1/pools/<pool>`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PoolInfo {
    /// The pool.
    pub pool: String,
    /// Chain id of the signing domain.
    pub chain_id: u64,
    /// The ProviderBond contract (the domain's verifying contract), where the stake must be.
    pub bond: EvmAddress,
    /// Stake each member needs.
    pub min_bond: crate::units::TokenAmount,
}

/// The hub's answer to an accepted join request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JoinResponse {
    /// The MemberCluster created.
    pub cluster: String,
    /// The member's namespace on the hub.
    pub namespace: String,
    /// Kubeconfig for the agent; its user reads the token from the file `token` beside it
    /// (`tokenFile`), which the agent rewrites when it renews.
    pub kubeconfig: String,
    /// The short-lived ServiceAccount token.
    pub token: String,
    /// Unix time (seconds) the token expires.
    pub expires: u64,
}

/// The hub's answer to a renewal.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RenewResponse {
    /// The new token.
    pub token: String,
    /// Unix time (seconds) it expires.
    pub expires: u64,
}

/// A leave request as sent to [`LEAVE_PATH`]: an openly joined member's provider asks the hub to
/// drain and remove it, signed by the member's wallet.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LeaveRequestBody {
    /// The member's GpuPool.
    pub pool: String,
    /// The MemberCluster that leaves.
    pub cluster: String,
    /// A number the signer picks so that each signed request is unique.
    pub nonce: u64,
    /// Unix time (seconds) after which the hub refuses the request.
    pub expires: u64,
    /// The member's wallet (`spec.wallet`), which must have signed the request.
    pub wallet: EvmAddress,
    /// The 65-byte secp256k1 signature of the EIP-712 digest, hex with `0x`.
    pub signature: String,
}

/// The hub's answer to an accepted leave request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LeaveResponse {
    /// The member.
    pub cluster: String,
    /// Attempts still on the member: it is deleted once they have ended (0: at once).
    pub running_attempts: u32,
}

/// Why the hub refused a request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JoinErrorBody {
    /// One word: `BadSignature`, `Expired`, `Replayed`, `NameTaken`, `InsufficientBond`, ...
    pub reason: String,
    /// What was wrong and what to do, in a sentence.
    pub message: String,
}

/// The EIP-712 typed data of a join request (ADR 0031).
#[cfg(feature = "eip712")]
pub mod typed {
    use alloy::primitives::{Address, B256, Signature};
    use alloy::sol_types::{Eip712Domain, SolStruct as _};

    use super::{JoinRequestBody, LeaveRequestBody};

    alloy::sol! {
        /// One model's price and limits, as signed (0: no limit).
        struct ModelPrice {
            string model;
            string pricePerGpuHour;
            uint32 gpus;
            uint64 minDurationSeconds;
            uint64 maxDurationSeconds;
        }

        /// What a provider's wallet signs to join a pool.
        struct JoinRequest {
            string pool;
            string cluster;
            string region;
            ModelPrice[] prices;
            uint64 nonce;
            uint64 expires;
        }

        /// What a member's wallet signs to leave its pool.
        struct LeaveRequest {
            string pool;
            string cluster;
            uint64 nonce;
            uint64 expires;
        }
    }

    /// The signing domain: one chain and the pool's ProviderBond contract.
    pub fn domain(chain_id: u64, bond: Address) -> Eip712Domain {
        alloy::sol_types::eip712_domain! {
            name: "gpufed",
            version: "1",
            chain_id: chain_id,
            verifying_contract: bond,
        }
    }

    /// The signed form of a model's price: the canonical decimal string, and 0 for each limit
    /// not set.
    pub fn model_price(p: &crate::member::ModelPrice) -> ModelPrice {
        ModelPrice {
            model: p.model.clone(),
            pricePerGpuHour: p.price_per_gpu_hour.to_string(),
            gpus: p.gpus.unwrap_or(0),
            minDurationSeconds: p.min_duration.map_or(0, |d| d.as_secs_ceil()),
            maxDurationSeconds: p.max_duration.map_or(0, |d| d.as_secs_ceil()),
        }
    }

    /// The typed struct of `body` (prices in their canonical decimal form).
    pub fn join_request(body: &JoinRequestBody) -> JoinRequest {
        JoinRequest {
            pool: body.pool.clone(),
            cluster: body.cluster.clone(),
            region: body.region.clone(),
            prices: body.prices.iter().map(model_price).collect(),
            nonce: body.nonce,
            expires: body.expires,
        }
    }

    /// The EIP-712 digest the wallet signs.
    pub fn signing_hash(body: &JoinRequestBody, chain_id: u64, bond: Address) -> B256 {
        join_request(body).eip712_signing_hash(&domain(chain_id, bond))
    }

    /// Who signed `body`, or why that cannot be told (a malformed signature).
    pub fn signer(body: &JoinRequestBody, chain_id: u64, bond: Address) -> Result<Address, String> {
        recover(&body.signature, &signing_hash(body, chain_id, bond))
    }

    /// The EIP-712 digest of a leave request.
    pub fn leave_signing_hash(body: &LeaveRequestBody, chain_id: u64, bond: Address) -> B256 {
        LeaveRequest {
            pool: body.pool.clone(),
            cluster: body.cluster.clone(),
            nonce: body.nonce,
            expires: body.expires,
        }
        .eip712_signing_hash(&domain(chain_id, bond))
    }

    /// Who signed the leave request `body`, or why that cannot be told.
    pub fn leave_signer(
        body: &LeaveRequestBody,
        chain_id: u64,
        bond: Address,
    ) -> Result<Address, String> {
        recover(&body.signature, &leave_signing_hash(body, chain_id, bond))
    }

    /// The address that signed `digest` with `signature` (hex, `0x` optional).
    pub fn recover(signature: &str, digest: &B256) -> Result<Address, String> {
        let raw = alloy::hex::decode(signature.trim_start_matches("0x"))
            .map_err(|e| format!("signature is not hex: {e}"))?;
        let sig = Signature::try_from(raw.as_slice())
            .map_err(|e| format!("signature is not 65 bytes r, s, v: {e}"))?;
        sig.recover_address_from_prehash(digest)
            .map_err(|e| format!("no signer can be recovered from the signature: {e}"))
    }
}

#[cfg(all(test, feature = "eip712"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use alloy::primitives::Address;
    use alloy::signers::SignerSync as _;
    use alloy::signers::local::PrivateKeySigner;

    fn body(signer: &PrivateKeySigner, bond: Address) -> JoinRequestBody {
        let mut b = JoinRequestBody {
            pool: "p".into(),
            cluster: "alpha".into(),
            region: "eu-west".into(),
            prices: vec![ModelPrice::new("H100", "2.40".parse().unwrap())],
            nonce: 7,
            expires: 1_700_000_000,
            wallet: signer.address().to_string().parse().unwrap(),
            signature: String::new(),
        };
        let sig = signer
            .sign_hash_sync(&typed::signing_hash(&b, 31337, bond))
            .unwrap();
        b.signature = format!("0x{}", alloy::hex::encode(sig.as_bytes()));
        b
    }

    #[test]
    fn the_signer_is_recovered_and_any_changed_field_changes_it() {
        let key = PrivateKeySigner::random();
        let bond = Address::repeat_byte(7);
        let b = body(&key, bond);
        assert_eq!(typed::signer(&b, 31337, bond).unwrap(), key.address());
        let mut other = b.clone();
        other.cluster = "beta".into();
        assert_ne!(typed::signer(&other, 31337, bond).unwrap(), key.address());
        let mut other = b.clone();
        other.prices[0].price_per_gpu_hour = "0.01".parse().unwrap();
        assert_ne!(typed::signer(&other, 31337, bond).unwrap(), key.address());
        // Another chain or bond contract: another domain.
        assert_ne!(typed::signer(&b, 1, bond).unwrap(), key.address());
        assert_ne!(
            typed::signer(&b, 31337, Address::repeat_byte(8)).unwrap(),
            key.address()
        );
    }

    #[test]
    fn a_leave_request_is_signed_in_its_own_type_so_a_join_signature_does_not_leave() {
        let key = PrivateKeySigner::random();
        let bond = Address::repeat_byte(7);
        let mut leave = LeaveRequestBody {
            pool: "p".into(),
            cluster: "alpha".into(),
            nonce: 7,
            expires: 1_700_000_000,
            wallet: key.address().to_string().parse().unwrap(),
            signature: String::new(),
        };
        let sig = key
            .sign_hash_sync(&typed::leave_signing_hash(&leave, 31337, bond))
            .unwrap();
        leave.signature = format!("0x{}", alloy::hex::encode(sig.as_bytes()));
        assert_eq!(
            typed::leave_signer(&leave, 31337, bond).unwrap(),
            key.address()
        );
        let mut other = leave.clone();
        other.cluster = "beta".into();
        assert_ne!(
            typed::leave_signer(&other, 31337, bond).unwrap(),
            key.address()
        );
        // A join request's signature over the same pool, cluster, nonce and expiry is no leave.
        let join = body(&key, bond);
        let mut forged = leave.clone();
        forged.signature = join.signature.clone();
        assert_ne!(
            typed::leave_signer(&forged, 31337, bond).unwrap(),
            key.address()
        );
    }

    #[test]
    fn a_malformed_signature_is_an_error_not_a_signer() {
        let key = PrivateKeySigner::random();
        let mut b = body(&key, Address::ZERO);
        b.signature = "0x1234".into();
        assert!(typed::signer(&b, 31337, Address::ZERO).is_err());
        b.signature = "zz".into();
        assert!(typed::signer(&b, 31337, Address::ZERO).is_err());
    }
}
