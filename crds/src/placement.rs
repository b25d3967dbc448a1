//! `Placement`: one attempt of one ComputeJob on one member, written by the hub into the member's
//! namespace (`gpufed-member-<name>`) and pulled by that member's agent (like OCM's ManifestWork).
//!
//! The spec is a frozen copy of what the member must run; it never changes (a new attempt is a new
//! Placement with a new name). The status is written by the agent only.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::units::{KubeDuration, TokenAmount};
use crate::workload::WorkloadTemplate;

/// Machine-readable reasons a member's agent gives in `Placement.status.reason`, read by the hub.
pub mod reasons {
    /// The member stopped the pods because it could not reach the hub for longer than its fence
    /// timeout. Not the workload's fault: the hub retries the job elsewhere.
    pub const FENCED: &str = "Fenced";
    /// A newer attempt of the same job exists: this one is never run.
    pub const STALE_ATTEMPT: &str = "StaleAttempt";
    /// The local Job of an accepted placement vanished (deleted by the owner, or while fenced).
    /// Not the workload's fault: the hub retries the job elsewhere.
    pub const LOCAL_JOB_MISSING: &str = "LocalJobMissing";
    /// The local Job outlived its lease: the member's agent stopped renewing it (it died, or hung)
    /// and the Job controller stopped the pods. Not the workload's fault: the hub retries the job
    /// elsewhere.
    pub const LEASE_EXPIRED: &str = "LeaseExpired";
    /// A replica of a multi-replica job (a gang) stayed unschedulable on the member (kube-scheduler
    /// found no node for it, e.g. another workload took the GPUs after the hub placed the gang) for
    /// longer than the agent's `--gang-unschedulable-grace`. The agent stopped the local Job, so the
    /// replicas that did start released their GPUs; GPU-seconds count only once every replica has
    /// started, so a gang that never fully started is billed nothing. Not the workload's fault: the
    /// hub retries the job elsewhere.
    pub const GANG_UNSCHEDULABLE: &str = "GangUnschedulable";
    /// The agent could not open the placement's sealed Secrets with its key, or they were sealed
    /// for another job, attempt or member (the agent restarted with a new key since the hub sealed
    /// them, or the blob was copied from another Placement). Nothing ran; the hub retries the job
    /// and seals again to the member's current key.
    pub const SEALED_SECRETS_INVALID: &str = "SealedSecretsInvalid";
    /// An input of the template could not be fetched or failed its check (bad URL, missing
    /// credentials, unreachable storage, a missing object, a wrong size or sha256): the workload
    /// never started. The message is the helper's (docs/adr/0029-job-data-on-s3.md).
    pub const INPUT_FETCH_FAILED: &str = "InputFetchFailed";
    /// An output of the template could not be uploaded after the workload exited: the attempt
    /// failed, and no output is reported. The message is the helper's.
    pub const OUTPUT_UPLOAD_FAILED: &str = "OutputUploadFailed";
    /// The hub stopped the attempt (`spec.stop`) because a job of higher priority preempted it
    /// (ADR 0025). Not the workload's fault: the hub re-queues the job, and the attempt does not
    /// count against `retry.maxAttempts`.
    pub const PREEMPTED: &str = "Preempted";
}

/// One attempt of a ComputeJob on one member cluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gpufed.io",
    version = "v1alpha1",
    kind = "Placement",
    plural = "placements",
    shortname = "gpl",
    category = "gpufed",
    namespaced,
    status = "PlacementStatus",
    derive = "PartialEq",
    doc = "One attempt of a ComputeJob on one member cluster. The hub writes it into the member's namespace; the member's agent runs it and reports back in status.",
    printcolumn(name = "Job UID", type_ = "string", json_path = ".spec.job.uid"),
    printcolumn(name = "Attempt", type_ = "integer", json_path = ".spec.attempt"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "GPUs", type_ = "integer", json_path = ".spec.totalGpus"),
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model"),
    printcolumn(
        name = "GPU-Seconds",
        type_ = "integer",
        json_path = ".status.gpuSeconds"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = kube::core::Rule::new(SPEC_IMMUTABLE_BUT_STOP).message("Placement.spec is immutable but for spec.stop and spec.fundedSeconds: the hub writes a new Placement for each attempt"))]
