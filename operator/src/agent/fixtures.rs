//! Test fixtures of the agent's pure parts: Placements, GPU nodes, local Jobs and their pods,
//! built in a line (`placement("train", 1).replicas(2).gpus(4).build()`).

use std::collections::BTreeMap;

use gpufed_crds::naming::{
    LABEL_ATTEMPT, LABEL_JOB_UID, LABEL_MANAGED_BY, LABEL_PLACEMENT, MANAGED_BY, local_job_name,
    member_namespace, placement_name,
};
use gpufed_crds::{
    Container as TemplateContainer, EnvVar, JobReference, KubeDuration, NodeInventory, Placement,
    PlacementSpec, PlacementStatus, WorkloadTemplate,
};
use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, PodCondition,
};

use super::cached::{ContainerStatus, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;

/// Time `s` seconds after the epoch.
pub fn at(s: i64) -> Time {
    Time(Timestamp::from_second(s).unwrap())
}

/// UID of the fixture job named `job`.
pub fn uid(job: &str) -> String {
    format!("uid-{job}")
}

/// Builds a Placement of job `job` (UID `uid-<job>`), attempt `attempt`, for cluster `alpha`: one
/// replica of one H100 for an hour.
pub fn placement(job: &str, attempt: u32) -> PlacementBuilder {
    let uid = uid(job);
    PlacementBuilder(Placement {
        metadata: ObjectMeta {
            name: Some(placement_name(&uid, attempt)),
            namespace: Some(member_namespace("alpha")),
            ..Default::default()
        },
        spec: PlacementSpec {
            job: JobReference { uid },
            attempt,
            cluster: "alpha".into(),
            replicas: 1,
            gpus_per_replica: 1,
            total_gpus: 1,
            model: "H100".into(),
            min_gpu_memory_mib: 0,
            price_per_gpu_hour: "2.40".parse().unwrap(),
            max_duration: KubeDuration::from_secs(3600),
            chain_job_id: None,
            sealed_secrets: None,
            serving: None,
            usage_recording: None,
            funded_seconds: None,
            stop: None,
            template: WorkloadTemplate {
                containers: vec![TemplateContainer {
                    name: "main".into(),
                    image: "ghcr.io/acme/train:1".into(),
                    command: vec!["python".into(), "train.py".into()],
                    args: vec![],
                    env: vec![EnvVar {
                        name: "EPOCHS".into(),
                        value: "3".into(),
                        value_from: None,
                    }],
                    env_from: vec![],
                    working_dir: None,
                    resources: None,
                }],
                shm_size: None,
                scratch_size: None,
                secret_files: vec![],
                image_pull_secrets: vec![],
                inputs: vec![],
                outputs: vec![],
            },
        },
        status: None,
    })
}

/// Builder returned by [`placement`].
pub struct PlacementBuilder(Placement);

impl PlacementBuilder {
    /// Replicas (total GPUs follow).
    pub fn replicas(mut self, n: u32) -> Self {
        self.0.spec.replicas = n;
        self.0.spec.total_gpus = n * self.0.spec.gpus_per_replica;
        self
    }
    /// GPUs per replica (total GPUs follow).
    pub fn gpus(mut self, n: u32) -> Self {
        self.0.spec.gpus_per_replica = n;
        self.0.spec.total_gpus = n * self.0.spec.replicas;
        self
    }
    /// Target cluster.
    pub fn cluster(mut self, c: &str) -> Self {
        self.0.spec.cluster = c.into();
        self
    }
    /// GPU model.
    pub fn model(mut self, m: &str) -> Self {
        self.0.spec.model = m.into();
        self
    }
    /// Maximum duration, e.g. `"90s"`.
    pub fn max_duration(mut self, d: &str) -> Self {
        self.0.spec.max_duration = d.parse().unwrap();
        self
    }
    /// Status as reported so far.
    pub fn status(mut self, s: PlacementStatus) -> Self {
        self.0.status = Some(s);
        self
    }
    /// The Placement.
    pub fn build(self) -> Placement {
        self.0
    }
}

/// A Ready GPU node of `model` with `gpus` GPUs of 80 GB, `free` of them free.
pub fn gpu_node(name: &str, model: &str, gpus: u32, free: u32) -> NodeInventory {
    NodeInventory {
        name: name.into(),
        model: model.into(),
        gpu_memory_mib: 81559,
        allocatable_gpus: gpus,
        free_gpus: free,
        unhealthy_gpus: 0,
        telemetry_stale: false,
        utilization_percent: 0,
        ready: true,
        gpu_uuids: Vec::new(),
    }
}

/// The local Job of `placement`, as the Job controller would show it, with `status`.
pub fn local_job(placement: &Placement, status: JobStatus) -> crate::agent::cached::Job {
    let spec = &placement.spec;
    crate::agent::cached::Job {
        metadata: ObjectMeta {
            name: Some(local_job_name(&spec.job.uid, spec.attempt)),
            namespace: Some("gpufed-jobs".into()),
            labels: Some(BTreeMap::from([
                (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
                (LABEL_JOB_UID.to_string(), spec.job.uid.clone()),
                (LABEL_ATTEMPT.to_string(), spec.attempt.to_string()),
                (
                    LABEL_PLACEMENT.to_string(),
                    placement.metadata.name.clone().unwrap(),
                ),
            ])),
            ..Default::default()
        },
        spec: None,
        status: Some(status),
    }
}

/// A Job condition of `type_` set True at `t`.
pub fn condition(type_: &str, reason: &str, message: &str, t: i64) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(at(t)),
        ..Default::default()
    }
}

/// A pod of a Job whose single container started at `started` and, if `finished` is given,
/// terminated then with `exit_code`.
pub fn pod(name: &str, started: Option<i64>, finished: Option<(i64, i32)>) -> Pod {
    let state = match (started, finished) {
        (Some(s), Some((f, code))) => Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                started_at: Some(at(s)),
                finished_at: Some(at(f)),
                exit_code: code,
                reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        (Some(s), None) => Some(ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(at(s)),
            }),
            ..Default::default()
        }),
        _ => None,
    };
    let phase = match (started, finished) {
        (Some(_), Some((_, 0))) => "Succeeded",
        (Some(_), Some(_)) => "Failed",
        (Some(_), None) => "Running",
        _ => "Pending",
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(PodSpec::default()),
        status: Some(PodStatus {
            phase: Some(phase.into()),
            container_statuses: state.map(|s| {
                vec![ContainerStatus {
                    name: "main".into(),
                    state: Some(s),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }),
    }
}

/// A pod of a Job that kube-scheduler has found no node for since `since`.
pub fn unschedulable(name: &str, since: i64) -> Pod {
    let mut p = pod(name, None, None);
    if let Some(s) = p.status.as_mut() {
        s.conditions = Some(vec![PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some("0/2 nodes are available: 2 Insufficient nvidia.com/gpu. ".into()),
            last_transition_time: Some(at(since)),
            ..Default::default()
        }]);
    }
    p
}
