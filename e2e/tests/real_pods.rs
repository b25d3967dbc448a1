//! Jobs that really run: ComputeJobs on the hub placed on a member whose node is real (containerd,
//! runc, a kubelet; see `gpufed_e2e::realnode`), end to end through the charts, the hub and the
//! agent. What kwok can only pretend is checked here: exit codes, termination messages, start and
//! finish times and GPU-seconds from real containers, deadlines that kill, a gang whose pods talk
//! over the pod network, a workload restricted as seen from inside its container, sealed Secrets
//! read by a real container, and job data: an input fetched and verified from a real S3 server
//! and an output uploaded to it, its digest in the job's status (docs/adr/0029-job-data-on-s3.md).
//!
//! Needs root and `make tools`, and `cargo build --bins` first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gpufed_crds::{AttemptPhase, ComputeJob, JobPhase};
use gpufed_e2e::hubctl::wait_job;
use gpufed_e2e::image::{BUSYBOX, Image};
use gpufed_e2e::joining::{JOBS_NAMESPACE, MemberPlan, Pool, wait_ready_with_free};
use gpufed_e2e::storage::{ACCESS_KEY, S3Server, SECRET_KEY};
use gpufed_e2e::{NodeSpec, Tools, run_test};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const HARD_DEADLINE: Duration = Duration::from_secs(300);
const LONG: Duration = Duration::from_secs(120);
const TEAM: &str = "team-a";

/// A hub and one member whose only node is real: 4 L4 GPUs (an extended resource) in eu-west.
async fn pool(tools: &Tools, member: &str) -> Pool {
    let pool = Pool::join(
        tools,
        "30s",
        &[
            MemberPlan::new(member, vec![], "L4", "0.80").real_node(NodeSpec::new(
                &format!("{member}-node"),
                "L4-24GB",
                4,
                "eu-west",
            )),
        ],
    )
    .await
    .unwrap();
    wait_ready_with_free(&pool.hub.client(), member, 4, LONG)
        .await
        .unwrap();
    pool.hub.create_namespace(TEAM).await.unwrap();
    pool
}

/// Submits a ComputeJob running `script` with busybox's `sh`, one attempt only; `extra` adds to
/// the spec (its `template` keys to the template).
async fn submit(hub: &Client, name: &str, script: &str, mut extra: Value) {
    let mut spec = json!({
        "replicas": 1, "gpusPerReplica": 1, "gpu": {"models": ["L4"]},
        "maxPricePerGpuHour": "1.00", "maxDuration": "5m",
        "retry": {"maxAttempts": 1},
        "template": {"containers": [{"name": "main", "image": BUSYBOX,
                                     "command": ["sh", "-c", script]}]}
    });
    if let (Some(t), Some(e)) = (
        spec["template"].as_object_mut(),
        extra
            .as_object_mut()
            .and_then(|e| e.remove("template"))
            .and_then(|t| t.as_object().cloned()),
    ) {
        t.extend(e);
    }
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    gpufed_e2e::joining::pool::apply(
        hub,
        "computejobs",
        &json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                "metadata": {"name": name, "namespace": TEAM}, "spec": spec}),
    )
    .await
    .unwrap();
}

async fn finished(hub: &Client, name: &str) -> ComputeJob {
    wait_job(hub, TEAM, name, LONG, &format!("{name} to finish"), |j| {
        j.status.as_ref().is_some_and(|s| s.phase.is_finished())
    })
    .await
    .unwrap()
}

/// The member's pods of job `name` (from its attempt's local Job), with their logs.
async fn pods_and_logs(member: &Client, job: &ComputeJob) -> Vec<(Pod, String)> {
    let uid = job.uid().unwrap();
    let pods: Api<Pod> = Api::namespaced(member.clone(), JOBS_NAMESPACE);
    let list = pods
        .list(&ListParams::default().labels(&format!("gpufed.io/job-uid={uid}")))
        .await
        .unwrap();
    let mut out = vec![];
    for p in list.items {
        let log = pods
            .logs(&p.name_any(), &LogParams::default())
            .await
            .unwrap();
        out.push((p, log));
    }
    out.sort_by_key(|(p, _)| p.name_any());
    out
}

