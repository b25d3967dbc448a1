//! Job data on S3-compatible storage in the local Job's pods (docs/adr/0029-job-data-on-s3.md), as
//! pure functions beside [`super::job_builder`]:
//!
//! * [`check`]: a template with `inputs` or `outputs` needs the member's helper image
//!   (`--data-image`, the member chart's `jobs.dataImage`); without one the placement is refused.
//! * [`attach`]: one init container per input runs `gpufed-data fetch` into an emptyDir mounted
//!   read-only at the input's `mountPath`; one container per output runs `gpufed-data push
//!   --wait-for-workload` beside the workload's, with the pod's process namespace shared, and
//!   uploads the emptyDir at the output's `path` once the workload's processes have exited. Both
//!   run the member's image, as the workload's user, restricted like it, with the tenant's storage
//!   credentials (a sealed Secret, ADR 0020) as `envFrom` — or, for `presign: true`, the URLs the
//!   hub signed in their place (`--url-env` for an input, `--urls-env` for an output).
//! * [`observe`]: turns what the helpers wrote as their termination messages into the placement's
//!   status: a failed fetch or upload becomes `InputFetchFailed` / `OutputUploadFailed` with the
//!   helper's message, and a completed Job lists the uploaded objects in `status.outputs` — or,
//!   when an uploader's report is missing or unreadable, fails with `OutputUploadFailed` rather
//!   than succeed without it.
//!
//! The uploader is a regular container, not a native sidecar waiting for SIGTERM: a sidecar gets
//! only the pod's 3 s termination grace to upload (kept short so that fencing stops pods before
//! the hub runs the attempt elsewhere), while a regular container holds the pod — and the Job's
//! completion — until its upload ends, and a failed upload fails the pod.

use gpufed_crds::data::{
    MAX_OUTPUT_RECORDS, MAX_RECORDED_OBJECTS, presigned_puts_key, presigned_url_key,
};
use gpufed_crds::placement::reasons::{INPUT_FETCH_FAILED, OUTPUT_UPLOAD_FAILED};
use gpufed_crds::{OutputRecord, Placement, PlacementPhase, PlacementSpec, PlacementStatus};
use gpufed_crds::{StoredObject, WorkloadTemplate};
use k8s_openapi::api::batch::v1::Job;

use super::cached::Job as CachedJob;
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource, ObjectFieldSelector,
    SecretEnvSource, Volume, VolumeMount,
};
use serde::Deserialize;

use super::cached::{ContainerStatus, Pod};
use super::job_builder::{Rejection, local_secret_name, restricted_container};
use super::report::{COMPLETION_INDEX, cut};
use crate::cli::PullPolicy;

/// Where the helper binary is in the member's data image.
pub const HELPER: &str = "/usr/local/bin/gpufed-data";
/// Prefix of the init container that fetches an input.
pub const FETCH_PREFIX: &str = "gpufed-fetch-";
/// Prefix of the container that uploads an output.
pub const PUSH_PREFIX: &str = "gpufed-push-";
/// Where the helper sees the input's or output's volume.
const HELPER_DIR: &str = "/gpufed/data";
/// Replica index of an uploader of a multi-replica job (from the pod's completion index).
const ENV_REPLICA: &str = "GPUFED_REPLICA";
/// Region the requests are signed for when the template names none.
const DEFAULT_REGION: &str = "us-east-1";
/// Annotation on the local Job with the names of the template's outputs, comma-separated: the
/// agent's caches drop the template once a placement is accepted, and [`observe`] must know which
/// uploads to expect.
pub const ANNOTATION_OUTPUTS: &str = "gpufed.io/outputs";
/// Rejection reason of a member without a data image.
pub const DATA_UNSUPPORTED: &str = "DataUnsupported";

fn input_volume(name: &str) -> String {
    format!("gpufed-in-{name}")
}

fn output_volume(name: &str) -> String {
    format!("gpufed-out-{name}")
}

/// Whether the template moves data at all.
pub fn uses_data(t: &WorkloadTemplate) -> bool {
    !t.inputs.is_empty() || !t.outputs.is_empty()
}

/// Whether a container is one of the helpers this module adds.
pub fn is_helper(container: &str) -> bool {
    container.starts_with(FETCH_PREFIX) || container.starts_with(PUSH_PREFIX)
}

