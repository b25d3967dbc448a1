//! `JobLog`: a tenant's request to read the container log of one replica of one of its
//! ComputeJobs, and the hub's answer, one chunk at a time (docs/adr/0028-job-logs.md).
//!
//! The hub cannot reach member clusters and tenants cannot reach the member namespaces, so a log
//! travels in three hops, each under the RBAC its writer already has: the tenant creates a JobLog
//! in its own namespace; the hub copies the request onto the attempt's Placement (an annotation
//! [`request_annotation`]); the member's agent reads the pod's log from its own apiserver and
//! writes a bounded chunk into `Placement.status.logs`; the hub copies that chunk into the JobLog's
//! status. The reader asks for the next chunk by setting `spec.after` to the last chunk's
//! `status.cursor` and bumping `spec.poll`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Most bytes of log lines in one chunk (a JobLog's `status.lines`, a Placement's answer).
pub const MAX_CHUNK_BYTES: usize = 32 * 1024;
/// Most answers a Placement's status holds at once (one per live request, newest first): a
/// Placement carries at most `MAX_ANSWERS × MAX_CHUNK_BYTES` of log.
pub const MAX_ANSWERS: usize = 4;
/// Prefix of the Placement annotations that carry log requests: `log.gpufed.io/<JobLog UID>`.
pub const REQUEST_ANNOTATION_PREFIX: &str = "log.gpufed.io/";

/// The Placement annotation that carries the request of the JobLog with `uid`.
pub fn request_annotation(uid: &str) -> String {
    format!("{REQUEST_ANNOTATION_PREFIX}{uid}")
}

/// Machine-readable reasons in `JobLog.status.reason` when there are no lines to give.
pub mod reasons {
    /// No ComputeJob of `spec.job` in the JobLog's namespace.
    pub const JOB_NOT_FOUND: &str = "JobNotFound";
    /// The job has not been placed on a member yet: nothing has run.
    pub const NO_ATTEMPT: &str = "NoAttempt";
    /// `spec.replica` is not below the job's `spec.replicas`.
    pub const REPLICA_OUT_OF_RANGE: &str = "ReplicaOutOfRange";
    /// The attempt's Placement is gone from the hub.
    pub const PLACEMENT_GONE: &str = "PlacementGone";
    /// The member did not answer within the hub's timeout.
    pub const MEMBER_NOT_RESPONDING: &str = "MemberNotResponding";
    /// The member answered without lines: the pod has not started, is gone, or its log cannot be
    /// read (see the message).
    pub const NOT_AVAILABLE: &str = "LogNotAvailable";
}

/// A request to read one replica's container log of a ComputeJob, answered chunk by chunk.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "gpufed.io",
    version = "v1alpha1",
    kind = "JobLog",
    plural = "joblogs",
    shortname = "jlog",
    category = "gpufed",
    namespaced,
    status = "JobLogStatus",
    derive = "PartialEq",
    doc = "A request to read the container log of one replica of a ComputeJob in the same namespace, and the hub's answer one chunk at a time. `kubectl gpufed logs` creates and deletes these; they are garbage-collected with their job.",
    printcolumn(name = "Job", type_ = "string", json_path = ".spec.job"),
    printcolumn(name = "Replica", type_ = "integer", json_path = ".spec.replica"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.reason"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = kube::core::Rule::new("self.job == oldSelf.job && self.replica == oldSelf.replica").message("JobLog.spec.job and spec.replica are immutable: create another JobLog"))]
#[serde(rename_all = "camelCase")]
pub struct JobLogSpec {
    /// Name of the ComputeJob, in this JobLog's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub job: String,
    /// Replica (the pod's completion index), from 0.
    #[serde(default)]
    #[schemars(range(max = 63))]
    pub replica: u32,
    /// Container of the replica's pod; default the workload's first container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub container: Option<String>,
    /// Resume cursor: only lines written after it (the `status.cursor` of the chunk read last).
    /// Unset: from the start of the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub after: Option<String>,
    /// Asks for a chunk: the reader sets a new value each time it wants one (`status.observedPoll`
    /// says which request a status answers).
    #[serde(default)]
    pub poll: u64,
}

/// The hub's answer to a JobLog's latest request.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct JobLogStatus {
    /// The `spec.poll` this status answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_poll: Option<u64>,
    /// The attempt whose log this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The member cluster it runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Lines written after `spec.after`, as the container wrote them, at most 32 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32768))]
    pub lines: Option<String>,
    /// The member's timestamp of the last line in `lines`: the next request's `spec.after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// The chunk was cut at its size limit: more lines are waiting.
    #[serde(default)]
    pub more: bool,
    /// The container is still running (more lines may come).
    #[serde(default)]
    pub running: bool,
    /// Why there are no lines, when there are none: see [`reasons`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Detail for `reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The poll the hub passed on to the member last, and when (for the member's timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_poll: Option<u64>,
    /// When the hub passed `requestedPoll` on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_time: Option<Time>,
}

/// A log request as the hub writes it onto a Placement (the annotation's JSON value; its key
/// carries the JobLog's UID). It names neither the JobLog nor the job: the member sees no
/// tenant's namespace or name (ADR 0037), and `kubectl gpufed logs` names JobLogs after the job.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LogRequest {
    /// Replica.
    pub replica: u32,
    /// Container, if not the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Resume cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// The JobLog's `spec.poll`.
    pub poll: u64,
    /// When the hub wrote it (RFC 3339): the agent answers the newest requests first and the hub
    /// drops requests older than ten minutes.
    pub at: String,
}

/// A member's answer to one log request, in `Placement.status.logs`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LogChunk {
    /// UID of the JobLog that asked.
    #[schemars(length(max = 64))]
    pub request: String,
    /// The request's poll this answers.
    pub poll: u64,
    /// Lines after the request's cursor, at most 32 KiB.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 32768))]
    pub lines: String,
    /// Timestamp of the last line (the next cursor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub cursor: Option<String>,
    /// Cut at the size limit: more lines are waiting.
    #[serde(default)]
    pub more: bool,
    /// The container is still running.
    #[serde(default)]
    pub running: bool,
    /// Why there are no lines (pod not started, gone, log unreadable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub error: Option<String>,
}
