//! Job data on S3-compatible storage (`docs/adr/0029-job-data-on-s3.md`): the `gpufed-data`
//! helper against a real S3 server (versitygw, started by the harness), the way the init
//! container and the uploader run it. Every failure must exit non-zero with a clear reason in the
//! termination message, and leave no file the workload could take for its input.
//!
//! Needs `make tools` (versitygw in .tools/bin) and `cargo build -p gpufed-data`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use gpufed_e2e::storage::{ACCESS_KEY, S3Server, SECRET_KEY};
use gpufed_e2e::{Tools, run_test};
use sha2::{Digest, Sha256};

const DEADLINE: Duration = Duration::from_secs(120);

/// One run of the helper: exit success, stdout, and the termination message it wrote.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
    termination: serde_json::Value,
}

async fn helper<S: AsRef<std::ffi::OsStr>>(dir: &Path, args: &[S], env: &[(&str, &str)]) -> Run {
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

const CREDS: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
    ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
];

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The failure reason in a termination message, after checking the run failed without a manifest.
fn failure(run: &Run) -> String {
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

async fn start(dir: &Path) -> S3Server {
    S3Server::start(&Tools::locate().unwrap(), dir, &["datasets", "checkpoints"])
        .await
        .unwrap()
}

#[test]
fn a_pushed_checkpoint_is_listed_with_its_digest_and_a_dataset_is_fetched_verified() {
    run_test(DEADLINE, || async {
        let dir = tempfile::tempdir().unwrap();
        let s3 = start(dir.path()).await;
        let ep = s3.endpoint.clone();

        // Results out: every regular file under the directory, keys under the prefix.
        let out = dir.path().join("out");
        std::fs::create_dir_all(out.join("ckpt")).unwrap();
        let weights: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        std::fs::write(out.join("ckpt/weights.bin"), &weights).unwrap();
        std::fs::write(out.join("metrics.json"), b"{\"loss\":0.12}").unwrap();
        let run = helper(
            dir.path(),
            &[
                "push",
                "--endpoint",
                &ep,
                "--bucket",
                "checkpoints",
                "--prefix",
                "runs/42/",
                "--src",
                out.to_str().unwrap(),
                "--require-credentials",
            ],
            CREDS,
        )
        .await;
        assert!(run.ok, "push failed: {} {}", run.stderr, s3.log_tail(20));
        let objects = run.termination["objects"].as_array().unwrap();
        assert_eq!(objects.len(), 2, "{}", run.termination);
        assert_eq!(objects[0]["key"], "runs/42/ckpt/weights.bin");
        assert_eq!(objects[0]["size"], 3_000_000);
        assert_eq!(objects[0]["sha256"], sha256(&weights));
        assert_eq!(objects[1]["key"], "runs/42/metrics.json");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(run.stdout.trim()).unwrap(),
            run.termination
        );
        // The server really holds what the manifest says.
        assert_eq!(
            std::fs::read(s3.object_path("checkpoints", "runs/42/ckpt/weights.bin")).unwrap(),
            weights
        );

        // Data in: one object, size and digest verified.
        let dataset = b"id,text\n1,hello\n2,world\n".repeat(1000);
        std::fs::create_dir_all(s3.object_path("datasets", "v1")).unwrap();
        std::fs::write(s3.object_path("datasets", "v1/train.csv"), &dataset).unwrap();
        let dest = dir.path().join("in");
        let digest = sha256(&dataset);
        let size = dataset.len().to_string();
        let run = helper(
            dir.path(),
            &[
                "fetch",
                "--endpoint",
                &ep,
                "--bucket",
                "datasets",
                "--key",
                "v1/train.csv",
                "--size",
                &size,
                "--sha256",
                &digest,
                "--dest",
                dest.to_str().unwrap(),
                "--require-credentials",
            ],
            CREDS,
        )
        .await;
        assert!(run.ok, "fetch failed: {}", run.stderr);
        assert_eq!(std::fs::read(dest.join("train.csv")).unwrap(), dataset);
        assert_eq!(run.termination["objects"][0]["sha256"], digest);

        // A prefix: the checkpoint back, by key relative to the prefix. `runs/42` is a directory:
        // the neighbour `runs/42-old/` is not part of it.
        std::fs::create_dir_all(s3.object_path("checkpoints", "runs/42-old")).unwrap();
        std::fs::write(
            s3.object_path("checkpoints", "runs/42-old/stale.bin"),
            b"old",
        )
        .unwrap();
        let back = dir.path().join("back");
        let run = helper(
            dir.path(),
            &[
                "fetch",
                "--endpoint",
                &ep,
                "--bucket",
                "checkpoints",
                "--prefix",
                "runs/42",
                "--dest",
                back.to_str().unwrap(),
            ],
            CREDS,
        )
        .await;
        assert!(run.ok, "prefix fetch failed: {}", run.stderr);
        assert_eq!(
            std::fs::read(back.join("ckpt/weights.bin")).unwrap(),
            weights
        );
        assert_eq!(
            std::fs::read(back.join("metrics.json")).unwrap(),
            b"{\"loss\":0.12}"
        );
        assert_eq!(
            run.termination["objects"].as_array().unwrap().len(),
            2,
            "{}",
            run.termination
        );
        assert!(!back.join("-old").exists() && !back.join("stale.bin").exists());
    });
}

