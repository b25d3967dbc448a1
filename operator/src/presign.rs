//! Presigned URLs for job data whose tenant lets the hub sign them (`inputs[].presign`,
//! `outputs[].presign`, docs/adr/0029-job-data-on-s3.md). When the hub seals a Placement's
//! Secrets ([`crate::sealing`]), [`apply`] signs, with the keys of the `credentialsSecret`, one GET
//! URL per such input and one PUT URL per file and replica of such an output, and puts the URLs,
//! not the keys, into what is sealed: the member sees the URLs of named objects for one attempt.
//!
//! Presigned outputs are single PUTs (at most 5 GiB a file): a multipart upload's part URLs name
//! an upload id, which only exists once the hub has created the upload on the tenant's storage —
//! I/O at placement time, and an upload left behind by every attempt that never uploads.
//!
//! Pure: the keys come from what [`crate::sealing::select`] took; nothing is read or sent here.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use gpufed_crds::data::{CREDENTIAL_KEYS, presigned_puts_key, presigned_url_key};
use gpufed_crds::{DataInput, DataOutput, WorkloadTemplate};
use k8s_openapi::ByteString;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::sealing::{SESSION_TOKEN_KEY, SecretPayload};

/// Longest a SigV4 presigned URL may be valid.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Added to the attempt's `maxDuration`: the URL is signed when the Placement is written, and the
/// pods start some time after.
pub const START_SLACK: Duration = Duration::from_secs(3600);

/// Most PUT URLs one presigned output may need (files × replicas): each is about a kilobyte of
/// the sealed Secret, which the apiserver limits to 1 MiB.
pub const MAX_PUT_URLS: usize = 256;

/// Why an input or output could not be presigned (`input` names either).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PresignError {
    /// The input has no key or no credentials Secret (the CRD's rule refuses that already).
    #[error("{input:?}: presign needs key (files for an output) and credentialsSecret")]
    NotPresignable {
        /// The input's name.
        input: String,
    },
    /// The credentials were not among what was taken from the Secret.
    #[error("{input:?}: Secret {secret:?} has no {key} to sign with")]
    MissingKey {
        /// The input's name.
        input: String,
        /// The credentials Secret.
        secret: String,
        /// The key that is missing.
        key: &'static str,
    },
    /// The endpoint or bucket cannot be addressed.
    #[error("{input:?}: bad storage URL {endpoint:?} (bucket {bucket:?}): {reason}")]
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
    /// A presigned output would need more URLs than a sealed Secret holds.
    #[error(
        "output {output:?}: presigning {files} files for {replicas} replicas needs {urls} PUT URLs, more than {MAX_PUT_URLS}: name fewer files, or drop presign so the uploader uses the keys"
    )]
    TooManyUrls {
        /// The output's name.
        output: String,
        /// Its files.
        files: usize,
        /// The job's replicas.
        replicas: u32,
        /// URLs needed.
        urls: usize,
    },
}

/// How long the URLs of an attempt with `max_duration` stay valid.
pub fn ttl_for(max_duration: Duration) -> Duration {
    max_duration.saturating_add(START_SLACK).min(MAX_TTL)
}

/// `name`'s bucket at `endpoint`, path-style; an unusable endpoint or bucket is [`PresignError::BadUrl`].
fn bucket_of(
    name: &str,
    endpoint: &str,
    bucket: &str,
    region: Option<&str>,
) -> Result<Bucket, PresignError> {
    let bad = |reason: String| PresignError::BadUrl {
        input: name.to_string(),
        endpoint: endpoint.to_string(),
        bucket: bucket.to_string(),
        reason,
    };
    let url = url::Url::parse(endpoint).map_err(|e| bad(e.to_string()))?;
    let region = region.unwrap_or("us-east-1").to_string();
    Bucket::new(url, UrlStyle::Path, bucket.to_string(), region).map_err(|e| bad(e.to_string()))
}

/// A GET URL for `input`'s key, path-style, signed with `credentials` for `ttl`.
pub fn get_url(
    input: &DataInput,
    credentials: &Credentials,
    ttl: Duration,
) -> Result<url::Url, PresignError> {
    let key = input
        .key
        .as_deref()
        .ok_or_else(|| PresignError::NotPresignable {
            input: input.name.clone(),
        })?;
    let bucket = bucket_of(
        &input.name,
        &input.endpoint,
        &input.bucket,
        input.region.as_deref(),
    )?;
    Ok(bucket.get_object(Some(credentials), key).sign(ttl))
}

