use super::*;
use crate::agent::fixtures::{at, condition, local_job, placement, pod};
use crate::agent::job_builder::{RUN_AS_ID, build};
use crate::agent::report;
use gpufed_crds::{DataInput, DataOutput};
use k8s_openapi::api::batch::v1::JobStatus;
use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated};

const IMAGE: &str = "ghcr.io/gpufed/gpufed-data:0.1.0";
const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn input() -> DataInput {
    DataInput {
        name: "dataset".into(),
        endpoint: "https://s3.eu-west-1.amazonaws.com".into(),
        region: Some("eu-west-1".into()),
        bucket: "team-a-data".into(),
        key: Some("alpaca/train.jsonl".into()),
        size: Some(4),
        sha256: Some(SHA.into()),
        mount_path: "/data".into(),
        credentials_secret: Some("s3".into()),
        ..Default::default()
    }
}

fn output() -> DataOutput {
    DataOutput {
        name: "checkpoint".into(),
        path: "/output".into(),
        endpoint: "https://s3.eu-west-1.amazonaws.com".into(),
        bucket: "team-a-runs".into(),
        prefix: "runs/42/".into(),
        credentials_secret: Some("s3".into()),
        ..Default::default()
    }
}

fn with_data(replicas: u32) -> Placement {
    let mut p = placement("train", 1).replicas(replicas).build();
    p.spec.template.inputs = vec![input()];
    p.spec.template.outputs = vec![output()];
    p
}

fn job_with_data(p: &Placement) -> Job {
    let mut job = build(p, "gpufed-jobs", PullPolicy::IfNotPresent);
    attach(&mut job, p, IMAGE, PullPolicy::IfNotPresent);
    job
}

fn pod_spec(job: &Job) -> &k8s_openapi::api::core::v1::PodSpec {
    job.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

#[test]
fn an_input_is_fetched_by_an_init_container_of_the_members_image_and_mounted_read_only() {
    let p = with_data(1);
    let job = job_with_data(&p);
    let pod = pod_spec(&job);
    let init = &pod.init_containers.as_ref().unwrap()[0];
    assert_eq!(init.name, "gpufed-fetch-dataset");
    assert_eq!(init.image.as_deref(), Some(IMAGE));
    assert_eq!(init.command.as_deref(), Some(&[HELPER.to_string()][..]));
    let args = init.args.clone().unwrap();
    for a in [
        "fetch",
        "--endpoint=https://s3.eu-west-1.amazonaws.com",
        "--region=eu-west-1",
        "--bucket=team-a-data",
        "--require-credentials",
        "--key=alpaca/train.jsonl",
        "--size=4",
        &format!("--sha256={SHA}"),
        "--dest=/gpufed/data",
    ] {
        assert!(args.iter().any(|x| x == a), "{a} missing from {args:?}");
    }
    // The credentials are the sealed Secret's local copy (ADR 0020), as environment.
    let job_name = job.metadata.name.clone().unwrap();
    let secret = init.env_from.as_ref().unwrap()[0]
        .secret_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        secret.name,
        local_secret_name(&job_name, &p.spec.template, "s3")
    );
    let sc = init.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    // The workload sees the data read-only at its mountPath.
    let main = &pod.containers[0];
    let m = main
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == "/data")
        .unwrap();
    assert_eq!(m.read_only, Some(true));
    assert!(
        pod.volumes
            .iter()
            .flatten()
            .any(|v| v.name == m.name && v.empty_dir.is_some())
    );
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_user,
        Some(RUN_AS_ID)
    );
}