#[test]
fn wrong_digests_missing_credentials_bad_urls_and_unreachable_storage_fail_with_their_reason() {
    run_test(DEADLINE, || async {
        let dir = tempfile::tempdir().unwrap();
        let s3 = start(dir.path()).await;
        let ep = s3.endpoint.clone();
        let data = b"the real dataset".to_vec();
        std::fs::write(s3.object_path("datasets", "d.bin"), &data).unwrap();
        let dest = |n: &str| -> PathBuf { dir.path().join(n) };
        let fetch = |ep: String, dest: PathBuf, extra: Vec<String>| {
            let mut a: Vec<String> = [
                "fetch",
                "--endpoint",
                &ep,
                "--bucket",
                "datasets",
                "--key",
                "d.bin",
                "--dest",
                dest.to_str().unwrap(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            a.extend(extra);
            a
        };

        // A wrong digest: no file left where the workload looks for its input.
        let a = fetch(
            ep.clone(),
            dest("wrong-digest"),
            vec!["--sha256".into(), sha256(b"something else")],
        );
        let run = helper(dir.path(), &a, CREDS).await;
        let reason = failure(&run);
        assert!(
            reason.contains("sha256 mismatch")
                && reason.contains(&sha256(&data))
                && reason.contains("s3://datasets/d.bin"),
            "{reason}"
        );
        assert!(!dest("wrong-digest").join("d.bin").exists());
        assert_eq!(
            std::fs::read_dir(dest("wrong-digest")).unwrap().count(),
            0,
            "a partial file was left"
        );

        // A wrong size.
        let a = fetch(
            ep.clone(),
            dest("wrong-size"),
            vec!["--size".into(), "17".into()],
        );
        let run = helper(dir.path(), &a, CREDS).await;
        let reason = failure(&run);
        assert!(
            reason.contains("size mismatch: expected 17, got 16"),
            "{reason}"
        );

        // The job names a credentials Secret whose keys did not arrive.
        let a = fetch(
            ep.clone(),
            dest("no-creds"),
            vec!["--require-credentials".into()],
        );
        let run = helper(dir.path(), &a, &[("AWS_ACCESS_KEY_ID", ACCESS_KEY)]).await;
        let reason = failure(&run);
        assert!(reason.contains("storage credentials missing"), "{reason}");

        // Wrong credentials: the server's own reason.
        let a = fetch(ep.clone(), dest("bad-creds"), vec![]);
        let run = helper(
            dir.path(),
            &a,
            &[
                ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
                ("AWS_SECRET_ACCESS_KEY", "not-the-secret"),
            ],
        )
        .await;
        let reason = failure(&run);
        assert!(
            reason.contains("HTTP 403") && reason.contains("SignatureDoesNotMatch"),
            "{reason}"
        );

        // No credentials at all on a private bucket.
        let a = fetch(ep.clone(), dest("anonymous"), vec![]);
        let run = helper(dir.path(), &a, &[]).await;
        let reason = failure(&run);
        assert!(
            reason.contains("HTTP 403") && reason.contains("AccessDenied"),
            "{reason}"
        );

        // A key that does not exist.
        let mut a = fetch(ep.clone(), dest("no-key"), vec![]);
        a[6] = "missing.bin".into();
        let run = helper(dir.path(), &a, CREDS).await;
        let reason = failure(&run);
        assert!(
            reason.contains("HTTP 404") && reason.contains("NoSuchKey"),
            "{reason}"
        );

        // A bad URL.
        let a = fetch("s3://datasets".into(), dest("bad-url"), vec![]);
        let run = helper(dir.path(), &a, CREDS).await;
        let reason = failure(&run);
        assert!(
            reason.contains("bad storage URL \"s3://datasets\""),
            "{reason}"
        );

        // Unreachable storage: a port nobody listens on. The reason must not carry the presigned
        // URL (it grants access until it expires).
        let closed = format!(
            "http://127.0.0.1:{}",
            gpufed_e2e::process::free_port().unwrap()
        );
        let a = fetch(closed.clone(), dest("unreachable"), vec![]);
        let run = helper(dir.path(), &a, CREDS).await;
        let reason = failure(&run);
        assert!(
            reason.contains(&format!("storage endpoint {closed} unreachable")),
            "{reason}"
        );
        assert!(
            !reason.contains("X-Amz-Signature") && !reason.contains(ACCESS_KEY),
            "{reason}"
        );

        // Uploading to a bucket that does not exist fails, and reports no object.
        let out = dest("out");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("x.bin"), b"x").unwrap();
        let run = helper(
            dir.path(),
            &[
                "push",
                "--endpoint",
                &ep,
                "--bucket",
                "no-such-bucket",
                "--src",
                out.to_str().unwrap(),
            ],
            CREDS,
        )
        .await;
        let reason = failure(&run);
        assert!(
            reason.contains("PUT s3://no-such-bucket/x.bin: HTTP 404")
                && reason.contains("NoSuchBucket"),
            "{reason}"
        );
    });
}

#[test]
fn the_uploader_waits_for_sigterm_and_then_pushes_what_the_workload_wrote() {
    run_test(DEADLINE, || async {
        let dir = tempfile::tempdir().unwrap();
        let s3 = start(dir.path()).await;
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let log = dir.path().join("termination-sidecar");
        let bin = Tools::locate()
            .unwrap()
            .workspace_bin("gpufed-data")
            .unwrap();
        let mut child = tokio::process::Command::new(bin)
            .arg("--termination-log")
            .arg(&log)
            .args([
                "push",
                "--endpoint",
                &s3.endpoint,
                "--bucket",
                "checkpoints",
                "--prefix",
                "runs/7/",
                "--wait-for-sigterm",
            ])
            .arg("--src")
            .arg(&out)
            .envs(CREDS.iter().copied())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // The workload runs and writes its checkpoint; nothing is uploaded meanwhile.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            child.try_wait().unwrap().is_none(),
            "the uploader did not wait"
        );
        let ckpt = b"step 1000".to_vec();
        std::fs::write(out.join("final.pt"), &ckpt).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !s3.object_path("checkpoints", "runs/7/final.pt").exists(),
            "uploaded before SIGTERM"
        );
        // The kubelet stops the sidecar once the workload has exited.
        let pid = child.id().unwrap().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success());
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&log).unwrap()).unwrap();
        assert_eq!(manifest["objects"][0]["key"], "runs/7/final.pt");
        assert_eq!(manifest["objects"][0]["sha256"], sha256(&ckpt));
        assert_eq!(
            std::fs::read(s3.object_path("checkpoints", "runs/7/final.pt")).unwrap(),
            ckpt
        );
    });
}