#[x_kube(validation = kube::core::Rule::new("!has(oldSelf.stop) || (has(self.stop) && self.stop == oldSelf.stop)").message("Placement.spec.stop, once set, never changes"))]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    /// The ComputeJob on the hub this placement runs, by UID only: its namespace and name stay on
    /// the hub (docs/adr/0037-members-see-opaque-job-identities.md).
    pub job: JobReference,
    /// Attempt number of the job this placement belongs to (from 1).
    #[schemars(range(min = 1, max = 10))]
    pub attempt: u32,
    /// The member cluster that must run it.
    #[schemars(length(min = 1, max = 49))]
    pub cluster: String,
    /// Replicas, run together.
    #[schemars(range(min = 1, max = 64))]
    pub replicas: u32,
    /// GPUs per replica, on one node.
    #[schemars(range(min = 1, max = 16))]
    pub gpus_per_replica: u32,
    /// replicas × gpusPerReplica.
    #[schemars(range(min = 1, max = 512))]
    pub total_gpus: u32,
    /// GPU model to run on (node selector `gpufed.io/gpu-model`).
    #[schemars(length(min = 1, max = 64))]
    pub model: String,
    /// Minimum memory per GPU in MiB.
    #[serde(default)]
    #[serde(rename = "minGpuMemoryMiB")]
    pub min_gpu_memory_mib: u64,
    /// Price per GPU-hour agreed for this attempt.
    pub price_per_gpu_hour: TokenAmount,
    /// Longest run; the member sets it as the Job's activeDeadlineSeconds.
    pub max_duration: KubeDuration,
    /// Escrow job id (`keccak256(job UID, attempt)`), when the pool has a chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^0x[0-9a-f]{64}$"))]
    pub chain_job_id: Option<String>,
    /// What each replica runs.
    pub template: WorkloadTemplate,
    /// The Secrets the template refers to, sealed by the hub to this member's public key
    /// (`MemberCluster.status.sealingKey`) and bound to this job, attempt and member: base64 of a
    /// libsodium sealed box. Only the member's agent can open it, and only for this attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 262144), pattern(r"^[A-Za-z0-9+/]+=*$"))]
    pub sealed_secrets: Option<String>,
    /// The job's `spec.serving`: run the replicas as kept-running HTTP servers and report their
    /// endpoint (docs/adr/0030-serving-jobs.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<crate::serving::ServingSpec>,
    /// Set when the pool checks usage against telemetry: the member records its gpu-probe's
    /// readings of the attempt's nodes in `status.telemetry` with these parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_recording: Option<crate::usage::UsageRecording>,
    /// Serving placements: how long the member may run the attempt, in seconds from its start,
    /// as far as it is paid (the windows locked in escrow × `maxDuration`; docs/adr/0030-serving-jobs.md
    /// section 7). The agent keeps the local Job's `activeDeadlineSeconds` at it. Besides `stop`
    /// the one spec field that may change after creation: it may be added, and then only raised
    /// by the hub as it renews the lock; never lowered nor removed. Unset: `maxDuration` bounds the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    #[x_kube(validation = kube::core::Rule::new("self >= oldSelf").message("Placement.spec.fundedSeconds only grows: the hub raises it as it renews the escrow lock"))]
    pub funded_seconds: Option<u64>,
    /// Set by the hub to stop the attempt before it ends on its own (ADR 0025: it was preempted
    /// by a job of higher priority). The member's agent deletes the pods with the grace period
    /// given here (not the pod spec's), reports the attempt `Failed` with this reason and its
    /// final GPU-seconds, and the hub re-queues the job. The only field of the spec that may be
    /// added after creation; never changed once set.
    // Boxed: rare, and every Placement is cached by the hub and by its member's agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Box<PlacementStop>>,
}

