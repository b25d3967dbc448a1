//! The checks of an open join request (ADR 0031), as pure functions: no apiserver, no chain, no
//! clock of their own. The endpoint ([`super::server`]) runs them in the order of the ADR's table,
//! cheapest first, and creates nothing unless all pass; each refusal is a [`Refusal`] with its
//! HTTP status, one-word reason and a message that says what to do.

use std::collections::{BTreeMap, HashMap};

use alloy::primitives::{Address, B256};
use gpufed_crds::join::{
    ADMISSION_OPEN, ANNOTATION_JOIN_NONCE, ANNOTATION_JOIN_REQUEST, ANNOTATION_LEAVE_REQUEST,
    JoinRequestBody, LABEL_ADMISSION, LeaveRequestBody, MAX_EXPIRY_AHEAD_SECS, typed,
};
use gpufed_crds::naming::MAX_MEMBER_NAME_LEN;
use gpufed_crds::{Admission, EvmAddress, GpuPool, MemberCluster, MemberClusterSpec, TokenAmount};
use kube::ResourceExt;
use kube::api::ObjectMeta;

/// Why a join or renewal request was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// Too many requests from one source.
    #[error("too many join requests from {source_ip}: retry in {retry_after_secs}s")]
    RateLimited {
        /// The source address.
        source_ip: String,
        /// Seconds until the next request is admitted.
        retry_after_secs: u64,
    },
    /// The body is not a join request, or a field is invalid.
    #[error("{0}")]
    Malformed(String),
    /// `expires` has passed.
    #[error("the request expired at unix time {expires} (the hub's now is {now}): sign a new one")]
    Expired {
        /// The request's expiry.
        expires: u64,
        /// The hub's now.
        now: u64,
    },
    /// `expires` is further ahead than a request may live.
    #[error(
        "the request expires at unix time {expires}, more than {MAX_EXPIRY_AHEAD_SECS}s after the hub's now ({now}): sign one that expires sooner"
    )]
    ExpiryTooFar {
        /// The request's expiry.
        expires: u64,
        /// The hub's now.
        now: u64,
    },
    /// No such pool.
    #[error("no GpuPool {0:?}")]
    UnknownPool(String),
    /// The pool does not admit members by stake.
    #[error("{0}")]
    PoolNotOpen(String),
    /// The signature is malformed or not by the claimed wallet.
    #[error("{0}")]
    BadSignature(String),
    /// The same signed request was used before.
    #[error(
        "this signed request was already used (nonce {nonce} of {wallet}): sign a new one with a new nonce"
    )]
    Replayed {
        /// The request's nonce.
        nonce: u64,
        /// The signer.
        wallet: String,
    },
    /// The name belongs to another member.
    #[error("{0}")]
    NameTaken(String),
    /// The wallet's bond does not cover one more member.
    #[error("{0}")]
    InsufficientBond(String),
    /// The bearer token of a renewal is not an openly joined member's, or the member of a leave
    /// request did not join by stake.
    #[error("{0}")]
    Unauthorized(String),
    /// A leave request names no member.
    #[error("{0}")]
    UnknownMember(String),
    /// A leave request for a member of another wallet or pool.
    #[error("{0}")]
    NotYourMember(String),
    /// The hub could not finish (apiserver or chain unreachable); nothing was created.
    #[error("{0}")]
    Unavailable(String),
}