#[test]
fn an_image_without_a_ca_bundle_still_reaches_an_http_endpoint() {
    run_test(DEADLINE, || async {
        let dir = tempfile::tempdir().unwrap();
        let s3 = start(dir.path()).await;
        let data = b"rows\n";
        let object = s3.object_path("datasets", "d/rows.txt");
        std::fs::create_dir_all(object.parent().unwrap()).unwrap();
        std::fs::write(&object, data).unwrap();
        // No system roots at all, as in an image without ca-certificates.
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, b"").unwrap();
        let no_dir = dir.path().join("no-certs");
        std::fs::create_dir_all(&no_dir).unwrap();
        let mut env = CREDS.to_vec();
        env.push(("SSL_CERT_FILE", empty.to_str().unwrap()));
        env.push(("SSL_CERT_DIR", no_dir.to_str().unwrap()));
        let dest = dir.path().join("in");
        let run = helper(
            dir.path(),
            &[
                "fetch",
                "--endpoint",
                &s3.endpoint,
                "--bucket",
                "datasets",
                "--key",
                "d/rows.txt",
                "--sha256",
                &sha256(data),
                "--dest",
                dest.to_str().unwrap(),
            ],
            &env,
        )
        .await;
        assert!(run.ok, "fetch failed: {} {}", run.stderr, run.termination);
        assert_eq!(std::fs::read(dest.join("rows.txt")).unwrap(), data);
    });
}