/// Refuses a placement with `inputs` or `outputs` when this member has no data image.
pub fn check(placement: &Placement, data_image: Option<&str>) -> Result<(), Rejection> {
    if let Some(c) = placement
        .spec
        .template
        .containers
        .iter()
        .find(|c| is_helper(&c.name))
    {
        return Err(Rejection {
            reason: "InvalidTemplate",
            message: format!(
                "container name {:?} is reserved for gpufed's data helpers ({FETCH_PREFIX}*, {PUSH_PREFIX}*): rename it",
                c.name
            ),
        });
    }
    if uses_data(&placement.spec.template) && data_image.is_none() {
        return Err(Rejection {
            reason: DATA_UNSUPPORTED,
            message: "the job has inputs or outputs, but this member runs no gpufed-data helper image (agent flag --data-image, member chart value jobs.dataImage)".into(),
        });
    }
    Ok(())
}

/// The helper's arguments locating the data, and its credentials.
struct Location<'a> {
    endpoint: &'a str,
    region: Option<&'a str>,
    bucket: &'a str,
    credentials: Option<&'a str>,
}

impl Location<'_> {
    fn args(&self) -> Vec<String> {
        let mut a = vec![
            format!("--endpoint={}", self.endpoint),
            format!("--region={}", self.region.unwrap_or(DEFAULT_REGION)),
            format!("--bucket={}", self.bucket),
        ];
        if self.credentials.is_some() {
            a.push("--require-credentials".into());
        }
        a
    }
}

/// A helper container running `args` with `volume` at [`HELPER_DIR`].
fn helper(
    name: String,
    image: &str,
    pull: PullPolicy,
    args: Vec<String>,
    volume: String,
    read_only: bool,
    credentials: Option<String>,
) -> Container {
    Container {
        name,
        image: Some(image.to_string()),
        command: Some(vec![HELPER.into()]),
        args: Some(args),
        env_from: credentials.map(|name| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name,
                    optional: Some(false),
                }),
                ..Default::default()
            }]
        }),
        image_pull_policy: Some(pull.as_str().into()),
        volume_mounts: Some(vec![VolumeMount {
            name: volume,
            mount_path: HELPER_DIR.into(),
            read_only: Some(read_only),
            ..Default::default()
        }]),
        security_context: Some(restricted_container()),
        ..Default::default()
    }
}

