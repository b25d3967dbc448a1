//! A `Placement` becomes a local `batch/v1` Job, as pure functions: [`validate`] decides whether
//! this member can run it at all, [`build`] writes the Job.
//!
//! The Job is what a stranger's workload may do on a provider's cluster, so everything about it is
//! decided here rather than taken from the tenant: one Indexed Job with `replicas` pods run together
//! (`completions = parallelism = replicas`), no retries on the member (`backoffLimit: 0`: the hub
//! retries elsewhere), the attempt's `maxDuration` as `activeDeadlineSeconds`, the GPUs on the first
//! container, a node selector for the model, no ServiceAccount token, no service links, a
//! security context that passes the `restricted` Pod Security Standard, a read-only root
//! filesystem with a writable `/tmp` of the pod's own, and the member's `imagePullPolicy`. The name is a pure function
//! of job UID and attempt ([`local_job_name`]), so a restarted agent finds the Job it made.

use std::collections::{BTreeMap, BTreeSet};

use gpufed_crds::naming::{
    GPU_RESOURCE, LABEL_ATTEMPT, LABEL_CLUSTER, LABEL_GPU_MEMORY_MIB, LABEL_GPU_MODEL,
    LABEL_JOB_UID, LABEL_MANAGED_BY, LABEL_PLACEMENT, MANAGED_BY, local_job_name,
};
use gpufed_crds::{ContainerResources, NodeInventory, Placement, WorkloadTemplate};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource,
    KeyToPath, LocalObjectReference, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, PodSchedulingGate, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, Secret, SecretEnvSource, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Service, ServiceSpec, Toleration, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::ObjectMeta;

use super::cached::Job as CachedJob;
use crate::cli::PullPolicy;

/// Annotation on the local Job with the hub namespace of its Placement.
pub const ANNOTATION_PLACEMENT_NAMESPACE: &str = "gpufed.io/placement-namespace";
/// Annotation with the attempt's maxDuration in seconds (also the Job's `activeDeadlineSeconds`;
/// a Job of an older agent, whose deadline was its lease, gets it back when adopted by the member's
/// lease, see [`super::member_lease::adoption`]).
pub const ANNOTATION_MAX_DURATION: &str = "gpufed.io/max-duration-seconds";
/// User and group the workload runs as: `nobody`. Images built to run as root still start, and none
/// runs as root (see docs/adr/0005-member-agent.md).
pub const RUN_AS_ID: i64 = 65534;

/// Why a Placement is refused, as written into its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// PascalCase reason, e.g. `ModelUnavailable`.
    pub reason: &'static str,
    /// Human-readable detail.
    pub message: String,
}

impl Rejection {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Rejection {
            reason,
            message: message.into(),
        }
    }
}

/// Whether `s` is a DNS label (RFC 1123), as container names must be.
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Checks that this member (`cluster`, with GPU `nodes`) can run `placement`.
pub fn validate(
    placement: &Placement,
    cluster: &str,
    nodes: &[NodeInventory],
) -> Result<(), Rejection> {
    let spec = &placement.spec;
    if spec.cluster != cluster {
        return Err(Rejection::new(
            "WrongCluster",
            format!(
                "the placement is for cluster {:?}, this is {cluster:?}",
                spec.cluster
            ),
        ));
    }
    validate_template(placement)?;
    let of_model: Vec<&NodeInventory> = nodes.iter().filter(|n| n.model == spec.model).collect();
    if of_model.is_empty() {
        let mut have: Vec<&str> = nodes.iter().map(|n| n.model.as_str()).collect();
        have.dedup();
        return Err(Rejection::new(
            "ModelUnavailable",
            format!(
                "no {} nodes here (has {})",
                spec.model,
                if have.is_empty() {
                    "no GPU nodes".to_string()
                } else {
                    have.join(", ")
                }
            ),
        ));
    }
    let big_enough: Vec<&&NodeInventory> = of_model
        .iter()
        .filter(|n| n.gpu_memory_mib >= spec.min_gpu_memory_mib)
        .collect();
    if big_enough.is_empty() {
        return Err(Rejection::new(
            "InsufficientGpuMemory",
            format!(
                "{} GPUs here have less than the {} MiB required",
                spec.model, spec.min_gpu_memory_mib
            ),
        ));
    }
    if !big_enough
        .iter()
        .any(|n| n.allocatable_gpus >= spec.gpus_per_replica)
    {
        return Err(Rejection::new(
            "NodeTooSmall",
            format!(
                "no {} node here has {} GPUs for one replica",
                spec.model, spec.gpus_per_replica
            ),
        ));
    }
    Ok(())
}