/// The tenant lets the hub read its Secrets (docs/platform-teams.md, "Secrets").
async fn share_secrets(hub: &Client) {
    gpufed_e2e::joining::pool::apply(
        hub,
        "rolebindings",
        &json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "gpufed-hub-secrets", "namespace": TEAM},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                "name": "gpufed-hub-tenant-secrets"},
            "subjects": [{"kind": "ServiceAccount", "name": "gpufed-hub",
                "namespace": gpufed_e2e::joining::SYSTEM_NAMESPACE}]
        }),
    )
    .await
    .unwrap();
}

/// An Opaque Secret `name` of the team's namespace on the hub with `data` (as `stringData`).
async fn secret(hub: &Client, name: &str, data: Value) {
    gpufed_e2e::joining::pool::apply(
        hub,
        "secrets",
        &json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": name, "namespace": TEAM}, "stringData": data}),
    )
    .await
    .unwrap();
}

fn seconds(
    a: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    b: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> i64 {
    b.0.as_second() - a.0.as_second()
}

#[test]
fn real_containers_report_exit_codes_messages_times_and_gpu_seconds_and_deadlines_kill() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let pool = pool(&tools, "metal").await;
        let hub = pool.hub.client();
        let member = pool.member("metal").unwrap().client();
        let node = pool
            .member("metal")
            .unwrap()
            .real_node()
            .unwrap()
            .name()
            .to_string();

        submit(
            &hub,
            "exit-3",
            "echo hello from a real pod; sleep 3; printf 'out of patience' > /dev/termination-log; exit 3",
            json!({}),
        )
        .await;
        submit(&hub, "ok", "echo all good; sleep 2", json!({})).await;
        submit(
            &hub,
            "too-long",
            "echo sleeping; exec sleep 600",
            json!({"maxDuration": "6s"}),
        )
        .await;

        // A container that exits 3: the job fails with the real code, message and times.
        let job = finished(&hub, "exit-3").await;
        let st = job.status.clone().unwrap();
        assert_eq!(st.phase, JobPhase::Failed, "{st:?}");
        let a = &st.attempts[0];
        assert_eq!(a.phase, AttemptPhase::Failed);
        assert_eq!(a.exits.len(), 1, "{:?}", a.exits);
        let exit = &a.exits[0];
        assert_eq!(
            (exit.replica, exit.container.as_str(), exit.exit_code),
            (0, "main", 3)
        );
        assert_eq!(exit.reason.as_deref(), Some("Error"));
        assert_eq!(exit.message.as_deref(), Some("out of patience"));
        let ran = seconds(
            exit.started_at.as_ref().unwrap(),
            exit.finished_at.as_ref().unwrap(),
        );
        // Whole seconds from the kubelet, and containerd records the start once its Start call
        // returns, which on a loaded machine can be a second after the process began: 3 s of
        // sleep shows as 2 to 4.
        assert!(
            (2..=4).contains(&ran),
            "the container ran {ran}s, it sleeps 3 s"
        );
        // GPU-seconds: the real run time (1 GPU), within a second.
        assert!(
            a.gpu_seconds.abs_diff(ran as u64) <= 1,
            "{} GPU-s for {ran}s",
            a.gpu_seconds
        );
        // The message says why, with the last lines of the container's log.
        let message = a.message.clone().unwrap_or_default();
        assert!(message.contains("exited with code 3"), "{message}");
        assert!(
            message.contains("last lines of") && message.ends_with(": hello from a real pod"),
            "{message}"
        );
        let runs = pods_and_logs(&member, &job).await;
        assert_eq!(runs.len(), 1);
        assert_eq!(
            runs[0].0.spec.as_ref().unwrap().node_name.as_deref(),
            Some(node.as_str())
        );
        assert_eq!(runs[0].1.trim(), "hello from a real pod");

        // One that exits 0 succeeds, its exit listed too.
        let job = finished(&hub, "ok").await;
        let st = job.status.clone().unwrap();
        assert_eq!(st.phase, JobPhase::Succeeded, "{st:?}");
        let a = &st.attempts[0];
        assert_eq!(
            (a.exits[0].exit_code, a.exits[0].reason.as_deref()),
            (0, Some("Completed"))
        );
        let ran = seconds(
            a.exits[0].started_at.as_ref().unwrap(),
            a.exits[0].finished_at.as_ref().unwrap(),
        );
        // 2 s of sleep, in whole seconds with a start recorded up to a second late (above).
        assert!((1..=3).contains(&ran), "{ran}");
        assert!(
            a.gpu_seconds.abs_diff(ran as u64) <= 1,
            "{} GPU-s for {ran}s",
            a.gpu_seconds
        );
        assert_eq!(st.usage.unwrap().gpu_seconds, a.gpu_seconds);
        assert_eq!(pods_and_logs(&member, &job).await[0].1.trim(), "all good");

        // One that outlives maxDuration is stopped by the deadline, and paid only up to it.
        let job = finished(&hub, "too-long").await;
        let st = job.status.clone().unwrap();
        assert_eq!(st.phase, JobPhase::Failed, "{st:?}");
        let a = &st.attempts[0];
        assert_eq!(a.reason.as_deref(), Some("DeadlineExceeded"), "{a:?}");
        assert!(
            a.gpu_seconds <= 7,
            "stopped at its 6 s deadline: {} GPU-s",
            a.gpu_seconds
        );
    });
}