/// Adds the template's inputs and outputs to `job` (built by [`super::job_builder::build`] for
/// `placement`): volumes, mounts in the workload's containers, fetching init containers and
/// uploading containers. Nothing for a template without data.
pub fn attach(job: &mut Job, placement: &Placement, image: &str, pull: PullPolicy) {
    let spec = &placement.spec;
    let t = &spec.template;
    if !uses_data(t) {
        return;
    }
    let job_name = job.metadata.name.clone().unwrap_or_default();
    if !t.outputs.is_empty() {
        let names: Vec<&str> = t.outputs.iter().map(|o| o.name.as_str()).collect();
        job.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(ANNOTATION_OUTPUTS.into(), names.join(","));
    }
    let Some(pod) = job.spec.as_mut().and_then(|s| s.template.spec.as_mut()) else {
        return;
    };
    let credentials = |secret: Option<&String>| secret.map(|s| local_secret_name(&job_name, t, s));
    let empty_dir = |name: String| Volume {
        name,
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    };
    let mut mounts = vec![];
    let volumes = pod.volumes.get_or_insert_with(Vec::new);
    let mut init = vec![];
    for i in &t.inputs {
        volumes.push(empty_dir(input_volume(&i.name)));
        mounts.push(VolumeMount {
            name: input_volume(&i.name),
            mount_path: i.mount_path.clone(),
            read_only: Some(true),
            ..Default::default()
        });
        let mut args = vec!["fetch".to_string()];
        args.extend(
            Location {
                endpoint: &i.endpoint,
                region: i.region.as_deref(),
                bucket: &i.bucket,
                credentials: i.credentials_secret.as_deref(),
            }
            .args(),
        );
        if let Some(key) = &i.key {
            args.push(format!("--key={key}"));
        }
        if let Some(prefix) = &i.prefix {
            args.push(format!("--prefix={prefix}"));
        }
        if let Some(size) = i.size {
            args.push(format!("--size={size}"));
        }
        if let Some(sha) = &i.sha256 {
            args.push(format!("--sha256={sha}"));
        }
        if i.presign {
            // The hub sealed a URL into the credentials Secret instead of the keys.
            args.retain(|a| a != "--require-credentials");
            args.push(format!("--url-env={}", presigned_url_key(&i.name)));
        }
        args.push(format!("--dest={HELPER_DIR}"));
        init.push(helper(
            format!("{FETCH_PREFIX}{}", i.name),
            image,
            pull,
            args,
            input_volume(&i.name),
            false,
            credentials(i.credentials_secret.as_ref()),
        ));
    }
    let mut pushers = vec![];
    for o in &t.outputs {
        volumes.push(empty_dir(output_volume(&o.name)));
        mounts.push(VolumeMount {
            name: output_volume(&o.name),
            mount_path: o.path.clone(),
            ..Default::default()
        });
        let mut args = vec!["push".to_string()];
        args.extend(
            Location {
                endpoint: &o.endpoint,
                region: o.region.as_deref(),
                bucket: &o.bucket,
                credentials: o.credentials_secret.as_deref(),
            }
            .args(),
        );
        let mut prefix = o.prefix.clone();
        if spec.replicas > 1 {
            if !prefix.is_empty() && !prefix.ends_with('/') {
                prefix.push('/');
            }
            prefix.push_str(&format!("replica-$({ENV_REPLICA})/"));
        }
        args.push(format!("--prefix={prefix}"));
        args.push(format!("--src={HELPER_DIR}"));
        args.push("--wait-for-workload".into());
        if o.presign {
            // The hub sealed this replica's PUT URLs into the credentials Secret instead of the
            // keys; the kubelet expands the replica in the variable's name.
            args.retain(|a| a != "--require-credentials");
            let replica = if spec.replicas > 1 {
                format!("$({ENV_REPLICA})")
            } else {
                "0".into()
            };
            args.push(format!(
                "--urls-env={}",
                presigned_puts_key(&o.name, &replica)
            ));
        }
        let mut c = helper(
            format!("{PUSH_PREFIX}{}", o.name),
            image,
            pull,
            args,
            output_volume(&o.name),
            true,
            credentials(o.credentials_secret.as_ref()),
        );
        if spec.replicas > 1 {
            c.env = Some(vec![EnvVar {
                name: ENV_REPLICA.into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: None,
                        field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                    }),
                    ..Default::default()
                }),
            }]);
        }
        pushers.push(c);
    }
    for c in pod.containers.iter_mut() {
        c.volume_mounts
            .get_or_insert_with(Vec::new)
            .extend(mounts.iter().cloned());
    }
    if !init.is_empty() {
        pod.init_containers
            .get_or_insert_with(Vec::new)
            .extend(init);
    }
    if !pushers.is_empty() {
        // The uploaders go last, so the workload's containers have been started when they begin
        // to watch for their processes.
        pod.containers.extend(pushers);
        pod.share_process_namespace = Some(true);
    }
}

/// What the helper writes as its termination message.
#[derive(Deserialize, Debug, Default)]
struct Report {
    #[serde(default)]
    bucket: String,
    #[serde(default)]
    objects: Vec<ReportedObject>,
    #[serde(default)]
    omitted: u32,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize, Debug)]
struct ReportedObject {
    key: String,
    size: u64,
    sha256: String,
}

/// A terminated helper: its replica, name in the template, exit code and report.
struct Ended {
    replica: u32,
    name: String,
    exit_code: i32,
    report: Option<Report>,
}

fn ended_helpers(pods: &[&Pod], prefix: &str, init: bool) -> Vec<Ended> {
    let mut out = vec![];
    for pod in pods {
        let replica = super::usage::replica_index(pod);
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        let statuses: &[ContainerStatus] = if init {
            status
                .init_container_statuses
                .as_deref()
                .unwrap_or_default()
        } else {
            status.container_statuses.as_deref().unwrap_or_default()
        };
        for cs in statuses {
            let Some(name) = cs.name.strip_prefix(prefix) else {
                continue;
            };
            let Some(t) = cs.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
                continue;
            };
            out.push(Ended {
                replica,
                name: name.to_string(),
                exit_code: t.exit_code,
                report: t
                    .message
                    .as_deref()
                    .and_then(|m| serde_json::from_str(m.trim()).ok()),
            });
        }
    }
    out.sort_by(|a, b| (a.replica, &a.name).cmp(&(b.replica, &b.name)));
    out
}

/// Why a helper failed, from its report or its exit code.
fn failure(kind: &str, e: &Ended) -> String {
    let why = match e.report.as_ref().and_then(|r| r.error.clone()) {
        Some(error) => error,
        None => format!(
            "the helper exited with code {} without a report",
            e.exit_code
        ),
    };
    format!("{kind} {:?} of replica {}: {why}", e.name, e.replica)
}