impl Refusal {
    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::RateLimited { .. } => 429,
            Refusal::Malformed(_) | Refusal::Expired { .. } | Refusal::ExpiryTooFar { .. } => 400,
            Refusal::UnknownPool(_) | Refusal::UnknownMember(_) => 404,
            Refusal::PoolNotOpen(_) | Refusal::NotYourMember(_) => 403,
            Refusal::BadSignature(_) | Refusal::Unauthorized(_) => 401,
            Refusal::Replayed { .. } | Refusal::NameTaken(_) => 409,
            Refusal::InsufficientBond(_) => 402,
            Refusal::Unavailable(_) => 503,
        }
    }

    /// One word for the reason (the answer's `reason`, a bounded metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::RateLimited { .. } => "RateLimited",
            Refusal::Malformed(_) => "Malformed",
            Refusal::Expired { .. } => "Expired",
            Refusal::ExpiryTooFar { .. } => "ExpiryTooFar",
            Refusal::UnknownPool(_) => "UnknownPool",
            Refusal::PoolNotOpen(_) => "PoolNotOpen",
            Refusal::BadSignature(_) => "BadSignature",
            Refusal::Replayed { .. } => "Replayed",
            Refusal::NameTaken(_) => "NameTaken",
            Refusal::InsufficientBond(_) => "InsufficientBond",
            Refusal::Unauthorized(_) => "Unauthorized",
            Refusal::UnknownMember(_) => "UnknownMember",
            Refusal::NotYourMember(_) => "NotYourMember",
            Refusal::Unavailable(_) => "Unavailable",
        }
    }
}