#[test]
fn a_gang_talks_over_the_pod_network_and_the_workload_is_restricted_inside_its_container() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let pool = pool(&tools, "iron").await;
        let hub = pool.hub.client();
        let member_cluster = pool.member("iron").unwrap();
        let member = member_cluster.client();
        let subnet = member_cluster.real_node().unwrap().pod_subnet().to_string();
        let prefix = subnet.trim_end_matches("0/24").to_string();

        // Replica 0 listens; replica 1 finds it by trying the first addresses of the node's pod
        // network (the pods are the node's first, so they are among them) and says hello until
        // it hears back. Each connection gets its own handler (`-ll -e`), and the handler answers
        // only once it kept the words: a single `nc -l` takes one connection and resets the
        // others queued behind it, so a sender whose connect was queued behind a probe that
        // arrived empty (its sender gave up) would believe it had been heard.
        let script = format!(
            r#"if [ "$JOB_COMPLETION_INDEX" = 0 ]; then
  nc -ll -p 7000 -e sh -c 'read m; if [ -n "$m" ]; then echo "$m" > /tmp/got.new && mv /tmp/got.new /tmp/got && echo ack; fi' &
  while [ ! -s /tmp/got ]; do sleep 1; done
  kill $!
  echo "replica 0 got: $(cat /tmp/got)"
else
  msg="hello from $(hostname -i)"
  for round in $(seq 40); do
    for i in $(seq 2 8); do
      if [ "$(echo "$msg" | nc -w 2 {prefix}$i 7000 2>/dev/null)" = ack ]; then
        echo "replica 1 reached {prefix}$i"; exit 0
      fi
    done
    sleep 1
  done
  exit 1
fi"#
        );
        submit(&hub, "gang", &script, json!({"replicas": 2})).await;
        // From inside: who it runs as, whether the root filesystem takes writes, its privileges.
        submit(
            &hub,
            "inside",
            "echo uid=$(id -u) gid=$(id -g); \
             if touch /planted 2>/tmp/err; then echo root-writable; else echo \"root-readonly: $(cat /tmp/err)\"; fi; \
             grep -E '^(NoNewPrivs|CapEff|CapPrm|Seccomp):' /proc/self/status; \
             echo scratch > /tmp/ok && echo tmp-writable; \
             df -k /dev/shm | tail -1 | awk '{print \"shm-kib=\" $2}'; \
             dd if=/dev/zero of=/dev/shm/fill bs=1M count=150 2>/dev/null && echo shm-writable",
            json!({"template": {"shmSize": "200Mi"}}),
        )
        .await;

        let job = finished(&hub, "gang").await;
        let st = job.status.clone().unwrap();
        assert_eq!(st.phase, JobPhase::Succeeded, "{st:?}");
        let runs = pods_and_logs(&member, &job).await;
        assert_eq!(runs.len(), 2);
        let ip_of = |p: &Pod| p.status.as_ref().unwrap().pod_ip.clone().unwrap();
        let (zero, one) = (&runs[0], &runs[1]);
        let (ip0, ip1) = (ip_of(&zero.0), ip_of(&one.0));
        assert_ne!(ip0, ip1);
        assert!(
            ip0.starts_with(&prefix) && ip1.starts_with(&prefix),
            "{ip0} {ip1} in {subnet}"
        );
        assert_eq!(
            zero.1.trim(),
            format!("replica 0 got: hello from {ip1}"),
            "replica 1 said: {}",
            one.1
        );
        assert_eq!(one.1.trim(), format!("replica 1 reached {ip0}"));
        assert_eq!(st.attempts[0].exits.len(), 2);

        let job = finished(&hub, "inside").await;
        assert_eq!(job.status.as_ref().unwrap().phase, JobPhase::Succeeded);
        let log = pods_and_logs(&member, &job).await.remove(0).1;
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines[0], "uid=65534 gid=65534", "{log}");
        assert!(
            lines[1].starts_with("root-readonly:") && lines[1].contains("Read-only file system"),
            "{log}"
        );
        for expected in [
            "NoNewPrivs:\t1",
            "CapEff:\t0000000000000000",
            "CapPrm:\t0000000000000000",
            "Seccomp:\t2",
            "tmp-writable",
            // The job's 200 MiB /dev/shm (the runtime's default is 64 MiB), and 150 MiB fit in it.
            "shm-kib=204800",
            "shm-writable",
        ] {
            assert!(
                lines.contains(&expected),
                "{expected:?} missing from:\n{log}"
            );
        }
    });
}