#[test]
fn a_presigned_input_is_fetched_from_the_sealed_url_without_keys() {
    let mut p = with_data(1);
    p.spec.template.inputs[0].presign = true;
    let job = job_with_data(&p);
    let init = &pod_spec(&job).init_containers.as_ref().unwrap()[0];
    let args = init.args.clone().unwrap();
    assert!(
        args.iter()
            .any(|a| a == "--url-env=GPUFED_PRESIGNED_URL_DATASET"),
        "{args:?}"
    );
    assert!(
        !args.iter().any(|a| a == "--require-credentials"),
        "{args:?}"
    );
    // The URL comes in the local copy of the credentials Secret.
    assert!(init.env_from.is_some());
}

#[test]
fn a_presigned_output_is_uploaded_with_its_replicas_sealed_urls_without_keys() {
    for (replicas, var) in [
        (1, "--urls-env=GPUFED_PRESIGNED_PUTS_CHECKPOINT_0"),
        (
            2,
            "--urls-env=GPUFED_PRESIGNED_PUTS_CHECKPOINT_$(GPUFED_REPLICA)",
        ),
    ] {
        let mut p = with_data(replicas);
        p.spec.template.outputs[0].presign = true;
        p.spec.template.outputs[0].files = vec!["model.bin".into()];
        let job = job_with_data(&p);
        let push = &pod_spec(&job).containers[1];
        let args = push.args.clone().unwrap();
        assert!(args.iter().any(|a| a == var), "{args:?}");
        assert!(
            !args.iter().any(|a| a == "--require-credentials"),
            "{args:?}"
        );
        // The URLs come in the local copy of the credentials Secret, the only Secret it names.
        let from = push.env_from.as_ref().unwrap();
        assert_eq!(from.len(), 1);
        assert!(from[0].secret_ref.is_some());
        assert!(push.env.iter().flatten().all(|e| {
            e.value_from
                .as_ref()
                .is_none_or(|v| v.secret_key_ref.is_none())
        }));
    }
}

#[test]
fn an_output_is_uploaded_by_a_last_container_that_waits_for_the_workload_in_a_shared_process_namespace()
 {
    let p = with_data(1);
    let job = job_with_data(&p);
    let pod = pod_spec(&job);
    assert_eq!(pod.share_process_namespace, Some(true));
    let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["main", "gpufed-push-checkpoint"]);
    let push = &pod.containers[1];
    let args = push.args.clone().unwrap();
    for a in [
        "push",
        "--bucket=team-a-runs",
        "--region=us-east-1",
        "--prefix=runs/42/",
        "--src=/gpufed/data",
        "--wait-for-workload",
        "--require-credentials",
    ] {
        assert!(args.iter().any(|x| x == a), "{a} missing from {args:?}");
    }
    // No GPUs for the helper; the workload writes into the same volume.
    assert!(push.resources.is_none());
    let out = pod.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == "/output")
        .unwrap();
    assert_ne!(out.read_only, Some(true));
    assert_eq!(
        job.metadata.annotations.as_ref().unwrap()[ANNOTATION_OUTPUTS],
        "checkpoint"
    );
    // The short grace that keeps fencing fast is unchanged.
    assert_eq!(
        pod.termination_grace_period_seconds,
        Some(super::super::job_builder::TERMINATION_GRACE_SECONDS)
    );
}

#[test]
fn each_replica_of_a_gang_uploads_under_its_own_prefix() {
    let p = with_data(2);
    let job = job_with_data(&p);
    let push = &pod_spec(&job).containers[1];
    assert!(
        push.args
            .iter()
            .flatten()
            .any(|a| a == "--prefix=runs/42/replica-$(GPUFED_REPLICA)/")
    );
    let env = &push.env.as_ref().unwrap()[0];
    assert_eq!(env.name, "GPUFED_REPLICA");
    assert_eq!(
        env.value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    );
}

#[test]
fn a_template_without_data_is_left_alone() {
    let p = placement("train", 1).build();
    let plain = build(&p, "gpufed-jobs", PullPolicy::IfNotPresent);
    let mut job = plain.clone();
    attach(&mut job, &p, IMAGE, PullPolicy::IfNotPresent);
    assert_eq!(job, plain);
    assert!(check(&p, None).is_ok());
}