/// `st` (what [`super::report::observe`] made of `job` and its `pods`) with the data helpers'
/// results: a failed fetch or upload as the reason of a failed attempt, and for a completed Job
/// the uploaded objects of every output the Job's annotation names, for every replica — or a
/// failure when one's report is missing. Unchanged for a Job without data helpers.
pub fn observe(
    mut st: PlacementStatus,
    spec: &PlacementSpec,
    job: &CachedJob,
    pods: &[&Pod],
) -> PlacementStatus {
    let outputs: Vec<&str> = job
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_OUTPUTS))
        .map(|v| v.split(',').filter(|n| !n.is_empty()).collect())
        .unwrap_or_default();
    match st.phase {
        Some(PlacementPhase::Failed) => {
            let fetch = ended_helpers(pods, FETCH_PREFIX, true);
            let push = ended_helpers(pods, PUSH_PREFIX, false);
            // A workload that failed by itself keeps its own reason (the upload of what it left
            // failing too is said after it).
            let workload_failed = pods.iter().any(|p| {
                p.status
                    .iter()
                    .flat_map(|s| s.container_statuses.iter().flatten())
                    .any(|cs| {
                        !is_helper(&cs.name)
                            && cs
                                .state
                                .as_ref()
                                .and_then(|s| s.terminated.as_ref())
                                .is_some_and(|t| t.exit_code != 0)
                    })
            });
            let why = fetch
                .iter()
                .find(|e| e.exit_code != 0)
                .map(|e| (INPUT_FETCH_FAILED, failure("input", e)))
                .or_else(|| {
                    push.iter()
                        .find(|e| e.exit_code != 0)
                        .map(|e| (OUTPUT_UPLOAD_FAILED, failure("output", e)))
                });
            let why = why.filter(|(r, _)| !(workload_failed && *r == OUTPUT_UPLOAD_FAILED));
            if workload_failed && let Some(e) = push.iter().find(|e| e.exit_code != 0) {
                let prev = st.message.take().unwrap_or_default();
                st.message = Some(cut(format!("{prev}; {}", failure("output", e))));
            }
            if let Some((reason, message)) = why {
                // Only a failure of the pods themselves: a deadline, a lease or fencing keeps its
                // own reason, with the helper's words after it.
                if st
                    .reason
                    .as_deref()
                    .is_none_or(|r| r == "BackoffLimitExceeded")
                {
                    st.reason = Some(reason.into());
                    st.message = Some(cut(message));
                } else {
                    let prev = st.message.take().unwrap_or_default();
                    st.message = Some(cut(format!("{prev}; {message}")));
                }
            }
            st.outputs.clear();
            st
        }
        Some(PlacementPhase::Succeeded) => {
            let push = ended_helpers(pods, PUSH_PREFIX, false);
            let mut records = vec![];
            let mut missing = vec![];
            for replica in 0..spec.replicas {
                for name in &outputs {
                    let report = push
                        .iter()
                        .find(|e| e.replica == replica && e.name == *name)
                        .filter(|e| e.exit_code == 0)
                        .and_then(|e| e.report.as_ref())
                        .filter(|r| r.error.is_none());
                    match report {
                        Some(r) => records.push(record(name, replica, r)),
                        None => missing.push(format!("{name:?} of replica {replica}")),
                    }
                }
            }
            if !missing.is_empty() {
                st.phase = Some(PlacementPhase::Failed);
                st.reason = Some(OUTPUT_UPLOAD_FAILED.into());
                st.message = Some(cut(format!(
                    "the workload completed, but no upload report came back for output {}: the outputs are not reported as stored",
                    missing.join(", ")
                )));
                st.outputs.clear();
                return st;
            }
            records.truncate(MAX_OUTPUT_RECORDS);
            st.outputs = records;
            st
        }
        _ => st,
    }
}

fn record(name: &str, replica: u32, r: &Report) -> OutputRecord {
    let mut objects: Vec<StoredObject> = r
        .objects
        .iter()
        .map(|o| StoredObject {
            key: o.key.clone(),
            size: o.size,
            sha256: o.sha256.clone(),
        })
        .collect();
    let extra = objects.len().saturating_sub(MAX_RECORDED_OBJECTS);
    objects.truncate(MAX_RECORDED_OBJECTS);
    OutputRecord {
        name: name.to_string(),
        replica,
        bucket: r.bucket.clone(),
        objects,
        omitted: r
            .omitted
            .saturating_add(u32::try_from(extra).unwrap_or(u32::MAX)),
    }
}

#[cfg(test)]
#[path = "job_data_tests.rs"]
mod tests;