/// A PUT URL for `key` of `output`'s bucket, path-style, signed with `credentials` for `ttl`.
pub fn put_url(
    output: &DataOutput,
    key: &str,
    credentials: &Credentials,
    ttl: Duration,
) -> Result<url::Url, PresignError> {
    let bucket = bucket_of(
        &output.name,
        &output.endpoint,
        &output.bucket,
        output.region.as_deref(),
    )?;
    Ok(bucket.put_object(Some(credentials), key).sign(ttl))
}

fn text(payload: &SecretPayload, key: &str) -> Option<String> {
    payload
        .data
        .get(key)
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
}

/// The keys of Secret `secret` (by hub name) in `selected`, to sign for `what`.
fn credentials_of(
    selected: &BTreeMap<String, SecretPayload>,
    what: &str,
    secret: Option<&String>,
) -> Result<Credentials, PresignError> {
    let secret = secret.ok_or_else(|| PresignError::NotPresignable {
        input: what.to_string(),
    })?;
    let missing = |key: &'static str| PresignError::MissingKey {
        input: what.to_string(),
        secret: secret.clone(),
        key,
    };
    let payload = selected
        .get(secret)
        .ok_or_else(|| missing(CREDENTIAL_KEYS[0]))?;
    let [access, secret_key] = CREDENTIAL_KEYS.map(|k| text(payload, k).ok_or_else(|| missing(k)));
    let (access, secret_key) = (access?, secret_key?);
    Ok(match text(payload, SESSION_TOKEN_KEY) {
        Some(token) => Credentials::new_with_token(access, secret_key, token),
        None => Credentials::new(access, secret_key),
    })
}

/// Puts `value` under `key` into the payload of Secret `secret` in `selected`.
fn insert(
    selected: &mut BTreeMap<String, SecretPayload>,
    secret: Option<&String>,
    key: String,
    value: &str,
) {
    if let Some(payload) = secret.and_then(|s| selected.get_mut(s)) {
        payload
            .data
            .insert(key, ByteString(value.as_bytes().to_vec()));
    }
}