/// The multipart uploads in progress in `bucket`, by upload id (ListMultipartUploads, signed
/// here: the helper never lists uploads).
async fn multipart_uploads(s3: &S3Server, bucket: &str) -> Vec<String> {
    let body = signed_get(s3, bucket, &[("uploads", "")]).await;
    assert!(body.contains("ListMultipartUploadsResult"), "{body}");
    body.split("<UploadId>")
        .skip(1)
        .filter_map(|s| s.split("</UploadId>").next())
        .map(str::to_string)
        .collect()
}

/// The body of a GET on `bucket` with `query`, signed with the store's keys.
async fn signed_get(s3: &S3Server, bucket: &str, query: &[(&str, &str)]) -> String {
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
fn pseudo_random(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// A TCP proxy in front of the store that cuts the connection carrying the request bytes past
/// `cut_after` (once), as a network failure would in the middle of a part; every connection
/// after that passes. Returns its endpoint.
async fn failing_proxy(upstream: u16, cut_after: u64) -> String {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = Arc::new(AtomicU64::new(0));
    let cut = Arc::new(AtomicBool::new(false));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(("127.0.0.1", upstream))
                .await
                .unwrap();
            let (sent, cut) = (sent.clone(), cut.clone());
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let back = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                });
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let total = sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
                    if total > cut_after && !cut.swap(true, Ordering::SeqCst) {
                        break;
                    }
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                // Dropping both halves closes the connection in both directions.
                back.abort();
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}

