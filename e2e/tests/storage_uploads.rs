//! Large and presigned uploads of job outputs (`docs/adr/0029-job-data-on-s3.md`, as built
//! 2026-12-05) against a real S3 server (versitygw, started by the harness): multipart uploads
//! with a failure in the middle that must leave no upload behind, and outputs pushed with PUT URLs
//! the hub's own code signed, with no storage keys in the uploader's environment.
//!
//! Needs `make tools` (versitygw in .tools/bin) and `cargo build -p gpufed-data`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use gpufed_e2e::run_test;
use gpufed_e2e::storage::{ACCESS_KEY, SECRET_KEY};

#[path = "support/data_helper.rs"]
mod data_helper;
use data_helper::{
    CREDS, failure, helper, multipart_uploads, pseudo_random, sha256, signed_get, start,
};

const DEADLINE: Duration = Duration::from_secs(120);

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