fn validate_template(placement: &Placement) -> Result<(), Rejection> {
    let spec = &placement.spec;
    let invalid = |m: String| Err(Rejection::new("InvalidTemplate", m));
    if spec.replicas == 0 || spec.gpus_per_replica == 0 {
        return invalid("replicas and gpusPerReplica must be at least 1".into());
    }
    if spec.replicas.checked_mul(spec.gpus_per_replica) != Some(spec.total_gpus) {
        return invalid(format!(
            "totalGpus {} is not replicas {} × gpusPerReplica {}",
            spec.total_gpus, spec.replicas, spec.gpus_per_replica
        ));
    }
    if spec.max_duration.as_secs_ceil() == 0 {
        return invalid("maxDuration must be at least 1s".into());
    }
    let containers = &spec.template.containers;
    if containers.is_empty() || containers.len() > 8 {
        return invalid(format!(
            "a replica needs 1 to 8 containers, got {}",
            containers.len()
        ));
    }
    let mut names = BTreeSet::new();
    for c in containers {
        if !dns_label(&c.name) {
            return invalid(format!("container name {:?} is not a DNS label", c.name));
        }
        if !names.insert(c.name.as_str()) {
            return invalid(format!("container name {:?} is used twice", c.name));
        }
        if c.image.trim().is_empty() || c.image.chars().any(char::is_whitespace) {
            return invalid(format!("container {:?} has no usable image", c.name));
        }
    }
    for f in &spec.template.secret_files {
        let p = f.mount_path.as_str();
        let reserved = ["/tmp", "/dev", "/proc", "/sys"]
            .iter()
            .any(|r| p == *r || p.starts_with(&format!("{r}/")));
        if !p.starts_with('/') || p == "/" || p.split('/').any(|s| s == "..") || reserved {
            return invalid(format!(
                "secretFiles {:?}: mountPath {p:?} is not an absolute directory outside /, /tmp, /dev, /proc and /sys",
                f.name
            ));
        }
        if f.items
            .iter()
            .any(|i| i.path.starts_with('/') || i.path.split('/').any(|s| s == ".."))
        {
            return invalid(format!(
                "secretFiles {:?}: an item path leaves its directory",
                f.name
            ));
        }
    }
    Ok(())
}

/// Labels of the local Job and its pods: managed by gpufed, and back to the hub job and placement.
pub fn labels(placement: &Placement) -> BTreeMap<String, String> {
    let spec = &placement.spec;
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_JOB_UID.to_string(), spec.job.uid.clone()),
        (LABEL_ATTEMPT.to_string(), spec.attempt.to_string()),
        (LABEL_CLUSTER.to_string(), spec.cluster.clone()),
        (
            LABEL_PLACEMENT.to_string(),
            placement.metadata.name.clone().unwrap_or_default(),
        ),
    ])
}

fn resources(r: Option<&ContainerResources>, gpus: Option<u32>) -> ResourceRequirements {
    let mut q = BTreeMap::new();
    if let Some(r) = r {
        if let Some(cpu) = &r.cpu {
            q.insert("cpu".to_string(), Quantity(cpu.clone()));
        }
        if let Some(memory) = &r.memory {
            q.insert("memory".to_string(), Quantity(memory.clone()));
        }
    }
    if let Some(g) = gpus {
        q.insert(GPU_RESOURCE.to_string(), Quantity(g.to_string()));
    }
    ResourceRequirements {
        requests: (!q.is_empty()).then(|| q.clone()),
        limits: (!q.is_empty()).then_some(q),
        ..Default::default()
    }
}