#[test]
fn a_file_larger_than_a_part_goes_up_in_parts_and_a_failed_upload_leaves_no_parts_behind() {
    run_test(DEADLINE, || async {
        let dir = tempfile::tempdir().unwrap();
        let s3 = start(dir.path()).await;
        // Three parts of 5 MiB (S3's smallest), the last one short.
        let weights = pseudo_random((12 << 20) + 12_345);
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("model.safetensors"), &weights).unwrap();
        let push = |ep: &str, prefix: &str| -> Vec<String> {
            [
                "push",
                "--endpoint",
                ep,
                "--bucket",
                "checkpoints",
                "--prefix",
                prefix,
                "--part-size-mib",
                "5",
                "--src",
                out.to_str().unwrap(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        };
        let run = helper(dir.path(), &push(&s3.endpoint, "runs/big/"), CREDS).await;
        assert!(run.ok, "push failed: {} {}", run.stderr, s3.log_tail(20));
        let object = &run.termination["objects"][0];
        assert_eq!(object["key"], "runs/big/model.safetensors");
        assert_eq!(object["size"], weights.len());
        // The whole file's sha256, not the multipart ETag.
        assert_eq!(object["sha256"], sha256(&weights));
        assert_eq!(
            std::fs::read(s3.object_path("checkpoints", "runs/big/model.safetensors")).unwrap(),
            weights
        );
        // Stored as a multipart object of three parts (its ETag ends in -3).
        let listing = signed_get(
            &s3,
            "checkpoints",
            &[("list-type", "2"), ("prefix", "runs/big/")],
        )
        .await;
        let etag = listing
            .split("<ETag>")
            .nth(1)
            .and_then(|s| s.split("</ETag>").next())
            .unwrap_or_else(|| panic!("no ETag in {listing}"));
        let etag = etag.replace("&#34;", "").replace("&quot;", "");
        assert!(etag.trim_matches('"').ends_with("-3"), "{etag}");
        assert!(multipart_uploads(&s3, "checkpoints").await.is_empty());

        // The connection drops in the middle of the second part: the upload is aborted, no
        // object appears and no upload (with its first part) is left in the bucket.
        let proxy = failing_proxy(s3.port(), 7 << 20).await;
        let run = helper(dir.path(), &push(&proxy, "runs/cut/"), CREDS).await;
        let reason = failure(&run);
        assert!(
            reason.contains(&format!("storage endpoint {proxy} unreachable")),
            "{reason}"
        );
        assert!(!reason.contains("X-Amz-Signature"), "{reason}");
        assert!(
            !s3.object_path("checkpoints", "runs/cut/model.safetensors")
                .exists()
        );
        let left = multipart_uploads(&s3, "checkpoints").await;
        assert!(left.is_empty(), "uploads left behind: {left:?}");

        // Larger than S3 holds (a sparse file): refused by name, with the fix, before any request.
        let huge = dir.path().join("huge");
        std::fs::create_dir_all(&huge).unwrap();
        let f = std::fs::File::create(huge.join("dump.bin")).unwrap();
        f.set_len((5u64 << 40) + 1).unwrap();
        let mut a = push(&s3.endpoint, "runs/huge/");
        let src = a.len() - 1;
        a[src] = huge.to_str().unwrap().to_string();
        let run = helper(dir.path(), &a, CREDS).await;
        let reason = failure(&run);
        assert!(
            reason.contains("dump.bin: 5497558138881 bytes is more than an S3 object holds (5 TiB); split it into smaller files"),
            "{reason}"
        );
        assert!(multipart_uploads(&s3, "checkpoints").await.is_empty());
    });
}

/// The PUT URLs the hub would seal for `output` of a job of `replicas`, signed by the hub's own
/// code (`gpufed_operator::presign`) with `secret_key`: the environment variables the uploader
/// gets, by name.
fn hub_signed_puts(
    output: serde_json::Value,
    replicas: u32,
    secret_key: &str,
) -> std::collections::BTreeMap<String, String> {
    use gpufed_operator::sealing::SecretPayload;
    use k8s_openapi::ByteString;
    let template: gpufed_crds::WorkloadTemplate = serde_json::from_value(serde_json::json!({
        "containers": [{"name": "main", "image": "x"}],
        "outputs": [output]
    }))
    .unwrap();
    let mut selected = std::collections::BTreeMap::from([(
        "s3-write".to_string(),
        SecretPayload {
            type_: "Opaque".into(),
            data: [
                ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
                ("AWS_SECRET_ACCESS_KEY", secret_key),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect(),
        },
    )]);
    gpufed_operator::presign::apply(
        &template,
        replicas,
        &mut selected,
        gpufed_operator::presign::ttl_for(Duration::from_secs(600)),
    )
    .unwrap();
    selected["s3-write"]
        .data
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8(v.0.clone()).unwrap()))
        .collect()
}

