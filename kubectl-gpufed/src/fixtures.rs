//! Fixture objects for the renderers' unit tests: the crds' builders (`gpufed_crds::testing`) plus
//! hand-built statuses, dated relative to a fixed [`now`] so ages are stable.

use gpufed_crds::conditions::{self, job as jc, member as mc};
use gpufed_crds::{
    AttemptPhase, AttemptRecord, ComputeJob, ComputeJobStatus, GpuPool, GpuPoolSpec, GpuPoolStatus,
    Inventory, JobPhase, KubeDuration, MemberCluster, MemberClusterStatus, ModelCapacity,
    NodeInventory, PlacementRef, PlannedNode, Strategy, Usage,
};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::core::ObjectMeta;

/// The fixed "now" of every fixture: 2026-01-01T10:00:00Z.
pub fn now() -> Timestamp {
    Timestamp::from_second(1_767_261_600).unwrap()
}

/// `secs` seconds before [`now`].
pub fn ago(secs: i64) -> Time {
    Time(Timestamp::from_second(now().as_second() - secs).unwrap())
}

/// A condition that last changed `secs` ago.
pub fn cond(type_: &str, ok: bool, reason: &str, message: &str, secs: i64) -> Condition {
    conditions::condition(type_, ok, reason, message, Some(1), ago(secs))
}

/// A Ready node with `allocatable` GPUs of `model`, `free` of them free, 25 % utilised.
pub fn node(name: &str, model: &str, allocatable: u32, free: u32) -> NodeInventory {
    NodeInventory {
        name: name.into(),
        model: model.into(),
        gpu_memory_mib: 81_559,
        allocatable_gpus: allocatable,
        free_gpus: free,
        unhealthy_gpus: 0,
        telemetry_stale: false,
        utilization_percent: 25,
        ready: true,
        gpu_uuids: vec![],
    }
}

/// `m`, created a day ago, joined and healthy (heartbeat 3 s ago) with `nodes` as inventory.
pub fn ready_member(mut m: MemberCluster, nodes: Vec<NodeInventory>) -> MemberCluster {
    let name = m.metadata.name.clone().unwrap_or_default();
    m.metadata.creation_timestamp = Some(ago(86_400));
    m.status = Some(MemberClusterStatus {
        namespace: Some(format!("gpufed-member-{name}")),
        credentials_secret: Some(format!("gpufed-member-{name}-kubeconfig")),
        last_heartbeat_time: Some(ago(3)),
        heartbeat_timeout: Some(KubeDuration::from_secs(40)),
        offer_signing: None,
        agent_version: Some("0.1.0".into()),
        total_gpus: nodes.iter().map(|n| n.allocatable_gpus).sum(),
        free_gpus: nodes.iter().map(|n| n.free_gpus).sum(),
        model_summary: None,
        inventory: Some(Inventory {
            update_time: Some(ago(5)),
            nodes,
        }),
        active_placements: 1,
        observed_generation: Some(1),
        sealing_key: None,
        verification: None,
        reputation: None,
        outages: vec![],
        slash: None,
        conditions: vec![
            cond(
                mc::JOINED,
                true,
                "Registered",
                &format!(
                    "namespace gpufed-member-{name} and credentials ready; pass Secret gpufed-member-{name}-kubeconfig to the member chart"
                ),
                86_000,
            ),
            cond(mc::READY, true, "Heartbeat", "heartbeat within 40s", 86_000),
            cond(mc::BONDED, true, "NoChain", "the pool has no chain", 86_000),
            cond(
                mc::SCHEDULABLE,
                true,
                "Schedulable",
                "accepting jobs",
                86_000,
            ),
        ],
    });
    m
}

/// A pool with hand-built capacity rows `(model, clusters, total, free, min, max, index)`.
pub fn pool(name: &str, capacity: &[(&str, u32, u32, u32, &str, &str, &str)]) -> GpuPool {
    let mut p = GpuPool::new(
        name,
        GpuPoolSpec {
            strategy: Strategy::CheapestFit,
            ..gpufed_crds::testing::pool_spec()
        },
    );
    p.status = Some(GpuPoolStatus {
        capacity: capacity
            .iter()
            .map(
                |&(model, clusters, total, free, min, max, index)| ModelCapacity {
                    model: model.into(),
                    clusters,
                    total_gpus: total,
                    free_gpus: free,
                    min_price: Some(min.parse().unwrap()),
                    max_price: Some(max.parse().unwrap()),
                    price_index: Some(index.parse().unwrap()),
                },
            )
            .collect(),
        ..Default::default()
    });
    p
}

