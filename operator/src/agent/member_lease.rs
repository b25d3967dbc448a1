//! The member's job lease (ADR 0021), as pure code: one Job of the agent's own that owns every local
//! gpufed Job and that the member's control plane deletes, with everything it owns, once the agent
//! stops renewing it.
//!
//! The lease Job never runs a pod (`parallelism: 0`, `completions: 1`). Its `activeDeadlineSeconds`
//! is kept at most a lease ahead by the agent ([`renewed_deadline`](super::fence::renewed_deadline)
//! with no ceiling). When the agent dies or cannot reach its own apiserver, three controllers every
//! kube-controller-manager runs do the fencing:
//! 1. the Job controller marks the lease Job `Failed` (`DeadlineExceeded`) at its deadline;
//! 2. the TTL-after-finished controller deletes it at once (`ttlSecondsAfterFinished: 0`);
//! 3. the garbage collector deletes every local Job whose owner it was, and their pods.
//!
//! So renewing costs one PATCH per `T/6` per member, whatever the number of running Jobs (one PATCH
//! per running Job before: ~1,500 per second with 10,000 running Jobs and `T` = 40 s).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile,
    SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;

use super::job_builder::RUN_AS_ID;

/// Name of the lease Job in the jobs namespace.
pub const LEASE_JOB: &str = "gpufed-member-lease";
/// Label that marks the lease Job (it deliberately lacks the managed-by label of local Jobs, so
/// the placement sync never takes it for an orphaned workload).
pub const LABEL_ROLE: &str = "gpufed.io/role";
/// Value of [`LABEL_ROLE`] on the lease Job.
pub const ROLE_LEASE: &str = "member-lease";
/// The image named by the lease Job's pod template. No pod is ever created from it
/// (`parallelism: 0`); the API requires a container, and this name says what it is if anyone looks.
pub const NEVER_RUN_IMAGE: &str = "gpufed.io/member-lease:never-runs";