/// The container security context of the `restricted` Pod Security Standard.
pub fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        privileged: Some(false),
        // An image cannot be changed by the workload it runs (nor by an attacker inside it); scratch
        // space is the `/tmp` volume.
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

/// Name of the writable scratch volume every workload container gets.
pub const SCRATCH_VOLUME: &str = "gpufed-scratch";
/// Where the scratch volume is mounted (the root filesystem is read-only).
pub const SCRATCH_PATH: &str = "/tmp";

/// Name of the memory-backed `/dev/shm` volume of a template with `shmSize`.
pub const SHM_VOLUME: &str = "gpufed-shm";

/// The pod's volumes: the scratch `/tmp` (limited to `scratchSize`), and a memory-backed
/// `/dev/shm` of `shmSize` when the template asks for one.
fn volumes(t: &WorkloadTemplate, job_name: &str) -> Vec<Volume> {
    let empty_dir = |medium: Option<&str>, size: Option<&String>| Volume {
        empty_dir: Some(EmptyDirVolumeSource {
            medium: medium.map(str::to_string),
            size_limit: size.map(|s| Quantity(s.clone())),
        }),
        ..Default::default()
    };
    let mut v = vec![Volume {
        name: SCRATCH_VOLUME.into(),
        ..empty_dir(None, t.scratch_size.as_ref())
    }];
    if let Some(size) = &t.shm_size {
        v.push(Volume {
            name: SHM_VOLUME.into(),
            ..empty_dir(Some("Memory"), Some(size))
        });
    }
    for f in &t.secret_files {
        v.push(Volume {
            name: secret_volume(&f.name),
            secret: Some(SecretVolumeSource {
                secret_name: Some(local_secret_name(job_name, t, &f.secret_name)),
                items: (!f.items.is_empty()).then(|| {
                    f.items
                        .iter()
                        .map(|i| KeyToPath {
                            key: i.key.clone(),
                            path: i.path.clone(),
                            mode: None,
                        })
                        .collect()
                }),
                default_mode: f.default_mode,
                optional: Some(false),
            }),
            ..Default::default()
        });
    }
    v
}

/// Name of the pod volume of the template's `secretFiles` entry `name`.
fn secret_volume(name: &str) -> String {
    format!("gpufed-secret-{name}")
}

/// Name of the local Secret that holds hub Secret `hub_name` for local Job `job_name`: the Job's
/// name and the Secret's position among those the template refers to, so the Job can be written
/// before the sealed Secrets are opened, and a restarted agent finds the same names.
pub fn local_secret_name(job_name: &str, t: &WorkloadTemplate, hub_name: &str) -> String {
    let i = t
        .secret_names()
        .iter()
        .position(|n| *n == hub_name)
        .unwrap_or(usize::MAX);
    format!("{job_name}-secret-{i}")
}

/// The local Secrets of `job` (already created, so it has a UID) holding the opened `secrets`,
/// each owned by the Job so it goes with it.
pub fn local_secrets(
    job: &Job,
    t: &WorkloadTemplate,
    secrets: &BTreeMap<String, crate::sealing::SecretPayload>,
) -> Vec<Secret> {
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let owner = OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: job_name.clone(),
        uid: job.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    secrets
        .iter()
        .map(|(hub_name, payload)| Secret {
            metadata: ObjectMeta {
                name: Some(local_secret_name(&job_name, t, hub_name)),
                namespace: job.metadata.namespace.clone(),
                labels: job.metadata.labels.clone(),
                annotations: Some(BTreeMap::from([(
                    ANNOTATION_HUB_SECRET.to_string(),
                    hub_name.clone(),
                )])),
                owner_references: Some(vec![owner.clone()]),
                ..Default::default()
            },
            type_: Some(payload.type_.clone()),
            data: Some(payload.data.clone()),
            immutable: Some(true),
            ..Default::default()
        })
        .collect()
}

