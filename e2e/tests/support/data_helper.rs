//! Running the `gpufed-data` helper the way its containers do, against the harness's S3 server,
//! for the e2e tests of job data (`storage.rs`, `storage_uploads.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::path::Path;
use std::time::Duration;

use gpufed_e2e::Tools;
use gpufed_e2e::storage::{ACCESS_KEY, S3Server, SECRET_KEY};
use sha2::{Digest, Sha256};

/// One run of the helper: exit success, stdout, and the termination message it wrote.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
    pub termination: serde_json::Value,
}

pub async fn helper<S: AsRef<std::ffi::OsStr>>(
    dir: &Path,
    args: &[S],
    env: &[(&str, &str)],
) -> Run {
    let bin = Tools::locate()
        .unwrap()
        .workspace_bin("gpufed-data")
        .unwrap();
    let log = dir.join(format!("termination-{}", rand_suffix()));
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--termination-log").arg(&log).args(args);
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap()
        .unwrap();
    let termination = std::fs::read_to_string(&log)
        .unwrap_or_else(|e| panic!("no termination message {}: {e}", log.display()));
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        termination: serde_json::from_str(&termination)
            .unwrap_or_else(|e| panic!("termination message {termination:?}: {e}")),
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

pub const CREDS: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
    ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
];

pub fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The failure reason in a termination message, after checking the run failed without a manifest.
pub fn failure(run: &Run) -> String {
    assert!(!run.ok, "expected a failure, got success: {}", run.stdout);
    assert!(
        run.termination.get("objects").is_none(),
        "a failure reported objects: {}",
        run.termination
    );
    run.termination["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {}", run.termination))
        .to_string()
}

pub async fn start(dir: &Path) -> S3Server {
    S3Server::start(&Tools::locate().unwrap(), dir, &["datasets", "checkpoints"])
        .await
        .unwrap()
}

/// The multipart uploads in progress in `bucket`, by upload id (ListMultipartUploads, signed
/// here: the helper never lists uploads).
pub async fn multipart_uploads(s3: &S3Server, bucket: &str) -> Vec<String> {
    let body = signed_get(s3, bucket, &[("uploads", "")]).await;
    assert!(body.contains("ListMultipartUploadsResult"), "{body}");
    body.split("<UploadId>")
        .skip(1)
        .filter_map(|s| s.split("</UploadId>").next())
        .map(str::to_string)
        .collect()
}

/// The body of a GET on `bucket` with `query`, signed with the store's keys.
pub async fn signed_get(s3: &S3Server, bucket: &str, query: &[(&str, &str)]) -> String {
    let url = reqwest::Url::parse(&format!("{}/{bucket}", s3.endpoint)).unwrap();
    let url = rusty_s3::signing::sign(
        &jiff::Timestamp::now(),
        rusty_s3::Method::Get,
        url,
        ACCESS_KEY,
        SECRET_KEY,
        None,
        "us-east-1",
        60,
        query.iter().copied(),
        std::iter::empty(),
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::get(url.as_str())
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Bytes that differ from part to part, so a part sent twice or out of order changes the digest.
pub fn pseudo_random(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}