#[test]
fn a_real_container_reads_its_sealed_secret_as_env_and_as_a_file() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let pool = pool(&tools, "vault").await;
        let hub = pool.hub.client();
        share_secrets(&hub).await;
        secret(
            &hub,
            "app",
            json!({"token": "tok-from-env", "key.txt": "from-a-file"}),
        )
        .await;
        submit(
            &hub,
            "reads-secrets",
            "printf '%s|%s' \"$TOKEN\" \"$(cat /var/run/secrets/app/key.txt)\" > /dev/termination-log",
            json!({"template": {
                "containers": [{"name": "main", "image": BUSYBOX,
                    "command": ["sh", "-c",
                        "printf '%s|%s' \"$TOKEN\" \"$(cat /var/run/secrets/app/key.txt)\" > /dev/termination-log"],
                    "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "app", "key": "token"}}}]}],
                "secretFiles": [{"name": "app", "secretName": "app", "mountPath": "/var/run/secrets/app",
                    "items": [{"key": "key.txt", "path": "key.txt"}]}]
            }}),
        )
        .await;
        let job = finished(&hub, "reads-secrets").await;
        let st = job.status.clone().unwrap();
        assert_eq!(st.phase, JobPhase::Succeeded, "{st:?}");
        let exit = &st.attempts[0].exits[0];
        assert_eq!(
            exit.message.as_deref(),
            Some("tok-from-env|from-a-file"),
            "{exit:?}"
        );
    });
}