/// Annotation on a local Secret with the name of the hub Secret it holds.
pub const ANNOTATION_HUB_SECRET: &str = "gpufed.io/hub-secret";

/// Where each container mounts the pod's volumes.
fn mounts(t: &WorkloadTemplate) -> Vec<VolumeMount> {
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    };
    let mut m = vec![mount(SCRATCH_VOLUME, SCRATCH_PATH)];
    if t.shm_size.is_some() {
        m.push(mount(SHM_VOLUME, "/dev/shm"));
    }
    for f in &t.secret_files {
        m.push(VolumeMount {
            read_only: Some(true),
            ..mount(&secret_volume(&f.name), &f.mount_path)
        });
    }
    m
}

/// The scheduling gate every local pod is created with; the agent removes it ([`super::plan`]).
pub const LEASE_GATE: &str = "gpufed.io/member-lease";

/// Seconds a fenced or cancelled workload gets to stop before it is killed.
pub const TERMINATION_GRACE_SECONDS: i64 = 3;

/// Keeps pods off nodes whose GPUs have less memory than the placement needs (the hub chose the
/// cluster; a cluster can mix 40 GB and 80 GB GPUs of one model). Uses the `gpufed.io/gpu-memory-mib`
/// label gpu-probe writes.
pub fn memory_affinity(min_mib: u64) -> Option<Affinity> {
    (min_mib > 0).then(|| Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: LABEL_GPU_MEMORY_MIB.to_string(),
                        operator: "Gt".into(),
                        values: Some(vec![(min_mib - 1).to_string()]),
                    }]),
                    match_fields: None,
                }],
            }),
            preferred_during_scheduling_ignored_during_execution: None,
        }),
        ..Default::default()
    })
}

