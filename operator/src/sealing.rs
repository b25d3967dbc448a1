//! Tenant Secrets sealed by the hub to one member for one attempt (docs/adr/0020-sealed-secrets.md).
//!
//! The agent holds an X25519 key pair ([`SealingKey`], new at each start) and publishes the public
//! half as `MemberCluster.status.sealingKey`. When the hub creates a Placement whose template
//! refers to Secrets, it reads them from the job's namespace and [`seal`]s the keys the template
//! uses, together with a [`Binding`] to the Placement (job UID, placement name, attempt, member),
//! into a libsodium sealed box (`crypto_box_seal`: an ephemeral X25519 key, XSalsa20-Poly1305)
//! stored base64 in `Placement.spec.sealedSecrets`. Only the member's private key opens it; the
//! agent [`open`]s it and refuses a blob whose binding is not the Placement it came in, so a blob
//! copied into another Placement, attempt or member's namespace is useless there.
//!
//! A sealed box has no associated data, so the binding travels inside the ciphertext: the box's
//! MAC covers it, and nobody without the private key can change it.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use crypto_box::aead::OsRng;
use crypto_box::{PublicKey, SecretKey};
use gpufed_crds::Placement;
use gpufed_crds::placement::MAX_SEALED_SECRETS;
use k8s_openapi::ByteString;
use serde::{Deserialize, Serialize};

/// Version of the sealed payload's layout.
const PAYLOAD_VERSION: u32 = 1;

/// Why sealing or opening failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealingError {
    /// The member published no usable public key.
    #[error(
        "member {cluster:?} has published no sealing key (status.sealingKey): its agent is older than sealed secrets or has not reported yet"
    )]
    NoKey {
        /// The member.
        cluster: String,
    },
    /// The published key is not 32 bytes of base64.
    #[error("member {cluster:?} published an invalid sealing key")]
    BadKey {
        /// The member.
        cluster: String,
    },
    /// The sealed blob is larger than a Placement holds.
    #[error(
        "the sealed secrets are {size} bytes of base64, more than the {max} a Placement holds: refer to fewer or smaller Secret keys (use secretFiles items to pick keys)"
    )]
    TooLarge {
        /// Size of the base64 blob.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// The blob is not base64, or does not open with this member's key.
    #[error(
        "the sealed secrets do not open with this member's key (sealed to an earlier key of a restarted agent, or not sealed to this member)"
    )]
    DoesNotOpen,
    /// The blob opened but its content is not a payload of a known version.
    #[error("the sealed secrets opened but hold no payload this agent understands")]
    Malformed,
    /// The blob opened but was sealed for another Placement.
    #[error(
        "the sealed secrets were sealed for {sealed}, not for this placement ({here}): refusing a replayed blob"
    )]
    WrongBinding {
        /// What the blob is bound to.
        sealed: String,
        /// This Placement.
        here: String,
    },
    /// Sealing itself failed (random source).
    #[error("sealing failed")]
    Seal,
    /// The payload could not be encoded.
    #[error("encoding the payload: {0}")]
    Encode(String),
}

/// What a sealed blob is good for: one attempt of one job on one member.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Binding {
    /// UID of the ComputeJob.
    pub job_uid: String,
    /// Name of the Placement.
    pub placement: String,
    /// Attempt number.
    pub attempt: u32,
    /// Member cluster.
    pub cluster: String,
}

impl std::fmt::Display for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "placement {} (job UID {}, attempt {}, member {})",
            self.placement, self.job_uid, self.attempt, self.cluster
        )
    }
}

/// The Binding of `p`, from its name and spec.
pub fn binding_of(p: &Placement) -> Binding {
    Binding {
        job_uid: p.spec.job.uid.clone(),
        placement: p.metadata.name.clone().unwrap_or_default(),
        attempt: p.spec.attempt,
        cluster: p.spec.cluster.clone(),
    }
}

/// One tenant Secret as the member receives it: its type and the keys the template uses.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretPayload {
    /// The Secret's type on the hub, e.g. `Opaque` or `kubernetes.io/dockerconfigjson`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Key → value.
    pub data: BTreeMap<String, ByteString>,
}

/// The plaintext inside the box.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct Payload {
    version: u32,
    binding: Binding,
    secrets: BTreeMap<String, SecretPayload>,
}