#[test]
fn a_presigned_output_reaches_the_bucket_with_the_hubs_urls_and_no_keys_and_a_wrong_set_of_files_uploads_nothing()
 {
    run_test(DEADLINE, || async {
        let dir = tempfile::tempdir().unwrap();
        let s3 = start(dir.path()).await;
        let output = serde_json::json!({"name": "final-ckpt", "path": "/out",
            "endpoint": s3.endpoint, "bucket": "checkpoints", "prefix": "runs/9",
            "credentialsSecret": "s3-write", "presign": true,
            "files": ["model.bin", "ckpt/opt.pt"]});
        // Two replicas: replica 1 uploads under runs/9/replica-1/ with its own variable.
        let env = hub_signed_puts(output.clone(), 2, SECRET_KEY);
        assert_eq!(
            env.keys().collect::<Vec<_>>(),
            [
                "GPUFED_PRESIGNED_PUTS_FINAL_CKPT_0",
                "GPUFED_PRESIGNED_PUTS_FINAL_CKPT_1"
            ],
            "the storage keys must not be delivered"
        );
        let var = "GPUFED_PRESIGNED_PUTS_FINAL_CKPT_1";
        let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let out = dir.path().join("out");
        std::fs::create_dir_all(out.join("ckpt")).unwrap();
        let model = pseudo_random(1_500_000);
        std::fs::write(out.join("model.bin"), &model).unwrap();
        std::fs::write(out.join("ckpt/opt.pt"), b"adam state").unwrap();
        let push = |src: &Path| -> Vec<String> {
            [
                "push",
                "--endpoint",
                &s3.endpoint,
                "--bucket",
                "checkpoints",
                "--prefix",
                "runs/9/replica-1/",
                "--urls-env",
                var,
                "--src",
                src.to_str().unwrap(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        };
        // No AWS_* variables at all: only the URLs.
        let run = helper(dir.path(), &push(&out), &envs).await;
        assert!(run.ok, "push failed: {} {}", run.stderr, s3.log_tail(20));
        let objects = run.termination["objects"].as_array().unwrap();
        assert_eq!(objects.len(), 2, "{}", run.termination);
        assert_eq!(objects[0]["key"], "runs/9/replica-1/ckpt/opt.pt");
        assert_eq!(objects[1]["key"], "runs/9/replica-1/model.bin");
        assert_eq!(objects[1]["sha256"], sha256(&model));
        assert_eq!(
            std::fs::read(s3.object_path("checkpoints", "runs/9/replica-1/model.bin")).unwrap(),
            model
        );

        // A file the job did not declare: refused, and nothing is uploaded.
        let extra = dir.path().join("extra");
        std::fs::create_dir_all(extra.join("ckpt")).unwrap();
        std::fs::write(extra.join("model.bin"), b"m").unwrap();
        std::fs::write(extra.join("ckpt/opt.pt"), b"o").unwrap();
        std::fs::write(extra.join("stray.log"), b"s").unwrap();
        let reason = failure(&helper(dir.path(), &push(&extra), &envs).await);
        assert!(
            reason.contains("stray.log: not among the output's files")
                && reason.contains("add it to outputs[].files"),
            "{reason}"
        );
        assert_eq!(
            std::fs::read(s3.object_path("checkpoints", "runs/9/replica-1/model.bin")).unwrap(),
            model,
            "a declared file was uploaded although the push failed"
        );
        assert!(!reason.contains("X-Amz-Signature"), "{reason}");

        // A declared file the workload did not write.
        let missing = dir.path().join("missing");
        std::fs::create_dir_all(&missing).unwrap();
        std::fs::write(missing.join("model.bin"), b"m").unwrap();
        let reason = failure(&helper(dir.path(), &push(&missing), &envs).await);
        assert!(
            reason.contains("s3://checkpoints/runs/9/replica-1/ckpt/opt.pt: listed in outputs[].files but the workload wrote no such file"),
            "{reason}"
        );

        // URLs signed with a wrong key: the server refuses them.
        let wrong = hub_signed_puts(output, 2, "not-the-secret");
        let wrong: Vec<(&str, &str)> = wrong
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let reason = failure(&helper(dir.path(), &push(&out), &wrong).await);
        assert!(
            reason.contains("HTTP 403") && reason.contains("SignatureDoesNotMatch"),
            "{reason}"
        );
        assert!(!reason.contains("X-Amz-Signature"), "{reason}");

        // More than one PUT takes (a sparse file): refused by name, with the fix.
        let big = dir.path().join("big");
        std::fs::create_dir_all(big.join("ckpt")).unwrap();
        std::fs::write(big.join("ckpt/opt.pt"), b"o").unwrap();
        std::fs::File::create(big.join("model.bin"))
            .unwrap()
            .set_len((5u64 << 30) + 1)
            .unwrap();
        let reason = failure(&helper(dir.path(), &push(&big), &envs).await);
        assert!(
            reason.contains("model.bin: 5368709121 bytes is more than one presigned PUT takes (5 GiB); split it into smaller files, or drop presign"),
            "{reason}"
        );
        assert!(multipart_uploads(&s3, "checkpoints").await.is_empty());
    });
}
