//! Job data on S3-compatible storage (`docs/adr/0029-job-data-on-s3.md`): the `gpufed-data`
//! helper against a real S3 server (versitygw, started by the harness), the way the init
//! container and the uploader run it. Every failure must exit non-zero with a clear reason in the
//! termination message, and leave no file the workload could take for its input.
//!
//! Needs `make tools` (versitygw in .tools/bin) and `cargo build -p gpufed-data`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use gpufed_e2e::storage::ACCESS_KEY;
use gpufed_e2e::{Tools, run_test};

#[path = "support/data_helper.rs"]
mod data_helper;
use data_helper::{CREDS, failure, helper, sha256, start};

const DEADLINE: Duration = Duration::from_secs(120);

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