/// The member's key pair. The private half never leaves the agent's memory.
pub struct SealingKey(SecretKey);

impl SealingKey {
    /// A fresh key pair from the operating system's random source.
    pub fn generate() -> Self {
        SealingKey(SecretKey::generate(&mut OsRng))
    }

    /// The public half, base64, as published in `MemberCluster.status.sealingKey`.
    pub fn public_base64(&self) -> String {
        B64.encode(self.0.public_key().as_bytes())
    }
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealingKey(public {})", self.public_base64())
    }
}

/// Seals `secrets` for `binding` to the member's published key (base64); returns the base64 blob
/// for `Placement.spec.sealedSecrets`.
pub fn seal(
    public_key: Option<&str>,
    binding: &Binding,
    secrets: BTreeMap<String, SecretPayload>,
) -> Result<String, SealingError> {
    let cluster = binding.cluster.clone();
    let key = public_key.ok_or(SealingError::NoKey {
        cluster: cluster.clone(),
    })?;
    let bytes: [u8; 32] = B64
        .decode(key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SealingError::BadKey { cluster })?;
    let payload = Payload {
        version: PAYLOAD_VERSION,
        binding: binding.clone(),
        secrets,
    };
    let plain = serde_json::to_vec(&payload).map_err(|e| SealingError::Encode(e.to_string()))?;
    let sealed = PublicKey::from(bytes)
        .seal(&mut OsRng, &plain)
        .map_err(|_| SealingError::Seal)?;
    let blob = B64.encode(sealed);
    if blob.len() > MAX_SEALED_SECRETS {
        return Err(SealingError::TooLarge {
            size: blob.len(),
            max: MAX_SEALED_SECRETS,
        });
    }
    Ok(blob)
}

/// Opens the sealed Secrets of `placement` with `key`; `None` when it carries none. Refuses a blob
/// that does not open or is bound to another placement, attempt, job or member.
pub fn open(
    key: &SealingKey,
    placement: &Placement,
) -> Option<Result<BTreeMap<String, SecretPayload>, SealingError>> {
    let blob = placement.spec.sealed_secrets.as_deref()?;
    Some(open_blob(key, blob, &binding_of(placement)))
}

fn open_blob(
    key: &SealingKey,
    blob: &str,
    here: &Binding,
) -> Result<BTreeMap<String, SecretPayload>, SealingError> {
    let sealed = B64.decode(blob).map_err(|_| SealingError::DoesNotOpen)?;
    let plain = key
        .0
        .unseal(&sealed)
        .map_err(|_| SealingError::DoesNotOpen)?;
    let payload: Payload = serde_json::from_slice(&plain).map_err(|_| SealingError::Malformed)?;
    if payload.version != PAYLOAD_VERSION {
        return Err(SealingError::Malformed);
    }
    if &payload.binding != here {
        return Err(SealingError::WrongBinding {
            sealed: payload.binding.to_string(),
            here: here.to_string(),
        });
    }
    Ok(payload.secrets)
}

/// Why a job's Secrets cannot be sealed now; the job waits with this as its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable {
    /// PascalCase reason: `SecretNotFound`, `SecretKeyNotFound`, `SecretWrongType`,
    /// `SecretsNotShared`.
    pub reason: &'static str,
    /// What is missing and how to fix it.
    pub message: String,
}

/// The optional key of a storage credentials Secret (temporary credentials).
pub const SESSION_TOKEN_KEY: &str = "AWS_SESSION_TOKEN";

/// The type an image pull secret must have, and its one key.
pub const DOCKER_CONFIG_JSON: (&str, &str) =
    ("kubernetes.io/dockerconfigjson", ".dockerconfigjson");