/// The explanation of [`pending_job`].
pub const NO_FIT: &str = "0/3 clusters fit: alpha: no A100 (has H100); beta: A100 has 40 GiB per GPU, needs 80 GiB; gamma: no A100 (has RTX4090)";

/// A job created 5 minutes ago that fits nowhere.
pub fn pending_job() -> ComputeJob {
    let mut j = gpufed_crds::testing::job("big-a100")
        .models(&["A100"])
        .min_memory_gib(80)
        .build();
    j.metadata.creation_timestamp = Some(ago(300));
    j.status = Some(ComputeJobStatus {
        phase: JobPhase::Pending,
        gpus: 1,
        explanation: Some(NO_FIT.into()),
        reason: Some("NoFit".into()),
        queued_time: Some(ago(300)),
        conditions: vec![
            cond(jc::ADMITTED, true, "Admitted", "pool default", 300),
            cond(jc::SCHEDULED, false, "NoFit", NO_FIT, 290),
        ],
        ..Default::default()
    });
    j
}

/// One attempt record on `cluster`.
pub fn attempt(n: u32, cluster: &str, phase: AttemptPhase, gpu_seconds: u64) -> AttemptRecord {
    AttemptRecord {
        attempt: n,
        cluster: cluster.into(),
        placement: format!("team-a-train-1a2b3c4d-{n}"),
        model: "H100".into(),
        price_per_gpu_hour: "2.40".parse().unwrap(),
        provider: None,
        phase,
        reason: None,
        message: None,
        placed_time: Some(ago(3600)),
        start_time: Some(ago(3500)),
        finish_time: None,
        gpu_seconds,
        exits: vec![],
        planned_nodes: vec![PlannedNode {
            node: "a-0".into(),
            replicas: 1,
        }],
        settlement: None,
        unverified_member: false,
        offer: None,
        usage_check: None,
    }
}

/// A 8-GPU H100 job created two hours ago, lost on alpha and now running on beta (attempt 2).
pub fn running_job() -> ComputeJob {
    let mut j = gpufed_crds::testing::job("train")
        .gpus(8)
        .models(&["H100"])
        .build();
    j.metadata.creation_timestamp = Some(ago(7200));
    let mut lost = attempt(1, "alpha", AttemptPhase::Lost, 400);
    lost.reason = Some("HeartbeatExpired".into());
    lost.finish_time = Some(ago(3000));
    let mut current = attempt(2, "beta", AttemptPhase::Running, 1200);
    current.price_per_gpu_hour = "3.00".parse().unwrap();
    current.start_time = Some(ago(2900));
    j.status = Some(ComputeJobStatus {
        phase: JobPhase::Running,
        attempt: 2,
        gpus: 8,
        placement: Some(Box::new(PlacementRef {
            cluster: "beta".into(),
            namespace: "gpufed-member-beta".into(),
            name: "team-a-train-1a2b3c4d-2".into(),
            model: "H100".into(),
            price_per_gpu_hour: "3.00".parse().unwrap(),
        })),
        explanation: Some(
            "placed on beta: the only fitting cluster (H100 at 3.00/GPU-hour)".into(),
        ),
        usage: Some(Usage {
            gpu_seconds: 1600,
            start_time: Some(ago(3500)),
            finish_time: None,
        }),
        attempts: vec![lost, current],
        conditions: vec![
            cond(jc::ADMITTED, true, "Admitted", "pool default", 7200),
            cond(jc::SCHEDULED, true, "Placed", "attempt 2 on beta", 3000),
            cond(
                jc::RUNNING,
                true,
                "Running",
                "1 of 1 replicas running",
                2900,
            ),
        ],
        ..Default::default()
    });
    j
}

/// A core/v1 Event about `job` seen `count` times, first `first` and last `last` seconds ago.
pub fn event(
    job: &ComputeJob,
    type_: &str,
    reason: &str,
    message: &str,
    first: i64,
    last: i64,
    count: i32,
) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}.{reason}",
                job.metadata.name.clone().unwrap_or_default()
            )),
            namespace: job.metadata.namespace.clone(),
            ..Default::default()
        },
        involved_object: ObjectReference {
            kind: Some("ComputeJob".into()),
            name: job.metadata.name.clone(),
            namespace: job.metadata.namespace.clone(),
            uid: job.metadata.uid.clone(),
            ..Default::default()
        },
        type_: Some(type_.into()),
        reason: Some(reason.into()),
        message: Some(message.into()),
        first_timestamp: Some(ago(first)),
        last_timestamp: Some(ago(last)),
        count: Some(count),
        source: Some(EventSource {
            component: Some("gpufed-hub".into()),
            host: None,
        }),
        ..Default::default()
    }
}