fn is_dns_label(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_model(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// `cluster` is a member name and `pool` a pool name.
fn check_names(cluster: &str, pool: &str) -> Result<(), Refusal> {
    if !is_dns_label(cluster, MAX_MEMBER_NAME_LEN) {
        return Err(Refusal::Malformed(format!(
            "cluster {cluster:?} is not a DNS label of at most {MAX_MEMBER_NAME_LEN} characters"
        )));
    }
    if pool.is_empty() || pool.len() > 253 {
        return Err(Refusal::Malformed(format!(
            "pool {pool:?} is not a pool name"
        )));
    }
    Ok(())
}

/// The request's fields are what a MemberCluster accepts (so that creating it cannot fail on them).
pub fn check_shape(body: &JoinRequestBody) -> Result<(), Refusal> {
    check_names(&body.cluster, &body.pool)?;
    if !is_dns_label(&body.region, 63) {
        return Err(Refusal::Malformed(format!(
            "region {:?} is not a DNS label of at most 63 characters",
            body.region
        )));
    }
    if body.prices.is_empty() || body.prices.len() > 32 {
        return Err(Refusal::Malformed(format!(
            "prices: between 1 and 32 models, got {}",
            body.prices.len()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for p in &body.prices {
        if !is_model(&p.model) || !seen.insert(p.model.as_str()) {
            return Err(Refusal::Malformed(format!(
                "prices: {:?} is not a GPU model name such as H100, or is listed twice",
                p.model
            )));
        }
    }
    Ok(())
}

/// A request's `expires` is after `now` and at most [`MAX_EXPIRY_AHEAD_SECS`] after it.
pub fn check_expiry(expires: u64, now: u64) -> Result<(), Refusal> {
    if expires <= now {
        return Err(Refusal::Expired { expires, now });
    }
    if expires > now.saturating_add(MAX_EXPIRY_AHEAD_SECS) {
        return Err(Refusal::ExpiryTooFar { expires, now });
    }
    Ok(())
}

/// What an open pool's request is checked against.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenPool {
    /// The chain id of the signing domain.
    pub chain_id: u64,
    /// The ProviderBond contract (the domain's verifying contract).
    pub bond: Address,
    /// The stake each member needs.
    pub min_bond: TokenAmount,
}

/// The pool exists and admits members by stake; its signing domain and minimum bond.
pub fn check_pool(name: &str, pool: Option<&GpuPool>) -> Result<OpenPool, Refusal> {
    let pool = pool.ok_or_else(|| Refusal::UnknownPool(name.to_string()))?;
    let not_open = |why: &str| {
        Refusal::PoolNotOpen(format!(
            "pool {name:?} admits members only by its admin ({why})"
        ))
    };
    if pool.spec.admission != Admission::Open {
        return Err(not_open("spec.admission: Approved"));
    }
    // The CRD's CEL rules refuse an Open pool without these; checked again for pools stored
    // before the rules existed.
    let chain = pool
        .spec
        .chain
        .as_ref()
        .ok_or_else(|| not_open("it has no spec.chain"))?;
    let bond = chain
        .bond
        .as_ref()
        .ok_or_else(|| not_open("it has no spec.chain.bond"))?;
    let min_bond = pool
        .spec
        .min_bond
        .ok_or_else(|| not_open("it has no spec.minBond"))?;
    Ok(OpenPool {
        chain_id: chain.chain_id,
        bond: Address::from(bond.to_bytes()),
        min_bond,
    })
}

/// The signature recovers to the claimed wallet. Returns the request's id: keccak256 of its
/// EIP-712 digest and the signer, since two wallets may sign the same fields (and a signature's
/// bytes are malleable, so they are no id).
pub fn check_signature(body: &JoinRequestBody, pool: &OpenPool) -> Result<B256, Refusal> {
    let signer = typed::signer(body, pool.chain_id, pool.bond).map_err(Refusal::BadSignature)?;
    let digest = typed::signing_hash(body, pool.chain_id, pool.bond);
    signed_by(signer, &body.wallet, &body.pool, pool, &digest)
}

/// [`check_signature`] for a leave request.
pub fn check_leave_signature(body: &LeaveRequestBody, pool: &OpenPool) -> Result<B256, Refusal> {
    let signer =
        typed::leave_signer(body, pool.chain_id, pool.bond).map_err(Refusal::BadSignature)?;
    let digest = typed::leave_signing_hash(body, pool.chain_id, pool.bond);
    signed_by(signer, &body.wallet, &body.pool, pool, &digest)
}

/// The request id of `digest` if `signer` is the `claimed` wallet.
fn signed_by(
    signer: Address,
    claimed: &EvmAddress,
    pool_name: &str,
    pool: &OpenPool,
    digest: &B256,
) -> Result<B256, Refusal> {
    let claimed = Address::from(claimed.to_bytes());
    if signer != claimed {
        return Err(Refusal::BadSignature(format!(
            "the signature is by {signer}, not by the claimed wallet {claimed}: sign the request \
             with the wallet's key, for pool {pool_name:?} on chain {} with ProviderBond {}",
            pool.chain_id, pool.bond
        )));
    }
    Ok(alloy::primitives::keccak256(
        [digest.as_slice(), claimed.as_slice()].concat(),
    ))
}

/// The leave request's names are a member's and a pool's.
pub fn check_leave_shape(body: &LeaveRequestBody) -> Result<(), Refusal> {
    check_names(&body.cluster, &body.pool)
}

/// The member of a leave request exists, joined the request's pool by stake, and is the signing
/// wallet's; the same signed request twice is a replay (a new one for a member already leaving is
/// answered again).
pub fn check_leaver(
    body: &LeaveRequestBody,
    digest: &B256,
    existing: Option<&MemberCluster>,
) -> Result<(), Refusal> {
    let m = existing.ok_or_else(|| {
        Refusal::UnknownMember(format!(
            "no member cluster {:?}: nothing to leave (it may have left already)",
            body.cluster
        ))
    })?;
    if m.annotations().get(ANNOTATION_LEAVE_REQUEST) == Some(&digest.to_string()) {
        return Err(Refusal::Replayed {
            nonce: body.nonce,
            wallet: body.wallet.to_string(),
        });
    }
    if m.labels().get(LABEL_ADMISSION).map(String::as_str) != Some(ADMISSION_OPEN) {
        return Err(Refusal::Unauthorized(format!(
            "member {:?} did not join by stake: the pool admin made it, and deletes it",
            body.cluster
        )));
    }
    if m.spec.pool != body.pool {
        return Err(Refusal::NotYourMember(format!(
            "member {:?} is in pool {:?}, not {:?}",
            body.cluster, m.spec.pool, body.pool
        )));
    }
    match &m.spec.wallet {
        Some(w) if w.to_bytes() == body.wallet.to_bytes() => Ok(()),
        other => Err(Refusal::NotYourMember(format!(
            "member {:?} belongs to wallet {}, not {}: sign with the member's own wallet",
            body.cluster,
            other
                .as_ref()
                .map_or_else(|| "none".to_string(), ToString::to_string),
            body.wallet
        ))),
    }
}

/// Digests of accepted requests, kept until their expiry: a second use is [`Refusal::Replayed`].
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: HashMap<B256, u64>,
}

impl ReplayGuard {
    /// Whether `digest` was accepted before and has not expired at `now`.
    pub fn seen(&mut self, digest: &B256, now: u64) -> bool {
        self.seen.retain(|_, expires| *expires > now);
        self.seen.contains_key(digest)
    }

    /// Records an accepted request.
    pub fn record(&mut self, digest: B256, expires: u64) {
        self.seen.insert(digest, expires);
    }
}

/// Who may have the name: nobody yet, or the same wallet (a fresh signed request re-issues the
/// credential of its own member). A request whose digest is on the member is a replay.
pub fn check_name(
    body: &JoinRequestBody,
    digest: &B256,
    existing: Option<&MemberCluster>,
) -> Result<Existing, Refusal> {
    let Some(m) = existing else {
        return Ok(Existing::None);
    };
    if m.annotations().get(ANNOTATION_JOIN_REQUEST) == Some(&digest.to_string()) {
        return Err(Refusal::Replayed {
            nonce: body.nonce,
            wallet: body.wallet.to_string(),
        });
    }
    let open = m.labels().get(LABEL_ADMISSION).map(String::as_str) == Some(ADMISSION_OPEN);
    let same_wallet = m
        .spec
        .wallet
        .as_ref()
        .is_some_and(|w| w.to_bytes() == body.wallet.to_bytes());
    if open && same_wallet && m.spec.pool == body.pool {
        return Ok(Existing::OwnMember);
    }
    Err(Refusal::NameTaken(format!(
        "member cluster {:?} already exists and belongs to another provider: choose another name",
        body.cluster
    )))
}

/// What [`check_name`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// The name is free: create the member.
    None,
    /// The wallet's own openly joined member: issue a new credential, create nothing.
    OwnMember,
}

/// The wallet's stake covers `minBond` for each of its members in the pool, this one included
/// (`members` counts the others).
pub fn check_bond(
    wallet: &EvmAddress,
    bonded: TokenAmount,
    pool_name: &str,
    pool: &OpenPool,
    members: u32,
) -> Result<(), Refusal> {
    let needed = (0..=members).try_fold(TokenAmount::ZERO, |acc, _| acc.checked_add(pool.min_bond));
    match needed {
        Some(needed) if bonded >= needed => Ok(()),
        needed => Err(Refusal::InsufficientBond(format!(
            "{wallet} has {bonded} bonded in ProviderBond {}; pool {pool_name:?} needs {} per \
             member and the wallet already has {members} member(s) there: stake {} more",
            pool.bond,
            pool.min_bond,
            needed.map_or_else(
                || "much".to_string(),
                |n| n.saturating_sub(bonded).to_string()
            ),
        ))),
    }
}

/// The MemberCluster an accepted request creates.
pub fn member(body: &JoinRequestBody, digest: &B256) -> MemberCluster {
    let mut m = MemberCluster::new(
        &body.cluster,
        MemberClusterSpec {
            pool: body.pool.clone(),
            region: body.region.clone(),
            wallet: Some(body.wallet.clone()),
            display_name: None,
            prices: body.prices.clone(),
            cordoned: false,
        },
    );
    m.metadata = ObjectMeta {
        name: Some(body.cluster.clone()),
        labels: Some(BTreeMap::from([(
            LABEL_ADMISSION.to_string(),
            ADMISSION_OPEN.to_string(),
        )])),
        annotations: Some(BTreeMap::from([
            (ANNOTATION_JOIN_REQUEST.to_string(), digest.to_string()),
            (ANNOTATION_JOIN_NONCE.to_string(), body.nonce.to_string()),
        ])),
        ..Default::default()
    };
    m
}

#[cfg(test)]
#[path = "checks_tests.rs"]
mod tests;