/// What the template of a job in `namespace` takes from `secrets` (each referenced Secret as read
/// from the hub, `None` when it does not exist): only the keys it uses — every key for `envFrom`
/// and for `secretFiles` without items. Refuses a missing Secret or key, and an image pull secret
/// of another type, naming it. A storage `credentialsSecret` gives `AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY` (both required) and `AWS_SESSION_TOKEN` when it has one.
pub fn select(
    template: &gpufed_crds::WorkloadTemplate,
    namespace: &str,
    secrets: &BTreeMap<String, Option<k8s_openapi::api::core::v1::Secret>>,
) -> Result<BTreeMap<String, SecretPayload>, Unavailable> {
    let mut out: BTreeMap<String, SecretPayload> = BTreeMap::new();
    let mut take = |name: &str, key: Option<&str>, field: &str| -> Result<(), Unavailable> {
        let Some(Some(secret)) = secrets.get(name) else {
            return Err(Unavailable {
                reason: "SecretNotFound",
                message: format!(
                    "{field} refers to Secret {namespace}/{name}, which does not exist: create it in the job's namespace on the hub"
                ),
            });
        };
        let data = secret.data.clone().unwrap_or_default();
        let entry = out
            .entry(name.to_string())
            .or_insert_with(|| SecretPayload {
                type_: secret.type_.clone().unwrap_or_else(|| "Opaque".into()),
                data: BTreeMap::new(),
            });
        match key {
            Some(key) => {
                let value = data.get(key).ok_or_else(|| Unavailable {
                    reason: "SecretKeyNotFound",
                    message: format!(
                        "{field} refers to key {key:?} of Secret {namespace}/{name}, which has no such key (it has: {}): add the key or fix the reference",
                        data.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                })?;
                entry.data.insert(key.to_string(), value.clone());
            }
            None => entry.data.extend(data),
        }
        Ok(())
    };
    for c in &template.containers {
        for e in &c.env {
            if let Some(r) = e.value_from.as_ref().map(|v| &v.secret_key_ref) {
                let field = format!("container {:?} env {:?}", c.name, e.name);
                take(&r.name, Some(&r.key), &field)?;
            }
        }
        for e in &c.env_from {
            take(
                &e.secret_ref.name,
                None,
                &format!("container {:?} envFrom", c.name),
            )?;
        }
    }
    for f in &template.secret_files {
        let field = format!("secretFiles {:?}", f.name);
        if f.items.is_empty() {
            take(&f.secret_name, None, &field)?;
        }
        for i in &f.items {
            take(&f.secret_name, Some(&i.key), &field)?;
        }
    }
    // Storage credentials (ADR 0029): both keys must be there before anything runs; a session
    // token goes along when the Secret has one.
    let storage = template
        .inputs
        .iter()
        .map(|i| {
            (
                format!("inputs {:?} credentialsSecret", i.name),
                &i.credentials_secret,
            )
        })
        .chain(template.outputs.iter().map(|o| {
            (
                format!("outputs {:?} credentialsSecret", o.name),
                &o.credentials_secret,
            )
        }));
    for (field, name) in storage {
        let Some(name) = name else { continue };
        for key in gpufed_crds::data::CREDENTIAL_KEYS {
            take(name, Some(key), &field)?;
        }
        let has_token = secrets
            .get(name)
            .and_then(|s| s.as_ref())
            .and_then(|s| s.data.as_ref())
            .is_some_and(|d| d.contains_key(SESSION_TOKEN_KEY));
        if has_token {
            take(name, Some(SESSION_TOKEN_KEY), &field)?;
        }
    }
    for r in &template.image_pull_secrets {
        let (ty, key) = DOCKER_CONFIG_JSON;
        take(&r.name, Some(key), "imagePullSecrets").map_err(|mut e| {
            e.message
                .push_str(&format!(" (an image pull secret is of type {ty})"));
            e
        })?;
        let actual = secrets
            .get(&r.name)
            .and_then(|s| s.as_ref())
            .and_then(|s| s.type_.as_deref());
        if actual != Some(ty) {
            return Err(Unavailable {
                reason: "SecretWrongType",
                message: format!(
                    "imagePullSecrets refers to Secret {namespace}/{}, which is not of type {ty}: create it with `kubectl create secret docker-registry`",
                    r.name
                ),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(attempt: u32, cluster: &str) -> Binding {
        Binding {
            job_uid: "uid-1".into(),
            placement: format!("train-uid-1-{attempt}"),
            attempt,
            cluster: cluster.into(),
        }
    }

    fn secrets() -> BTreeMap<String, SecretPayload> {
        BTreeMap::from([(
            "hf".to_string(),
            SecretPayload {
                type_: "Opaque".into(),
                data: BTreeMap::from([("token".to_string(), ByteString(b"s3cr3t".to_vec()))]),
            },
        )])
    }

    fn hub_secret(ty: &str, data: &[(&str, &str)]) -> Option<k8s_openapi::api::core::v1::Secret> {
        Some(k8s_openapi::api::core::v1::Secret {
            type_: Some(ty.into()),
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        })
    }

    fn template(value: serde_json::Value) -> gpufed_crds::WorkloadTemplate {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn only_the_keys_the_template_uses_are_taken() {
        let t = template(serde_json::json!({
            "containers": [{"name": "main", "image": "x",
                "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}],
                "envFrom": [{"secretRef": {"name": "aws"}}]}],
            "secretFiles": [{"name": "gcs", "secretName": "gcs", "mountPath": "/var/run/gcs",
                "items": [{"key": "key.json", "path": "key.json"}]}],
            "imagePullSecrets": [{"name": "registry"}]
        }));
        let secrets = BTreeMap::from([
            (
                "hf".to_string(),
                hub_secret("Opaque", &[("token", "t"), ("other", "o")]),
            ),
            (
                "aws".to_string(),
                hub_secret("Opaque", &[("A", "1"), ("B", "2")]),
            ),
            (
                "gcs".to_string(),
                hub_secret("Opaque", &[("key.json", "{}"), ("unused", "u")]),
            ),
            (
                "registry".to_string(),
                hub_secret(DOCKER_CONFIG_JSON.0, &[(".dockerconfigjson", "{}")]),
            ),
        ]);
        let got = select(&t, "team-a", &secrets).unwrap();
        let keys = |n: &str| got[n].data.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys("hf"), ["token"]);
        assert_eq!(keys("aws"), ["A", "B"]);
        assert_eq!(keys("gcs"), ["key.json"]);
        assert_eq!(got["registry"].type_, DOCKER_CONFIG_JSON.0);
    }

    #[test]
    fn a_missing_secret_or_key_or_a_pull_secret_of_another_type_is_named() {
        let t = template(serde_json::json!({
            "containers": [{"name": "main", "image": "x",
                "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]}],
            "imagePullSecrets": [{"name": "registry"}]
        }));
        let none = BTreeMap::from([("hf".to_string(), None)]);
        let e = select(&t, "team-a", &none).unwrap_err();
        assert_eq!(e.reason, "SecretNotFound");
        assert!(
            e.message.contains("Secret team-a/hf, which does not exist"),
            "{}",
            e.message
        );
        let no_key = BTreeMap::from([("hf".to_string(), hub_secret("Opaque", &[("tok", "t")]))]);
        let e = select(&t, "team-a", &no_key).unwrap_err();
        assert_eq!(e.reason, "SecretKeyNotFound");
        assert!(
            e.message.contains("key \"token\" of Secret team-a/hf"),
            "{}",
            e.message
        );
        let opaque_registry = BTreeMap::from([
            ("hf".to_string(), hub_secret("Opaque", &[("token", "t")])),
            (
                "registry".to_string(),
                hub_secret("Opaque", &[(".dockerconfigjson", "{}")]),
            ),
        ]);
        let e = select(&t, "team-a", &opaque_registry).unwrap_err();
        assert_eq!(e.reason, "SecretWrongType");
    }

    #[test]
    fn storage_credentials_take_both_keys_and_a_session_token_or_name_the_missing_key() {
        let t = template(serde_json::json!({
            "containers": [{"name": "main", "image": "x"}],
            "inputs": [{"name": "dataset", "endpoint": "https://s3.example.com", "bucket": "data",
                "key": "a.bin", "mountPath": "/data", "credentialsSecret": "s3"}],
            "outputs": [{"name": "ckpt", "path": "/out", "endpoint": "https://s3.example.com",
                "bucket": "runs", "credentialsSecret": "s3-write"}]
        }));
        assert_eq!(
            t.secret_names().into_iter().collect::<Vec<_>>(),
            ["s3", "s3-write"]
        );
        let full = BTreeMap::from([
            (
                "s3".to_string(),
                hub_secret(
                    "Opaque",
                    &[
                        ("AWS_ACCESS_KEY_ID", "a"),
                        ("AWS_SECRET_ACCESS_KEY", "s"),
                        ("AWS_SESSION_TOKEN", "t"),
                        ("unrelated", "u"),
                    ],
                ),
            ),
            (
                "s3-write".to_string(),
                hub_secret(
                    "Opaque",
                    &[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "s")],
                ),
            ),
        ]);
        let got = select(&t, "team-a", &full).unwrap();
        let keys = |n: &str| got[n].data.keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            keys("s3"),
            [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN"
            ]
        );
        assert_eq!(
            keys("s3-write"),
            ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
        );
        let mut half = full.clone();
        half.insert(
            "s3".to_string(),
            hub_secret("Opaque", &[("AWS_ACCESS_KEY_ID", "a")]),
        );
        let e = select(&t, "team-a", &half).unwrap_err();
        assert_eq!(e.reason, "SecretKeyNotFound");
        assert!(
            e.message.contains(
                "inputs \"dataset\" credentialsSecret refers to key \"AWS_SECRET_ACCESS_KEY\" of Secret team-a/s3"
            ),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_sealed_blob_opens_with_the_member_key_for_its_own_binding() {
        let key = SealingKey::generate();
        let b = binding(1, "alpha");
        let blob = seal(Some(&key.public_base64()), &b, secrets()).unwrap();
        assert!(!blob.contains("s3cr3t"));
        assert!(!String::from_utf8_lossy(&B64.decode(&blob).unwrap()).contains("s3cr3t"));
        assert_eq!(open_blob(&key, &blob, &b).unwrap(), secrets());
    }

    #[test]
    fn another_member_key_cannot_open_it() {
        let alpha = SealingKey::generate();
        let beta = SealingKey::generate();
        let blob = seal(
            Some(&alpha.public_base64()),
            &binding(1, "alpha"),
            secrets(),
        )
        .unwrap();
        assert_eq!(
            open_blob(&beta, &blob, &binding(1, "alpha")),
            Err(SealingError::DoesNotOpen)
        );
    }

    #[test]
    fn a_blob_replayed_into_another_attempt_or_member_is_refused() {
        let key = SealingKey::generate();
        let blob = seal(Some(&key.public_base64()), &binding(1, "alpha"), secrets()).unwrap();
        for other in [binding(2, "alpha"), binding(1, "beta")] {
            let err = open_blob(&key, &blob, &other).unwrap_err();
            assert!(
                matches!(err, SealingError::WrongBinding { .. }),
                "{other}: {err}"
            );
            assert!(err.to_string().contains("refusing a replayed blob"));
        }
        let mut other_job = binding(1, "alpha");
        other_job.job_uid = "uid-2".into();
        assert!(matches!(
            open_blob(&key, &blob, &other_job),
            Err(SealingError::WrongBinding { .. })
        ));
    }

    #[test]
    fn a_tampered_blob_does_not_open() {
        let key = SealingKey::generate();
        let b = binding(1, "alpha");
        let blob = seal(Some(&key.public_base64()), &b, secrets()).unwrap();
        let mut raw = B64.decode(&blob).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert_eq!(
            open_blob(&key, &B64.encode(&raw), &b),
            Err(SealingError::DoesNotOpen)
        );
        assert_eq!(
            open_blob(&key, "not base64!", &b),
            Err(SealingError::DoesNotOpen)
        );
    }

    #[test]
    fn a_member_without_a_valid_key_gets_nothing_sealed() {
        let b = binding(1, "alpha");
        assert!(matches!(
            seal(None, &b, secrets()),
            Err(SealingError::NoKey { .. })
        ));
        assert!(matches!(
            seal(Some("c2hvcnQ="), &b, secrets()),
            Err(SealingError::BadKey { .. })
        ));
    }

    #[test]
    fn a_blob_larger_than_a_placement_holds_is_refused_with_the_sizes() {
        let key = SealingKey::generate();
        let mut big = secrets();
        big.get_mut("hf")
            .unwrap()
            .data
            .insert("weights".into(), ByteString(vec![7; MAX_SEALED_SECRETS]));
        let err = seal(Some(&key.public_base64()), &binding(1, "alpha"), big).unwrap_err();
        assert!(matches!(err, SealingError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("262144"));
    }
}