/// The local Job for `placement`, in `namespace`.
pub fn build(placement: &Placement, namespace: &str, pull: PullPolicy) -> Job {
    let spec = &placement.spec;
    let labels = labels(placement);
    let job_name = local_job_name(&spec.job.uid, spec.attempt);
    let containers = spec
        .template
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| Container {
            name: c.name.clone(),
            image: Some(c.image.clone()),
            command: (!c.command.is_empty()).then(|| c.command.clone()),
            args: (!c.args.is_empty()).then(|| c.args.clone()),
            env: {
                let env: Vec<EnvVar> = c
                    .env
                    .iter()
                    .map(|e| match &e.value_from {
                        Some(from) => EnvVar {
                            name: e.name.clone(),
                            value: None,
                            value_from: Some(EnvVarSource {
                                secret_key_ref: Some(SecretKeySelector {
                                    name: local_secret_name(
                                        &job_name,
                                        &spec.template,
                                        &from.secret_key_ref.name,
                                    ),
                                    key: from.secret_key_ref.key.clone(),
                                    optional: Some(false),
                                }),
                                ..Default::default()
                            }),
                        },
                        None => EnvVar {
                            name: e.name.clone(),
                            value: Some(e.value.clone()),
                            value_from: None,
                        },
                    })
                    .chain(gang_env(&job_name, spec.replicas))
                    .collect();
                (!env.is_empty()).then_some(env)
            },
            env_from: (!c.env_from.is_empty()).then(|| {
                c.env_from
                    .iter()
                    .map(|e| EnvFromSource {
                        prefix: e.prefix.clone(),
                        secret_ref: Some(SecretEnvSource {
                            name: local_secret_name(&job_name, &spec.template, &e.secret_ref.name),
                            optional: Some(false),
                        }),
                        ..Default::default()
                    })
                    .collect()
            }),
            working_dir: c.working_dir.clone(),
            image_pull_policy: Some(pull.as_str().into()),
            volume_mounts: Some(mounts(&spec.template)),
            resources: Some(resources(
                c.resources.as_ref(),
                (i == 0).then_some(spec.gpus_per_replica),
            )),
            security_context: Some(restricted_container()),
            ..Default::default()
        })
        .collect();
    let mut containers: Vec<Container> = containers;
    // A serving job's first container serves on its port and is probed there (ADR 0030).
    if let (Some(serving), Some(first)) = (&spec.serving, containers.first_mut()) {
        let (ports, probe) = super::serving::container_port_and_probe(serving);
        first.ports = Some(ports);
        first.readiness_probe = Some(probe);
    }
    let replicas = i32::try_from(spec.replicas).unwrap_or(i32::MAX);
    let deadline = i64::try_from(spec.max_duration.as_secs_ceil().max(1)).unwrap_or(i64::MAX);
    let mut annotations =
        BTreeMap::from([(ANNOTATION_MAX_DURATION.to_string(), deadline.to_string())]);
    if let Some(ns) = &placement.metadata.namespace {
        annotations.insert(ANNOTATION_PLACEMENT_NAMESPACE.to_string(), ns.clone());
    }
    if let Some(serving) = &spec.serving {
        annotations.insert(
            super::serving::ANNOTATION_SERVING_PORT.to_string(),
            serving.port.to_string(),
        );
    }
    // A serving job's replicas are kept running: the kubelet restarts a crashed server in its pod
    // (ADR 0030); a batch job is never retried on the member (the hub retries elsewhere).
    let (restart_policy, backoff_limit) = if spec.serving.is_some() {
        ("OnFailure", super::serving::BACKOFF_LIMIT)
    } else {
        ("Never", 0)
    };
    Job {
        metadata: ObjectMeta {
            name: Some(job_name.clone()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels.clone()),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(JobSpec {
            completion_mode: Some("Indexed".into()),
            completions: Some(replicas),
            parallelism: Some(replicas),
            backoff_limit: Some(backoff_limit),
            active_deadline_seconds: Some(deadline),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers,
                    // Created unschedulable: the agent removes the gate only while it holds a live
                    // member lease and the attempt's Placement is current, so a Job whose pods
                    // the member's controllers create late — after the agent died and the hub
                    // moved the attempt — never starts them (ADR 0021).
                    scheduling_gates: Some(vec![PodSchedulingGate {
                        name: LEASE_GATE.into(),
                    }]),
                    restart_policy: Some(restart_policy.into()),
                    // Short, so a fenced member's pods are gone well before the hub re-places the
                    // attempt (fence at 2/3 of the pool timeout, which is at least 15 s).
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    node_selector: Some(BTreeMap::from([(
                        LABEL_GPU_MODEL.to_string(),
                        spec.model.clone(),
                    )])),
                    affinity: memory_affinity(spec.min_gpu_memory_mib),
                    // GPU nodes are commonly tainted so that only GPU pods land there.
                    tolerations: Some(vec![Toleration {
                        key: Some(GPU_RESOURCE.into()),
                        operator: Some("Exists".into()),
                        effect: Some("NoSchedule".into()),
                        ..Default::default()
                    }]),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS_ID),
                        run_as_group: Some(RUN_AS_ID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    // The root filesystem is read-only; `/tmp` is the pod's own scratch space.
                    volumes: Some(volumes(&spec.template, &job_name)),
                    image_pull_secrets: (!spec.template.image_pull_secrets.is_empty()).then(|| {
                        spec.template
                            .image_pull_secrets
                            .iter()
                            .map(|r| LocalObjectReference {
                                name: local_secret_name(&job_name, &spec.template, &r.name),
                            })
                            .collect()
                    }),
                    host_network: Some(false),
                    host_pid: Some(false),
                    host_ipc: Some(false),
                    // With the gang's headless Service of the same name, replica i is reachable
                    // at `<job>-<i>.<job>` (the Job controller names Indexed pods' hosts).
                    subdomain: (spec.replicas > 1).then(|| job_name.clone()),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The attempt's maxDuration in seconds, from the Job's annotation.
pub fn max_duration_of(job: &impl kube::Resource) -> Option<u64> {
    job.meta()
        .annotations
        .as_ref()?
        .get(ANNOTATION_MAX_DURATION)?
        .parse()
        .ok()
}

/// Environment of a gang's containers: how many replicas there are, and where replica 0 is.
/// Each pod also gets `JOB_COMPLETION_INDEX` (its replica index) from the Job controller.
fn gang_env(job_name: &str, replicas: u32) -> Vec<EnvVar> {
    if replicas <= 1 {
        return vec![];
    }
    let var = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    };
    vec![
        var(ENV_REPLICAS, replicas.to_string()),
        var(ENV_SUBDOMAIN, job_name.to_string()),
        var(ENV_COORDINATOR, format!("{job_name}-0.{job_name}")),
    ]
}

/// Number of replicas of a gang (set only when there are several).
pub const ENV_REPLICAS: &str = "GPUFED_REPLICAS";
/// The gang's subdomain (its headless Service): replica `i` is `<job>-<i>.<subdomain>`.
pub const ENV_SUBDOMAIN: &str = "GPUFED_SUBDOMAIN";
/// Host name of replica 0, the usual rendezvous (e.g. `MASTER_ADDR` of torch.distributed).
pub const ENV_COORDINATOR: &str = "GPUFED_COORDINATOR";

/// The owner reference of an object that goes with the local Job `job` (a gang's or a serving
/// Job's network): `job` controls it. `None` before the Job is created (no UID).
pub fn controlled_by(job: &CachedJob) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: job.metadata.name.clone()?,
        uid: job.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: None,
    })
}