/// The lease Job as first created: its deadline one `lease_secs` after it starts.
pub fn lease_job(namespace: &str, lease_secs: u64) -> Job {
    let deadline = i64::try_from(lease_secs.max(1)).unwrap_or(i64::MAX);
    Job {
        metadata: ObjectMeta {
            name: Some(LEASE_JOB.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                LABEL_ROLE.to_string(),
                ROLE_LEASE.to_string(),
            )])),
            annotations: Some(BTreeMap::from([(
                "gpufed.io/description".to_string(),
                "Owns every gpufed Job on this member. The gpufed agent keeps its activeDeadlineSeconds a few seconds ahead; if the agent stops, it fails, is deleted (ttlSecondsAfterFinished: 0), and the garbage collector deletes the Jobs it owns, so work the hub may run elsewhere stops here. It never runs a pod.".to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(JobSpec {
            parallelism: Some(0),
            completions: Some(1),
            backoff_limit: Some(0),
            active_deadline_seconds: Some(deadline),
            ttl_seconds_after_finished: Some(0),
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "never-runs".into(),
                        image: Some(NEVER_RUN_IMAGE.into()),
                        security_context: Some(SecurityContext {
                            allow_privilege_escalation: Some(false),
                            capabilities: Some(Capabilities {
                                drop: Some(vec!["ALL".into()]),
                                add: None,
                            }),
                            run_as_non_root: Some(true),
                            seccomp_profile: Some(SeccompProfile {
                                type_: "RuntimeDefault".into(),
                                localhost_profile: None,
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS_ID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// What the agent sees of its lease Job.
#[derive(Clone, Debug, PartialEq)]
pub enum LeaseState {
    /// No lease Job: create one.
    Absent,
    /// Created, but the Job controller has not started its clock (`startTime`) yet. Its UID can
    /// already own Jobs.
    Starting {
        /// What local Jobs put in their `ownerReferences`.
        owner: OwnerReference,
    },
    /// Counting down.
    Live {
        /// What local Jobs put in their `ownerReferences`.
        owner: OwnerReference,
        /// Seconds since the Job controller started its clock.
        elapsed: u64,
        /// Its `activeDeadlineSeconds`.
        deadline: Option<i64>,
    },
    /// Finished (its deadline passed) or being deleted: every Job it owns is being deleted by the
    /// garbage collector. A new lease can only be created once it is gone.
    Lapsed {
        /// Why, for the log.
        why: String,
    },
}

/// The owner reference a local Job carries to the lease Job `job`.
pub fn owner_of(job: &Job) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: job.metadata.name.clone()?,
        uid: job.metadata.uid.clone()?,
        // Not a controller: the Job controller must keep managing each local Job's pods.
        controller: None,
        block_owner_deletion: None,
    })
}

/// Classifies the lease Job `job` (`None`: there is none) at `now`.
pub fn state(job: Option<&Job>, now: Timestamp) -> LeaseState {
    let Some(job) = job else {
        return LeaseState::Absent;
    };
    if job.metadata.deletion_timestamp.is_some() {
        return LeaseState::Lapsed {
            why: "being deleted".into(),
        };
    }
    let status = job.status.clone().unwrap_or_default();
    if let Some(c) = status.conditions.iter().flatten().find(|c| {
        matches!(c.type_.as_str(), "Failed" | "FailureTarget" | "Complete") && c.status == "True"
    }) {
        return LeaseState::Lapsed {
            why: format!(
                "{} ({})",
                c.type_,
                c.reason.clone().unwrap_or_else(|| "no reason given".into())
            ),
        };
    }
    let Some(owner) = owner_of(job) else {
        return LeaseState::Absent;
    };
    match status.start_time {
        None => LeaseState::Starting { owner },
        Some(started) => LeaseState::Live {
            owner,
            elapsed: u64::try_from(now.duration_since(started.0).as_secs()).unwrap_or(0),
            deadline: job.spec.as_ref().and_then(|s| s.active_deadline_seconds),
        },
    }
}

/// Whether the local Job `job` is owned by the lease `owner` (a Job of an older agent that renewed
/// each Job's own deadline is not, and is adopted; see [`adoption`]).
pub fn is_owned_by(job: &impl kube::Resource, owner: &OwnerReference) -> bool {
    job.meta()
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == owner.uid)
}

/// Whether the local Job `job` is owned by some lease Job (this one or a lapsed one).
pub fn has_lease_owner(job: &impl kube::Resource) -> bool {
    job.meta()
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.kind == "Job" && r.name == LEASE_JOB)
}

/// The merge patch that puts a running local Job of an older agent (one whose own
/// `activeDeadlineSeconds` was its lease) under the member's lease: owned by `owner`, its deadline
/// back at the attempt's `max_duration` seconds. `None` if the Job is already under a lease Job
/// (this one, or a lapsed one whose garbage collection is deleting it).
pub fn adoption(
    job: &impl kube::Resource,
    owner: &OwnerReference,
    max_duration: u64,
) -> Option<serde_json::Value> {
    if has_lease_owner(job) {
        return None;
    }
    let mut owners: Vec<OwnerReference> = job.meta().owner_references.clone().unwrap_or_default();
    owners.push(owner.clone());
    Some(serde_json::json!({
        "metadata": {"ownerReferences": owners},
        "spec": {"activeDeadlineSeconds": i64::try_from(max_duration).unwrap_or(i64::MAX)},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn created(uid: &str) -> Job {
        let mut j = lease_job("gpufed-jobs", 10);
        j.metadata.uid = Some(uid.into());
        j
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn the_lease_job_never_runs_a_pod_and_is_deleted_as_soon_as_it_finishes() {
        let j = lease_job("gpufed-jobs", 13);
        let s = j.spec.unwrap();
        assert_eq!(
            (s.parallelism, s.completions, s.backoff_limit),
            (Some(0), Some(1), Some(0))
        );
        assert_eq!(s.active_deadline_seconds, Some(13));
        assert_eq!(s.ttl_seconds_after_finished, Some(0));
        assert_eq!(j.metadata.name.as_deref(), Some(LEASE_JOB));
        // Not a local gpufed Job: the sync would delete it as an orphan.
        let labels = j.metadata.labels.unwrap();
        assert!(!labels.contains_key(gpufed_crds::naming::LABEL_MANAGED_BY));
        assert_eq!(labels[LABEL_ROLE], ROLE_LEASE);
        // A lease of 0 s would fail the Job at once.
        assert_eq!(
            lease_job("n", 0).spec.unwrap().active_deadline_seconds,
            Some(1)
        );
    }

    #[test]
    fn a_lease_is_absent_starting_live_or_lapsed() {
        assert_eq!(state(None, at(0)), LeaseState::Absent);
        let j = created("u1");
        let owner = owner_of(&j).unwrap();
        assert_eq!(owner.uid, "u1");
        assert_eq!(owner.controller, None);
        assert_eq!(
            state(Some(&j), at(0)),
            LeaseState::Starting {
                owner: owner.clone()
            }
        );

        let mut live = j.clone();
        live.status = Some(JobStatus {
            start_time: Some(Time(at(0))),
            ..Default::default()
        });
        assert_eq!(
            state(Some(&live), at(7)),
            LeaseState::Live {
                owner,
                elapsed: 7,
                deadline: Some(10)
            }
        );

        let mut failed = live.clone();
        failed.status.as_mut().unwrap().conditions = Some(vec![JobCondition {
            type_: "Failed".into(),
            status: "True".into(),
            reason: Some("DeadlineExceeded".into()),
            ..Default::default()
        }]);
        assert!(
            matches!(state(Some(&failed), at(11)), LeaseState::Lapsed { why } if why.contains("DeadlineExceeded"))
        );

        let mut deleting = live;
        deleting.metadata.deletion_timestamp = Some(Time(at(11)));
        assert!(matches!(
            state(Some(&deleting), at(11)),
            LeaseState::Lapsed { .. }
        ));
    }

    #[test]
    fn an_older_agents_job_is_adopted_once_and_gets_its_max_duration_back() {
        let lease = created("u1");
        let owner = owner_of(&lease).unwrap();
        let mut job = Job {
            spec: Some(JobSpec {
                active_deadline_seconds: Some(12),
                ..Default::default()
            }),
            ..Default::default()
        };
        let patch = adoption(&job, &owner, 3600).unwrap();
        assert_eq!(patch["spec"]["activeDeadlineSeconds"], 3600);
        assert_eq!(patch["metadata"]["ownerReferences"][0]["uid"], "u1");

        job.metadata.owner_references = Some(vec![owner.clone()]);
        assert!(is_owned_by(&job, &owner));
        assert_eq!(adoption(&job, &owner, 3600), None);

        // Owned by a lapsed lease: the garbage collector is deleting it; never adopted.
        let mut old = owner.clone();
        old.uid = "u0".into();
        job.metadata.owner_references = Some(vec![old]);
        assert!(!is_owned_by(&job, &owner));
        assert_eq!(adoption(&job, &owner, 3600), None);
    }
}