#[test]
fn a_member_without_a_data_image_refuses_jobs_with_data_and_helper_names_are_reserved() {
    let p = with_data(1);
    let r = check(&p, None).unwrap_err();
    assert_eq!(r.reason, DATA_UNSUPPORTED);
    assert!(r.message.contains("--data-image"), "{}", r.message);
    assert!(check(&p, Some(IMAGE)).is_ok());
    let mut bad = placement("train", 1).build();
    bad.spec.template.containers[0].name = "gpufed-push-x".into();
    assert_eq!(
        check(&bad, Some(IMAGE)).unwrap_err().reason,
        "InvalidTemplate"
    );
}

/// `pod` with a terminated helper `name` (`init`: an init container) that exited with `code`
/// and wrote `message`.
fn with_helper(mut pod: Pod, name: &str, init: bool, code: i32, message: &str) -> Pod {
    let cs = ContainerStatus {
        name: name.into(),
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                message: Some(message.into()),
                reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                started_at: Some(at(100)),
                finished_at: Some(at(200)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let status = pod.status.as_mut().unwrap();
    let list = if init {
        &mut status.init_container_statuses
    } else {
        &mut status.container_statuses
    };
    list.get_or_insert_with(Vec::new).push(cs);
    pod
}

fn observed(p: &Placement, job: &CachedJob, pods: &[Pod]) -> PlacementStatus {
    let pods: Vec<&Pod> = pods.iter().collect();
    observe(
        report::observe(&p.spec, job, &pods, None, &at(300)),
        &p.spec,
        job,
        &pods,
    )
}

fn local(p: &Placement, status: JobStatus) -> CachedJob {
    let mut job = local_job(p, status);
    job.metadata.annotations = job_with_data(p).metadata.annotations;
    job
}

fn failed() -> JobStatus {
    JobStatus {
        conditions: Some(vec![condition(
            "Failed",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            250,
        )]),
        ..Default::default()
    }
}

fn complete() -> JobStatus {
    JobStatus {
        succeeded: Some(1),
        conditions: Some(vec![condition("Complete", "", "", 250)]),
        ..Default::default()
    }
}

#[test]
fn a_wrong_digest_fails_the_attempt_as_input_fetch_failed_with_the_helpers_words() {
    let p = with_data(1);
    let mut failed_pod = pod("p-0", None, None);
    failed_pod.status.as_mut().unwrap().phase = Some("Failed".into());
    let msg = format!(
        "{{\"error\":\"s3://team-a-data/alpaca/train.jsonl: sha256 mismatch: expected {SHA}, got 00\"}}"
    );
    let failed_pod = with_helper(failed_pod, "gpufed-fetch-dataset", true, 1, &msg);
    let st = observed(&p, &local(&p, failed()), &[failed_pod]);
    assert_eq!(st.phase, Some(PlacementPhase::Failed));
    assert_eq!(st.reason.as_deref(), Some(INPUT_FETCH_FAILED));
    let m = st.message.unwrap();
    assert!(
        m.starts_with(
            "input \"dataset\" of replica 0: s3://team-a-data/alpaca/train.jsonl: sha256 mismatch"
        ),
        "{m}"
    );
    assert!(st.outputs.is_empty());
}

#[test]
fn a_failed_upload_fails_the_attempt_as_output_upload_failed_and_lists_nothing() {
    let p = with_data(1);
    let done = pod("p-0", Some(100), Some((200, 0)));
    let done = with_helper(
        done,
        "gpufed-push-checkpoint",
        false,
        1,
        "{\"error\":\"PUT s3://team-a-runs/runs/42/model.bin: HTTP 403: AccessDenied\"}",
    );
    let mut done = done;
    done.status.as_mut().unwrap().phase = Some("Failed".into());
    let st = observed(&p, &local(&p, failed()), &[done]);
    assert_eq!(st.phase, Some(PlacementPhase::Failed));
    assert_eq!(st.reason.as_deref(), Some(OUTPUT_UPLOAD_FAILED));
    assert!(
        st.message
            .as_deref()
            .unwrap()
            .contains("HTTP 403: AccessDenied"),
        "{st:?}"
    );
    assert!(st.outputs.is_empty());
    // A non-zero exit is listed first, the helper's included.
    assert_eq!(st.exits[0].container, "gpufed-push-checkpoint");
    assert_eq!(st.exits[1].container, "main");
}

#[test]
fn a_completed_job_lists_what_each_upload_stored() {
    let p = with_data(1);
    let done = with_helper(
        pod("p-0", Some(100), Some((200, 0))),
        "gpufed-push-checkpoint",
        false,
        0,
        &format!(
            "{{\"bucket\":\"team-a-runs\",\"objects\":[{{\"key\":\"runs/42/model.bin\",\"size\":4,\"sha256\":\"{SHA}\"}}]}}"
        ),
    );
    let st = observed(&p, &local(&p, complete()), &[done]);
    assert_eq!(st.phase, Some(PlacementPhase::Succeeded), "{st:?}");
    assert_eq!(
        st.outputs,
        vec![OutputRecord {
            name: "checkpoint".into(),
            replica: 0,
            bucket: "team-a-runs".into(),
            objects: vec![StoredObject {
                key: "runs/42/model.bin".into(),
                size: 4,
                sha256: SHA.into(),
            }],
            omitted: 0,
        }]
    );
    // The workload's exit comes first, the helper's after it.
    assert_eq!(st.exits[0].container, "main");
}

#[test]
fn a_completed_job_without_an_upload_report_is_failed_not_succeeded() {
    let p = with_data(1);
    // The uploader's message is not a manifest (cut, or overwritten).
    let done = with_helper(
        pod("p-0", Some(100), Some((200, 0))),
        "gpufed-push-checkpoint",
        false,
        0,
        "garbage",
    );
    for pods in [vec![done], vec![pod("p-0", Some(100), Some((200, 0)))]] {
        let st = observed(&p, &local(&p, complete()), &pods);
        assert_eq!(st.phase, Some(PlacementPhase::Failed));
        assert_eq!(st.reason.as_deref(), Some(OUTPUT_UPLOAD_FAILED));
        assert!(
            st.message
                .as_deref()
                .unwrap()
                .contains("no upload report came back for output \"checkpoint\" of replica 0"),
            "{st:?}"
        );
        assert!(st.outputs.is_empty());
    }
}

#[test]
fn a_job_without_data_is_observed_as_before() {
    let p = placement("train", 1).build();
    let job = local_job(&p, complete());
    let pods = [pod("p-0", Some(100), Some((200, 0)))];
    let refs: Vec<&Pod> = pods.iter().collect();
    let plain = report::observe(&p.spec, &job, &refs, None, &at(300));
    assert_eq!(observe(plain.clone(), &p.spec, &job, &refs), plain);
}

#[test]
fn a_workload_that_failed_keeps_its_reason_when_its_upload_fails_too() {
    let p = with_data(1);
    let done = with_helper(
        pod("p-0", Some(100), Some((200, 3))),
        "gpufed-push-checkpoint",
        false,
        1,
        "{\"error\":\"PUT s3://team-a-runs/runs/42/x: HTTP 403: AccessDenied\"}",
    );
    let st = observed(&p, &local(&p, failed()), &[done]);
    assert_eq!(st.phase, Some(PlacementPhase::Failed));
    assert_eq!(st.reason.as_deref(), Some("BackoffLimitExceeded"));
    let m = st.message.unwrap();
    assert!(m.contains("container main exited with code 3"), "{m}");
    assert!(m.contains("output \"checkpoint\" of replica 0: PUT"), "{m}");
    assert!(st.outputs.is_empty());
}