/// The labels that select the pods of the local Job `job`'s attempt (job UID and attempt); `None`
/// for a Job without them.
pub fn replica_selector(job: &CachedJob) -> Option<BTreeMap<String, String>> {
    let labels = job.metadata.labels.as_ref()?;
    [LABEL_JOB_UID, LABEL_ATTEMPT]
        .iter()
        .map(|k| Some((k.to_string(), labels.get(*k)?.clone())))
        .collect()
}

/// The network of a gang: a headless Service that gives each replica a DNS name, and a
/// NetworkPolicy that lets the replicas reach each other. The jobs namespace denies all other
/// ingress (the member chart's `gpufed-jobs-isolation`), so jobs of different tenants on one member
/// cannot reach each other. Both are owned by `job`, so they go with it; `None` for a single-pod
/// Job, or one without the labels and UID the agent gives its Jobs.
pub fn gang_network(job: &CachedJob) -> Option<(Service, NetworkPolicy)> {
    let spec = job.spec.as_ref()?;
    if spec.completions.unwrap_or(1) <= 1 {
        return None;
    }
    let name = job.metadata.name.clone()?;
    let labels = job.metadata.labels.as_ref()?;
    let selector = replica_selector(job)?;
    let metadata = ObjectMeta {
        name: Some(name),
        namespace: job.metadata.namespace.clone(),
        labels: Some(labels.clone()),
        owner_references: Some(vec![controlled_by(job)?]),
        ..Default::default()
    };
    let service = Service {
        metadata: metadata.clone(),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector.clone()),
            // Replicas find each other before they are Ready (a rendezvous is how they get ready).
            publish_not_ready_addresses: Some(true),
            ..Default::default()
        }),
        status: None,
    };
    let peers = LabelSelector {
        match_labels: Some(selector),
        match_expressions: None,
    };
    let policy = NetworkPolicy {
        metadata,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(peers.clone()),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(peers),
                    ..Default::default()
                }]),
                ports: None,
            }]),
            egress: None,
        }),
    };
    Some((service, policy))
}

#[cfg(test)]
#[path = "job_builder_tests.rs"]
mod tests;
