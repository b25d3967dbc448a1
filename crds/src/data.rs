//! Job data on S3-compatible object storage (`docs/adr/0029-job-data-on-s3.md`): `inputs` fetched
//! into each replica before its containers start, `outputs` uploaded from each replica after they
//! exit, and what the uploads stored, as reported in `Placement.status.outputs` and
//! `ComputeJob.status.outputs`.
//!
//! The member's agent runs the project's helper `gpufed-data` for both (an init container per
//! input, one uploader container per output), from the member's own image, never the tenant's.
//! Credentials come from a Secret of the job's namespace on the hub, sealed to the member like any
//! other Secret the template names (ADR 0020).

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::workload::{DNS_LABEL_PATTERN, SECRET_NAME_PATTERN};

/// Pattern of an S3 bucket name (3 to 63 of lowercase letters, digits, dots and hyphens).
pub const BUCKET_PATTERN: &str = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$";
/// Pattern of a sha256 digest: 64 lowercase hex digits.
pub const SHA256_PATTERN: &str = r"^[0-9a-f]{64}$";
/// Keys of a credentials Secret that the helper reads.
pub const CREDENTIAL_KEYS: [&str; 2] = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];

/// Most inputs of one template.
pub const MAX_INPUTS: usize = 8;
/// Most outputs of one template.
pub const MAX_OUTPUTS: usize = 4;
/// Most objects one output's record lists (the helper's manifest fits the kubelet's 4096-byte
/// termination message, so fewer are listed in practice; `omitted` counts the rest).
pub const MAX_RECORDED_OBJECTS: usize = 64;
/// Most output records of one status (one per output and replica).
pub const MAX_OUTPUT_RECORDS: usize = 64;
/// Most files of one presigned output.
pub const MAX_PRESIGNED_FILES: usize = 16;
/// Largest file a presigned output uploads: one PUT (S3's limit). Larger files need a multipart
/// upload, which needs the keys (ADR 0029).
pub const MAX_PRESIGNED_FILE_BYTES: u64 = 5 << 30;

/// One object or every object under a prefix, downloaded into each replica before its containers
/// start, verified, and mounted read-only.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.key) != has(self.prefix)").message("inputs[]: set exactly one of key (one object) and prefix (every object under it)"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.prefix) || (!has(self.size) && !has(self.sha256))").message("inputs[].size and inputs[].sha256 check one object: use them with key, not with prefix"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.presign) || !self.presign || (has(self.key) && has(self.credentialsSecret))").message("inputs[].presign needs key (a URL names one object) and credentialsSecret (the keys the hub signs with)"))]
pub struct DataInput {
    /// Name of this input (a DNS label of at most 40 characters, unique in the template), e.g.
    /// `dataset`.
    #[schemars(length(min = 1, max = 40), pattern(DNS_LABEL_PATTERN))]
    pub name: String,
    /// URL of the S3-compatible service, e.g. `https://s3.eu-west-1.amazonaws.com` (path-style
    /// requests: `<endpoint>/<bucket>/<key>`).
    #[schemars(length(min = 8, max = 512))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^https?://[^/?# ]+(/[^?# ]*)?$')").message("inputs[].endpoint must be the http(s) URL of the S3-compatible service, e.g. https://s3.eu-west-1.amazonaws.com (not s3://; the bucket goes in bucket)"))]
    pub endpoint: String,
    /// Region the requests are signed for; `us-east-1` when unset (most S3-compatible services
    /// accept any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), pattern(DNS_LABEL_PATTERN))]
    pub region: Option<String>,
    /// Bucket name.
    #[schemars(length(min = 3, max = 63))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$')").message("inputs[].bucket must be an S3 bucket name: 3 to 63 lowercase letters, digits, dots and hyphens, e.g. team-a-datasets"))]
    pub bucket: String,
    /// Key of one object, e.g. `datasets/alpaca/train.jsonl`; it appears as
    /// `<mountPath>/<last segment of the key>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = kube::core::Rule::new("!self.startsWith('/') && !self.endsWith('/') && !self.split('/').exists(s, s == '' || s == '.' || s == '..')").message("inputs[].key must be an object key without leading or trailing /, empty, . or .. segments, e.g. datasets/train.jsonl (use prefix for a directory)"))]
    pub key: Option<String>,
    /// Every object under this prefix, taken as a directory (`data/v1` means `data/v1/`), appears
    /// under `mountPath` by its key relative to the prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = kube::core::Rule::new("!self.startsWith('/') && !self.split('/').exists(s, s == '.' || s == '..')").message("inputs[].prefix must not start with / nor contain . or .. segments, e.g. datasets/alpaca/"))]
    pub prefix: Option<String>,
    /// Expected size of the object in bytes (with `key`): a different size fails the replica
    /// before the workload starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub size: Option<i64>,
    /// Expected sha256 of the object, 64 lowercase hex digits (with `key`): a different digest
    /// fails the replica before the workload starts, so the provider cannot swap the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 64, max = 64))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[0-9a-f]{64}$')").message("inputs[].sha256 must be 64 lowercase hex digits, as sha256sum prints them"))]
    pub sha256: Option<String>,
    /// Absolute directory the data appears in, read-only, in every container, e.g. `/data`. Not
    /// `/`, not under `/tmp`, `/dev`, `/proc` or `/sys`, no `..`.
    #[schemars(
        length(min = 2, max = 256),
        pattern(r"^/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$")
    )]
    #[x_kube(validation = kube::core::Rule::new("!self.contains('/../') && !self.endsWith('/..') && !self.contains('//') && !['/tmp', '/dev', '/proc', '/sys'].exists(p, self == p || self.startsWith(p + '/'))").message("inputs[].mountPath must be an absolute directory such as /data: not /, not under /tmp, /dev, /proc or /sys, without .. or //"))]
    pub mount_path: String,
    /// A Secret of the job's namespace on the hub with keys `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` (optionally `AWS_SESSION_TOKEN`), sealed to the member for the
    /// attempt (ADR 0020). Unset: anonymous requests (a public bucket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(SECRET_NAME_PATTERN))]
    pub credentials_secret: Option<String>,
    /// Let the hub sign a GET URL for `key` with the keys of `credentialsSecret` and send the
    /// member only that URL, sealed, instead of the keys: the provider sees one object's URL,
    /// valid for the attempt's `maxDuration` plus an hour (at most 7 days), never the keys.
    /// Needs `key` and `credentialsSecret`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub presign: bool,
}

