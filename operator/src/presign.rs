//! Presigned GET URLs for job inputs whose tenant lets the hub sign them (`inputs[].presign`,
//! docs/adr/0029-job-data-on-s3.md). When the hub seals a Placement's Secrets ([`crate::sealing`]),
//! [`apply`] signs one URL per such input with the keys of its `credentialsSecret` and puts the
//! URL, not the keys, into what is sealed: the member sees one object's URL for one attempt.
//!
//! Pure: the keys come from what [`crate::sealing::select`] took; nothing is read or sent here.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use gpufed_crds::data::{CREDENTIAL_KEYS, presigned_url_key};
use gpufed_crds::{DataInput, WorkloadTemplate};
use k8s_openapi::ByteString;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::sealing::{SESSION_TOKEN_KEY, SecretPayload};

/// Longest a SigV4 presigned URL may be valid.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Added to the attempt's `maxDuration`: the URL is signed when the Placement is written, and the
/// pods start some time after.
pub const START_SLACK: Duration = Duration::from_secs(3600);

/// Why an input could not be presigned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PresignError {
    /// The input has no key or no credentials Secret (the CRD's rule refuses that already).
    #[error("input {input:?}: presign needs key and credentialsSecret")]
    NotPresignable {
        /// The input's name.
        input: String,
    },
    /// The credentials were not among what was taken from the Secret.
    #[error("input {input:?}: Secret {secret:?} has no {key} to sign with")]
    MissingKey {
        /// The input's name.
        input: String,
        /// The credentials Secret.
        secret: String,
        /// The key that is missing.
        key: &'static str,
    },
    /// The endpoint or bucket cannot be addressed.
    #[error("input {input:?}: bad storage URL {endpoint:?} (bucket {bucket:?}): {reason}")]
    BadUrl {
        /// The input's name.
        input: String,
        /// Endpoint as given.
        endpoint: String,
        /// Bucket as given.
        bucket: String,
        /// What is wrong.
        reason: String,
    },
}

/// How long the URLs of an attempt with `max_duration` stay valid.
pub fn ttl_for(max_duration: Duration) -> Duration {
    max_duration.saturating_add(START_SLACK).min(MAX_TTL)
}

/// A GET URL for `input`'s key, path-style, signed with `credentials` for `ttl`.
pub fn get_url(
    input: &DataInput,
    credentials: &Credentials,
    ttl: Duration,
) -> Result<url::Url, PresignError> {
    let bad = |reason: String| PresignError::BadUrl {
        input: input.name.clone(),
        endpoint: input.endpoint.clone(),
        bucket: input.bucket.clone(),
        reason,
    };
    let key = input
        .key
        .as_deref()
        .ok_or_else(|| PresignError::NotPresignable {
            input: input.name.clone(),
        })?;
    let endpoint = url::Url::parse(&input.endpoint).map_err(|e| bad(e.to_string()))?;
    let region = input.region.clone().unwrap_or_else(|| "us-east-1".into());
    let bucket = Bucket::new(endpoint, UrlStyle::Path, input.bucket.clone(), region)
        .map_err(|e| bad(e.to_string()))?;
    Ok(bucket.get_object(Some(credentials), key).sign(ttl))
}

fn text(payload: &SecretPayload, key: &str) -> Option<String> {
    payload
        .data
        .get(key)
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
}