/// The CEL rule that keeps every field of `PlacementSpec` but `stop` and `fundedSeconds` as it was
/// created (CEL has no way to compare two objects but one key, so the fields are listed; the
/// optional ones may not appear or vanish either). `fundedSeconds` may appear but never vanish
/// here; its own transition rule (`self >= oldSelf`) lets it only grow.
/// `spec_rule_names_every_field_but_stop` checks the list against the schema.
pub const SPEC_IMMUTABLE_BUT_STOP: &str = "self.job == oldSelf.job && self.attempt == oldSelf.attempt && \
    self.cluster == oldSelf.cluster && self.replicas == oldSelf.replicas && \
    self.gpusPerReplica == oldSelf.gpusPerReplica && self.totalGpus == oldSelf.totalGpus && \
    self.model == oldSelf.model && \
    has(self.minGpuMemoryMiB) == has(oldSelf.minGpuMemoryMiB) && \
    (!has(self.minGpuMemoryMiB) || self.minGpuMemoryMiB == oldSelf.minGpuMemoryMiB) && \
    self.pricePerGpuHour == oldSelf.pricePerGpuHour && self.maxDuration == oldSelf.maxDuration && \
    has(self.chainJobId) == has(oldSelf.chainJobId) && \
    (!has(self.chainJobId) || self.chainJobId == oldSelf.chainJobId) && \
    self.template == oldSelf.template && \
    has(self.sealedSecrets) == has(oldSelf.sealedSecrets) && \
    (!has(self.sealedSecrets) || self.sealedSecrets == oldSelf.sealedSecrets) && \
    has(self.serving) == has(oldSelf.serving) && \
    (!has(self.serving) || self.serving == oldSelf.serving) && \
    has(self.usageRecording) == has(oldSelf.usageRecording) && \
    (!has(self.usageRecording) || self.usageRecording == oldSelf.usageRecording) && \
    (!has(oldSelf.fundedSeconds) || has(self.fundedSeconds))";

/// Why and how the hub stops an attempt early.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlacementStop {
    /// Machine-readable reason, copied into the attempt's end: `Preempted`.
    #[schemars(length(min = 1, max = 64))]
    pub reason: String,
    /// Why, for people. It names no job: the member sees no job's namespace or name (ADR 0037);
    /// the attempt's message on the hub names the preemptor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
    /// Seconds the pods get between SIGTERM and SIGKILL (the pool's `preemptionGracePeriod`),
    /// 0 to 3600.
    #[schemars(range(min = 0, max = 3600))]
    pub grace_period_seconds: u32,
}

/// Longest `sealedSecrets` a Placement holds (base64 characters): 256 KiB, well under the 1.5 MiB
/// an apiserver accepts per object.
pub const MAX_SEALED_SECRETS: usize = 262_144;

/// Identifies a ComputeJob on the hub to the member: by its UID only. The job's namespace and
/// name stay on the hub, so a member cannot tell whose job it runs, nor a tenant's job from one
/// of the hub's challenges (docs/adr/0037-members-see-opaque-job-identities.md).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobReference {
    /// UID of the ComputeJob (a re-created job with the same name has another UID).
    #[schemars(length(min = 1, max = 128))]
    pub uid: String,
}

/// What the member reports about a placement.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum PlacementPhase {
    /// The agent created the local Job; pods are not running yet.
    #[default]
    Accepted,
    /// All replicas' pods are running.
    Running,
    /// All replicas completed.
    Succeeded,
    /// The local Job failed (pods failed, deadline exceeded, or it was stopped by fencing).
    Failed,
    /// The agent refused it (wrong cluster, not enough GPUs of the model, invalid template).
    Rejected,
}

impl PlacementPhase {
    /// Whether the placement has ended.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            PlacementPhase::Succeeded | PlacementPhase::Failed | PlacementPhase::Rejected
        )
    }
}