/// Signs a GET URL for every presigned input of `t`, and a PUT URL for every file of every
/// presigned output and each of the job's `replicas`, with the keys in `selected` (what
/// [`crate::sealing::select`] took, by hub Secret name). An input's URL goes into its Secret's
/// payload under [`presigned_url_key`]; an output's, per replica, as a JSON object from object key
/// to URL under [`presigned_puts_key`]. Then the storage keys are removed from every Secret that
/// nothing else of the template uses: the member gets the URLs, not the keys.
pub fn apply(
    t: &WorkloadTemplate,
    replicas: u32,
    selected: &mut BTreeMap<String, SecretPayload>,
    ttl: Duration,
) -> Result<(), PresignError> {
    let inputs: Vec<&DataInput> = t.inputs.iter().filter(|i| i.presign).collect();
    let outputs: Vec<&DataOutput> = t.outputs.iter().filter(|o| o.presign).collect();
    if inputs.is_empty() && outputs.is_empty() {
        return Ok(());
    }
    for input in &inputs {
        let credentials = credentials_of(selected, &input.name, input.credentials_secret.as_ref())?;
        let url = get_url(input, &credentials, ttl)?;
        insert(
            selected,
            input.credentials_secret.as_ref(),
            presigned_url_key(&input.name),
            url.as_str(),
        );
    }
    for output in &outputs {
        let secret = output.credentials_secret.as_ref();
        let credentials = credentials_of(selected, &output.name, secret)?;
        if output.files.is_empty() {
            return Err(PresignError::NotPresignable {
                input: output.name.clone(),
            });
        }
        let urls = output.files.len() * replicas.max(1) as usize;
        if urls > MAX_PUT_URLS {
            return Err(PresignError::TooManyUrls {
                output: output.name.clone(),
                files: output.files.len(),
                replicas,
                urls,
            });
        }
        for replica in 0..replicas.max(1) {
            let mut puts = BTreeMap::new();
            for file in &output.files {
                let key = output.object_key(replicas, replica, file);
                let url = put_url(output, &key, &credentials, ttl)?;
                puts.insert(key, url.to_string());
            }
            let json = serde_json::to_string(&puts).unwrap_or_default();
            insert(
                selected,
                secret,
                presigned_puts_key(&output.name, &replica.to_string()),
                &json,
            );
        }
    }
    // Secrets that something else delivers as they are keep their keys.
    let mut rest = t.clone();
    for i in rest.inputs.iter_mut().filter(|i| i.presign) {
        i.credentials_secret = None;
    }
    for o in rest.outputs.iter_mut().filter(|o| o.presign) {
        o.credentials_secret = None;
    }
    let needed: BTreeSet<String> = rest.secret_names().into_iter().map(String::from).collect();
    let presigned = inputs
        .iter()
        .filter_map(|i| i.credentials_secret.as_ref())
        .chain(outputs.iter().filter_map(|o| o.credentials_secret.as_ref()));
    for secret in presigned {
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
        apply(&t, 1, &mut selected, Duration::from_secs(600)).unwrap();
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
        apply(&t, 1, &mut selected, Duration::from_secs(60)).unwrap();
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
            apply(&t, 1, &mut selected, Duration::from_secs(60)),
            Err(PresignError::MissingKey {
                input: "a".into(),
                secret: "s3".into(),
                key: "AWS_SECRET_ACCESS_KEY"
            })
        );
        assert_eq!(ttl_for(Duration::from_secs(600)), Duration::from_secs(4200));
        assert_eq!(ttl_for(Duration::from_secs(7 * 24 * 3600)), MAX_TTL);
    }

    #[test]
    fn a_presigned_output_gets_a_put_url_per_file_and_replica_and_the_member_gets_no_keys() {
        let t = template(serde_json::json!({
            "containers": [{"name": "main", "image": "x"}],
            "outputs": [{"name": "final-ckpt", "path": "/out", "endpoint": "https://s3.example.com",
                "bucket": "runs", "prefix": "job-1", "credentialsSecret": "s3-write",
                "files": ["model.safetensors", "ckpt/opt.pt"], "presign": true}]
        }));
        let mut selected = BTreeMap::from([(
            "s3-write".to_string(),
            payload(&[
                ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
                ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI"),
            ]),
        )]);
        apply(&t, 2, &mut selected, Duration::from_secs(900)).unwrap();
        let p = &selected["s3-write"];
        assert_eq!(
            keys(p),
            [
                "GPUFED_PRESIGNED_PUTS_FINAL_CKPT_0",
                "GPUFED_PRESIGNED_PUTS_FINAL_CKPT_1"
            ]
        );
        let puts: BTreeMap<String, String> =
            serde_json::from_str(&text(p, "GPUFED_PRESIGNED_PUTS_FINAL_CKPT_1").unwrap()).unwrap();
        assert_eq!(
            puts.keys().collect::<Vec<_>>(),
            [
                "job-1/replica-1/ckpt/opt.pt",
                "job-1/replica-1/model.safetensors"
            ]
        );
        let url = &puts["job-1/replica-1/model.safetensors"];
        assert!(
            url.starts_with("https://s3.example.com/runs/job-1/replica-1/model.safetensors?"),
            "{url}"
        );
        assert!(url.contains("X-Amz-Expires=900") && url.contains("X-Amz-Signature="));
        assert!(!url.contains("wJalrXUtnFEMI"));
    }

    #[test]
    fn a_presigned_output_needing_too_many_urls_is_refused_with_the_fix() {
        let files: Vec<String> = (0..16).map(|i| format!("f{i}")).collect();
        let t = template(serde_json::json!({
            "containers": [{"name": "main", "image": "x"}],
            "outputs": [{"name": "o", "path": "/out", "endpoint": "https://s3.example.com",
                "bucket": "runs", "credentialsSecret": "s3", "files": files, "presign": true}]
        }));
        let mut selected = BTreeMap::from([(
            "s3".to_string(),
            payload(&[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "s")]),
        )]);
        let e = apply(&t, 17, &mut selected, Duration::from_secs(60)).unwrap_err();
        assert!(
            e.to_string()
                .contains("needs 272 PUT URLs, more than 256: name fewer files"),
            "{e}"
        );
        assert!(apply(&t, 16, &mut selected, Duration::from_secs(60)).is_ok());
    }
}