/// Signs a URL for every presigned input of `t` with the keys in `selected` (what
/// [`crate::sealing::select`] took, by hub Secret name), adds it to that Secret's payload under
/// [`presigned_url_key`], and removes the storage keys from every Secret that nothing else of the
/// template uses: the member gets the URLs, not the keys.
pub fn apply(
    t: &WorkloadTemplate,
    selected: &mut BTreeMap<String, SecretPayload>,
    ttl: Duration,
) -> Result<(), PresignError> {
    let presigned: Vec<&DataInput> = t.inputs.iter().filter(|i| i.presign).collect();
    if presigned.is_empty() {
        return Ok(());
    }
    for input in &presigned {
        let secret =
            input
                .credentials_secret
                .clone()
                .ok_or_else(|| PresignError::NotPresignable {
                    input: input.name.clone(),
                })?;
        let payload = selected
            .get_mut(&secret)
            .ok_or_else(|| PresignError::MissingKey {
                input: input.name.clone(),
                secret: secret.clone(),
                key: CREDENTIAL_KEYS[0],
            })?;
        let [access, secret_key] = CREDENTIAL_KEYS.map(|k| {
            text(payload, k).ok_or_else(|| PresignError::MissingKey {
                input: input.name.clone(),
                secret: secret.clone(),
                key: k,
            })
        });
        let (access, secret_key) = (access?, secret_key?);
        let credentials = match text(payload, SESSION_TOKEN_KEY) {
            Some(token) => Credentials::new_with_token(access, secret_key, token),
            None => Credentials::new(access, secret_key),
        };
        let url = get_url(input, &credentials, ttl)?;
        payload.data.insert(
            presigned_url_key(&input.name),
            ByteString(url.as_str().as_bytes().to_vec()),
        );
    }
    // Secrets that something else delivers as they are keep their keys.
    let mut rest = t.clone();
    for i in rest.inputs.iter_mut().filter(|i| i.presign) {
        i.credentials_secret = None;
    }
    let needed: BTreeSet<String> = rest.secret_names().into_iter().map(String::from).collect();
    for input in &presigned {
        let Some(secret) = &input.credentials_secret else {
            continue;
        };
        if needed.contains(secret) {
            continue;
        }
        if let Some(payload) = selected.get_mut(secret) {
            for k in CREDENTIAL_KEYS.iter().chain([&SESSION_TOKEN_KEY]) {
                payload.data.remove(*k);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(pairs: &[(&str, &str)]) -> SecretPayload {
        SecretPayload {
            type_: "Opaque".into(),
            data: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        }
    }

    fn template(value: serde_json::Value) -> WorkloadTemplate {
        serde_json::from_value(value).unwrap()
    }

    fn keys(p: &SecretPayload) -> Vec<&str> {
        p.data.keys().map(String::as_str).collect()
    }

    #[test]
    fn a_presigned_input_gets_a_signed_url_and_the_member_gets_no_keys() {
        let t = template(serde_json::json!({
            "containers": [{"name": "main", "image": "x"}],
            "inputs": [{"name": "data-set", "endpoint": "https://s3.example.com", "bucket": "data",
                "region": "eu-west-1", "key": "alpaca/train.jsonl", "mountPath": "/data",
                "credentialsSecret": "s3", "presign": true}]
        }));
        let mut selected = BTreeMap::from([(
            "s3".to_string(),
            payload(&[
                ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
                ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI"),
            ]),
        )]);
        apply(&t, &mut selected, Duration::from_secs(600)).unwrap();
        let p = &selected["s3"];
        assert_eq!(keys(p), ["GPUFED_PRESIGNED_URL_DATA_SET"]);
        let url = text(p, "GPUFED_PRESIGNED_URL_DATA_SET").unwrap();
        assert!(
            url.starts_with("https://s3.example.com/data/alpaca/train.jsonl?"),
            "{url}"
        );
        for part in [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Credential=AKIDEXAMPLE%2F",
            "%2Feu-west-1%2Fs3%2Faws4_request",
            "X-Amz-Expires=600",
            "X-Amz-Signature=",
        ] {
            assert!(url.contains(part), "{part} missing from {url}");
        }
        assert!(!url.contains("wJalrXUtnFEMI"));
    }

    #[test]
    fn a_secret_that_another_input_or_output_uses_keeps_its_keys() {
        let t = template(serde_json::json!({
            "containers": [{"name": "main", "image": "x"}],
            "inputs": [{"name": "a", "endpoint": "https://s3.example.com", "bucket": "data",
                "key": "a", "mountPath": "/a", "credentialsSecret": "s3", "presign": true}],
            "outputs": [{"name": "out", "path": "/out", "endpoint": "https://s3.example.com",
                "bucket": "runs", "credentialsSecret": "s3"}]
        }));
        let mut selected = BTreeMap::from([(
            "s3".to_string(),
            payload(&[
                ("AWS_ACCESS_KEY_ID", "a"),
                ("AWS_SECRET_ACCESS_KEY", "s"),
                ("AWS_SESSION_TOKEN", "t"),
            ]),
        )]);
        apply(&t, &mut selected, Duration::from_secs(60)).unwrap();
        assert_eq!(
            keys(&selected["s3"]),
            [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
                "GPUFED_PRESIGNED_URL_A"
            ]
        );
        assert!(
            text(&selected["s3"], "GPUFED_PRESIGNED_URL_A")
                .unwrap()
                .contains("X-Amz-Security-Token=t")
        );
    }

    #[test]
    fn without_the_keys_nothing_is_signed_and_the_ttl_is_bounded() {
        let t = template(serde_json::json!({
            "containers": [{"name": "main", "image": "x"}],
            "inputs": [{"name": "a", "endpoint": "https://s3.example.com", "bucket": "data",
                "key": "a", "mountPath": "/a", "credentialsSecret": "s3", "presign": true}]
        }));
        let mut selected =
            BTreeMap::from([("s3".to_string(), payload(&[("AWS_ACCESS_KEY_ID", "a")]))]);
        assert_eq!(
            apply(&t, &mut selected, Duration::from_secs(60)),
            Err(PresignError::MissingKey {
                input: "a".into(),
                secret: "s3".into(),
                key: "AWS_SECRET_ACCESS_KEY"
            })
        );
        assert_eq!(ttl_for(Duration::from_secs(600)), Duration::from_secs(4200));
        assert_eq!(ttl_for(Duration::from_secs(7 * 24 * 3600)), MAX_TTL);
    }
}