/// Observed state of a placement, written by the member's agent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PlacementStatus {
    /// What the member reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PlacementPhase>,
    /// Name of the local `batch/v1` Job on the member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_job: Option<String>,
    /// Replicas running now.
    #[serde(default)]
    pub active_replicas: u32,
    /// Replicas completed.
    #[serde(default)]
    pub succeeded_replicas: u32,
    /// When the pods started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the local Job ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<Time>,
    /// GPU-seconds used so far (GPUs × seconds since start, frozen at the end).
    #[serde(default)]
    pub gpu_seconds: u64,
    /// Placements with `spec.usageRecording`: the readings of the nodes the pods ran on over the
    /// attempt, as busy and idle spans (refreshed with `gpuSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<crate::usage::UsageTelemetry>,
    /// Machine-readable reason for Failed or Rejected, e.g. `DeadlineExceeded`, `Fenced`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Detail for `reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the agent last wrote this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    /// How the workload's containers ended, as the member's kubelet reported them: non-zero exits
    /// first, then by replica and container; at most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub exits: Vec<ContainerExit>,
    /// Answers to the log requests on this Placement (annotations `log.gpufed.io/<JobLog UID>`),
    /// newest first, at most 4 of at most 32 KiB each; written by the agent under its own field
    /// manager `gpufed-agent-logs` (docs/adr/0028-job-logs.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub logs: Vec<crate::joblog::LogChunk>,
    /// Serving placements: the URL of each ready replica and how many are ready.
    // Boxed: only serving placements have it, and every Placement is cached (88 bytes inline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Box<crate::serving::Endpoint>>,
    /// What the template's `outputs` uploaded, one record per output and replica, as the
    /// uploaders reported it; set only once the local Job completed and every upload succeeded
    /// (docs/adr/0029-job-data-on-s3.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub outputs: Vec<crate::data::OutputRecord>,
}

/// Most container exits a status lists.
pub const MAX_EXITS: usize = 16;
/// Longest termination message kept in a [`ContainerExit`] other than the first (bytes).
pub const MAX_TERMINATION_MESSAGE: usize = 256;
/// Longest termination message kept in the first [`ContainerExit`] a status lists (bytes): all
/// Kubernetes keeps of one, so a challenge answer for up to 16 GPUs fits
/// (docs/adr/0022-challenges.md) while a status holds at most 4096 + 15 × 256 bytes of messages.
pub const MAX_FIRST_TERMINATION_MESSAGE: usize = 4096;

/// How one container of one replica ended.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerExit {
    /// Replica index (the pod's completion index).
    pub replica: u32,
    /// Container name.
    #[schemars(length(max = 63))]
    pub container: String,
    /// Exit code of the container's process.
    pub exit_code: i32,
    /// Why it ended, as the kubelet says: `Completed`, `Error`, `OOMKilled`, `DeadlineExceeded`…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub reason: Option<String>,
    /// The container's termination message (what it wrote to `/dev/termination-log`), cut to
    /// 4096 bytes in the first exit listed and 256 bytes in the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub message: Option<String>,
    /// When the container started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
}

#[cfg(test)]
mod stop_tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn spec_rule_names_every_field_but_stop() {
        let crd = serde_json::to_value(Placement::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let fields: Vec<&String> = spec["properties"].as_object().unwrap().keys().collect();
        assert!(fields.len() > 10, "{fields:?}");
        for f in fields {
            let named = SPEC_IMMUTABLE_BUT_STOP.contains(&format!("self.{f} == oldSelf.{f}"));
            let mutable = f == "stop" || f == "fundedSeconds";
            assert_eq!(named, !mutable, "field {f} in the immutability rule");
        }
        let funded = &spec["properties"]["fundedSeconds"];
        assert_eq!(
            funded["x-kubernetes-validations"][0]["rule"],
            "self >= oldSelf"
        );
        assert!(
            SPEC_IMMUTABLE_BUT_STOP
                .contains("(!has(oldSelf.fundedSeconds) || has(self.fundedSeconds))")
        );
    }

    #[test]
    fn a_stop_round_trips_in_camel_case() {
        let stop = PlacementStop {
            reason: reasons::PREEMPTED.into(),
            message: Some("preempted by team-a/urgent".into()),
            grace_period_seconds: 30,
        };
        let v = serde_json::to_value(&stop).unwrap();
        assert_eq!(v["gracePeriodSeconds"], 30);
        assert_eq!(serde_json::from_value::<PlacementStop>(v).unwrap(), stop);
    }
}