/// Name of the key of an input's credentials Secret, as delivered to the member, that holds the
/// hub's presigned URL for input `name` (also the helper's environment variable).
pub fn presigned_url_key(name: &str) -> String {
    format!(
        "GPUFED_PRESIGNED_URL_{}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

/// Name of the key of an output's credentials Secret, as delivered to the member, that holds the
/// hub's presigned PUT URLs for output `name` and replica `replica` (a JSON object from object key
/// to URL; also the uploader's environment variable).
pub fn presigned_puts_key(name: &str, replica: &str) -> String {
    format!(
        "GPUFED_PRESIGNED_PUTS_{}_{replica}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

/// A directory of each replica whose files are uploaded under a prefix once the replica's
/// containers have exited; the uploads are listed in `status.outputs`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.presign) || !self.presign || (has(self.files) && size(self.files) > 0 && has(self.credentialsSecret))").message("outputs[].presign needs files (the fixed file names under path, whose keys the hub signs PUT URLs for: a whole directory cannot be presigned, list its files or drop presign) and credentialsSecret (the keys the hub signs with)"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.files) || size(self.files) == 0 || (has(self.presign) && self.presign)").message("outputs[].files lists the files of a presigned output: set presign: true, or drop files to upload every file under path"))]
pub struct DataOutput {
    /// Name of this output (a DNS label of at most 40 characters, unique in the template), e.g.
    /// `checkpoint`.
    #[schemars(length(min = 1, max = 40), pattern(DNS_LABEL_PATTERN))]
    pub name: String,
    /// Absolute directory, writable by every container, whose regular files are uploaded, e.g.
    /// `/output`. Not `/`, not under `/tmp`, `/dev`, `/proc` or `/sys`, no `..`.
    #[schemars(
        length(min = 2, max = 256),
        pattern(r"^/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$")
    )]
    #[x_kube(validation = kube::core::Rule::new("!self.contains('/../') && !self.endsWith('/..') && !self.contains('//') && !['/tmp', '/dev', '/proc', '/sys'].exists(p, self == p || self.startsWith(p + '/'))").message("outputs[].path must be an absolute directory such as /output: not /, not under /tmp, /dev, /proc or /sys, without .. or //"))]
    pub path: String,
    /// URL of the S3-compatible service, e.g. `https://s3.eu-west-1.amazonaws.com`.
    #[schemars(length(min = 8, max = 512))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^https?://[^/?# ]+(/[^?# ]*)?$')").message("outputs[].endpoint must be the http(s) URL of the S3-compatible service, e.g. https://s3.eu-west-1.amazonaws.com (not s3://; the bucket goes in bucket)"))]
    pub endpoint: String,
    /// Region the requests are signed for; `us-east-1` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), pattern(DNS_LABEL_PATTERN))]
    pub region: Option<String>,
    /// Bucket name.
    #[schemars(length(min = 3, max = 63))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$')").message("outputs[].bucket must be an S3 bucket name: 3 to 63 lowercase letters, digits, dots and hyphens, e.g. team-a-checkpoints"))]
    pub bucket: String,
    /// Prefix of the uploaded keys, e.g. `runs/42/`: a file `ckpt/model.safetensors` becomes
    /// `runs/42/ckpt/model.safetensors`. With several replicas each uploads under
    /// `<prefix>replica-<i>/`.
    #[serde(default)]
    #[schemars(length(max = 512))]
    #[x_kube(validation = kube::core::Rule::new("!self.startsWith('/') && !self.split('/').exists(s, s == '.' || s == '..')").message("outputs[].prefix must not start with / nor contain . or .. segments, e.g. runs/42/"))]
    pub prefix: String,
    /// A Secret of the job's namespace on the hub with keys `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` (optionally `AWS_SESSION_TOKEN`), sealed to the member for the
    /// attempt. Give it write access to the prefix only. Unset: anonymous requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(SECRET_NAME_PATTERN))]
    pub credentials_secret: Option<String>,
    /// With `presign`: the files, relative to `path`, that each replica uploads (at most 16),
    /// e.g. `model.safetensors` or `ckpt/optimizer.pt`. Each becomes the key `<prefix><file>`
    /// (`<prefix>replica-<i>/<file>` with several replicas). The upload fails if one is missing,
    /// or if `path` holds a file not listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 512)))]
    #[x_kube(validation = kube::core::Rule::new("self.all(f, !f.startsWith('/') && !f.endsWith('/') && !f.split('/').exists(s, s == '' || s == '.' || s == '..'))").message("outputs[].files must be file names relative to path, without leading or trailing /, empty, . or .. segments, e.g. ckpt/model.safetensors"))]
    #[x_kube(validation = kube::core::Rule::new("self.all(f, self.filter(g, g == f).size() == 1)").message("outputs[].files must not list a file twice"))]
    pub files: Vec<String>,
    /// Let the hub sign one PUT URL per file in `files` (and replica) with the keys of
    /// `credentialsSecret` and send the member only those URLs, sealed, instead of the keys: the
    /// provider can write those objects for the attempt's `maxDuration` plus an hour (at most 7
    /// days), and never sees the keys. Each file is one PUT, so at most 5 GiB (larger files need
    /// the keys, for a multipart upload). Needs `files` and `credentialsSecret`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub presign: bool,
}

impl DataOutput {
    /// The key that replica `replica` of a job of `replicas` uploads `file` (relative to `path`)
    /// to: `<prefix><file>`, or `<prefix>replica-<i>/<file>` with several replicas, a `/` added
    /// after a prefix that has none — as the member's uploader names them.
    pub fn object_key(&self, replicas: u32, replica: u32, file: &str) -> String {
        let mut prefix = self.prefix.clone();
        if replicas > 1 {
            if !prefix.is_empty() && !prefix.ends_with('/') {
                prefix.push('/');
            }
            prefix.push_str(&format!("replica-{replica}/"));
        }
        if prefix.is_empty() || prefix.ends_with('/') {
            format!("{prefix}{file}")
        } else {
            format!("{prefix}/{file}")
        }
    }
}

/// What one output of one replica uploaded, as its uploader reported it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct OutputRecord {
    /// The output's name in the template.
    #[schemars(length(max = 40))]
    pub name: String,
    /// The replica that uploaded it.
    pub replica: u32,
    /// Bucket of the objects.
    #[schemars(length(max = 63))]
    pub bucket: String,
    /// The objects, sorted by key (at most 64; `omitted` counts those left out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub objects: Vec<StoredObject>,
    /// Objects uploaded but not listed here (the uploader's report is limited to 4096 bytes).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One object an output stored.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StoredObject {
    /// Key in the bucket.
    #[schemars(length(max = 1024))]
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the content as uploaded, 64 lowercase hex digits (hashed on the member from
    /// the file it sent).
    #[schemars(length(max = 64))]
    pub sha256: String,
}