#[test]
fn a_job_reads_a_verified_input_and_a_secret_and_its_uploaded_output_is_in_status_and_bad_data_fails_clearly()
 {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let pool = pool(&tools, "depot").await;
        let hub = pool.hub.client();
        let node = pool.member("depot").unwrap().real_node().unwrap();
        node.import(&Image::data(&tools.workspace_bin("gpufed-data").unwrap()).unwrap())
            .unwrap();
        // The tenant's storage: a real S3 server the pods reach on the node's bridge.
        let dir = tempfile::tempdir().unwrap();
        let s3 = S3Server::start_on(
            &tools,
            dir.path(),
            &["datasets", "checkpoints"],
            node.address(),
        )
        .await
        .unwrap();
        let dataset = b"{\"prompt\":\"2+2\",\"completion\":\"4\"}\n";
        let object = s3.object_path("datasets", "alpaca/train.jsonl");
        std::fs::create_dir_all(object.parent().unwrap()).unwrap();
        std::fs::write(&object, dataset).unwrap();
        let sha = hex::encode(Sha256::digest(dataset));

        share_secrets(&hub).await;
        secret(&hub, "app", json!({"token": "tok-1"})).await;
        secret(
            &hub,
            "s3",
            json!({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}),
        )
        .await;
        secret(&hub, "s3-half", json!({"AWS_ACCESS_KEY_ID": ACCESS_KEY})).await;
        secret(
            &hub,
            "s3-presign",
            json!({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}),
        )
        .await;
        let input = |endpoint: &str, sha: &str, credentials: &str| {
            json!({"name": "dataset", "endpoint": endpoint, "bucket": "datasets",
                   "key": "alpaca/train.jsonl", "size": dataset.len(), "sha256": sha,
                   "mountPath": "/data", "credentialsSecret": credentials})
        };
        let output = |bucket: &str| {
            json!({"name": "checkpoint", "path": "/output", "endpoint": s3.endpoint,
                   "bucket": bucket, "prefix": "runs/1/", "credentialsSecret": "s3"})
        };
        // Reads the secret and the input, writes a "checkpoint" from both.
        let train = "printf '%s|' \"$TOKEN\" > /output/model.bin && cat /data/train.jsonl >> /output/model.bin";
        submit(
            &hub,
            "finetune",
            train,
            json!({"template": {
                "containers": [{"name": "main", "image": BUSYBOX, "command": ["sh", "-c", train],
                    "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "app", "key": "token"}}}]}],
                "inputs": [input(&s3.endpoint, &sha, "s3")],
                "outputs": [output("checkpoints")]}}),
        )
        .await;
        submit(
            &hub,
            "wrong-digest",
            "true",
            json!({"template": {"inputs": [input(&s3.endpoint, &"0".repeat(64), "s3")]}}),
        )
        .await;
        let closed = format!(
            "http://{}:{}",
            node.address(),
            gpufed_e2e::process::free_port().unwrap()
        );
        submit(
            &hub,
            "unreachable",
            "true",
            json!({"template": {"inputs": [input(&closed, &sha, "s3")]}}),
        )
        .await;
        submit(
            &hub,
            "upload-fails",
            "echo partial > /output/x.bin",
            json!({"template": {"outputs": [output("no-such-bucket")]}}),
        )
        .await;
        // The hub signs a URL for the input and one for the output's file, and the member gets
        // only those (ADR 0029).
        let mut presigned = input(&s3.endpoint, &sha, "s3-presign");
        presigned["presign"] = json!(true);
        let presigned_output = json!({"name": "result", "path": "/result",
            "endpoint": s3.endpoint, "bucket": "checkpoints", "prefix": "runs/presigned/",
            "credentialsSecret": "s3-presign", "presign": true, "files": ["answer.txt"]});
        submit(
            &hub,
            "presigned",
            "cat /data/train.jsonl > /dev/termination-log && printf 42 > /result/answer.txt",
            json!({"replicas": 2,
                   "template": {"inputs": [presigned], "outputs": [presigned_output]}}),
        )
        .await;
        submit(
            &hub,
            "half-credentials",
            "true",
            json!({"template": {"inputs": [input(&s3.endpoint, &sha, "s3-half")]}}),
        )
        .await;

        // The output's digest in the job's status is the object's in the store.
        let job = finished(&hub, "finetune").await;
        let st = job.status.clone().unwrap();
        assert_eq!(st.phase, JobPhase::Succeeded, "{st:?}");
        let mut expected = b"tok-1|".to_vec();
        expected.extend_from_slice(dataset);
        let stored = std::fs::read(s3.object_path("checkpoints", "runs/1/model.bin")).unwrap();
        assert_eq!(stored, expected);
        let [record] = &st.outputs[..] else {
            panic!("{:?}", st.outputs)
        };
        assert_eq!(
            (record.name.as_str(), record.replica, record.bucket.as_str()),
            ("checkpoint", 0, "checkpoints")
        );
        let [obj] = &record.objects[..] else {
            panic!("{record:?}")
        };
        assert_eq!(obj.key, "runs/1/model.bin");
        assert_eq!(obj.size, stored.len() as u64);
        assert_eq!(obj.sha256, hex::encode(Sha256::digest(&stored)));
        // The workload's exit is the first listed, the uploader's after it.
        assert_eq!(st.attempts[0].exits[0].container, "main", "{st:?}");

        // Each bad input ends as the attempt's reason with the helper's words, and nothing is
        // listed as stored.
        for (name, reason, words) in [
            ("wrong-digest", "InputFetchFailed", "sha256 mismatch"),
            ("unreachable", "InputFetchFailed", "unreachable"),
            (
                "upload-fails",
                "OutputUploadFailed",
                "s3://no-such-bucket/runs/1/x.bin: HTTP",
            ),
        ] {
            let job = finished(&hub, name).await;
            let st = job.status.clone().unwrap();
            assert_eq!(st.phase, JobPhase::Failed, "{name}: {st:?}");
            let attempt = &st.attempts[0];
            assert_eq!(attempt.phase, AttemptPhase::Failed, "{name}: {attempt:?}");
            assert_eq!(
                attempt.reason.as_deref(),
                Some(reason),
                "{name}: {attempt:?}"
            );
            let message = st.message.clone().unwrap_or_default();
            assert!(message.contains(words), "{name}: {message}");
            assert!(st.outputs.is_empty(), "{name}: {st:?}");
        }
        // The upload that failed left the workload's file unlisted, not reported as stored.
        assert!(!s3.object_path("no-such-bucket", "runs/1/x.bin").exists());

        // A presigned input and output: fetched and stored with the hub's URLs, and the member
        // holds no keys.
        let job = finished(&hub, "presigned").await;
        let st = job.status.clone().unwrap();
        assert_eq!(st.phase, JobPhase::Succeeded, "{st:?}");
        assert_eq!(
            st.attempts[0].exits[0].message.as_deref(),
            Some(std::str::from_utf8(dataset).unwrap().trim()),
            "{st:?}"
        );
        let local: Api<k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(pool.member("depot").unwrap().client(), JOBS_NAMESPACE);
        let delivered = local
            .list(
                &ListParams::default().labels(&format!("gpufed.io/job-uid={}", job.uid().unwrap())),
            )
            .await
            .unwrap()
            .items;
        let [delivered] = &delivered[..] else {
            panic!("{delivered:?}")
        };
        let keys: Vec<&String> = delivered.data.as_ref().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "GPUFED_PRESIGNED_PUTS_RESULT_0",
                "GPUFED_PRESIGNED_PUTS_RESULT_1",
                "GPUFED_PRESIGNED_URL_DATASET"
            ]
        );
        // Each replica stored its file under its own key, with the URL the hub signed for it.
        assert_eq!(st.outputs.len(), 2, "{:?}", st.outputs);
        for replica in 0..2u32 {
            let key = format!("runs/presigned/replica-{replica}/answer.txt");
            let stored = std::fs::read(s3.object_path("checkpoints", &key)).unwrap();
            assert_eq!(stored, b"42");
            let record = st.outputs.iter().find(|r| r.replica == replica).unwrap();
            assert_eq!(record.name, "result");
            assert_eq!(record.objects[0].key, key);
            assert_eq!(record.objects[0].sha256, hex::encode(Sha256::digest(b"42")));
        }
        // The pods name no Secret but that one, and no value of theirs is a storage key.
        let jobs: Api<k8s_openapi::api::batch::v1::Job> =
            Api::namespaced(pool.member("depot").unwrap().client(), JOBS_NAMESPACE);
        let local = jobs
            .list(
                &ListParams::default().labels(&format!("gpufed.io/job-uid={}", job.uid().unwrap())),
            )
            .await
            .unwrap()
            .items;
        assert_eq!(local.len(), 1, "{local:?}");
        let pod_spec = serde_json::to_string(&local[0].spec.as_ref().unwrap().template).unwrap();
        assert!(
            !pod_spec.contains(ACCESS_KEY) && !pod_spec.contains(SECRET_KEY),
            "{pod_spec}"
        );
        let secret_names: std::collections::BTreeSet<String> = pod_spec
            .split("\"secretRef\":{\"name\":\"")
            .skip(1)
            .chain(pod_spec.split("\"secretName\":\"").skip(1))
            .filter_map(|s| s.split('"').next().map(str::to_string))
            .collect();
        assert_eq!(
            secret_names,
            std::collections::BTreeSet::from([delivered.name_any()]),
            "{pod_spec}"
        );

        // Credentials without the secret key never reach a member: the job waits, naming it.
        let waiting = wait_job(
            &hub,
            TEAM,
            "half-credentials",
            LONG,
            "half-credentials to wait for its Secret's key",
            |j| {
                j.status.as_ref().is_some_and(|s| {
                    s.phase == JobPhase::Pending && s.reason.as_deref() == Some("SecretKeyNotFound")
                })
            },
        )
        .await
        .unwrap();
        let explanation = waiting.status.unwrap().explanation.unwrap_or_default();
        assert!(
            explanation.contains("\"AWS_SECRET_ACCESS_KEY\" of Secret team-a/s3-half"),
            "{explanation}"
        );
    });
}
