//! What the member agent's caches hold per running job: its Placement (from the hub), its local
//! Job and its pod, each read from the JSON the API serves and trimmed as the agent's watches trim
//! them (`agent::reflect`: managedFields cleared, then `agent::slim`). At 10,000 running jobs these
//! three caches are most of the agent's memory (docs/benchmarks.md, "Member agent with 10,000
//! pods"), so a field added to a cached type, or a trim lost, shows here as bytes per job.
//!
//! Counted with dhat's heap statistics: the bytes the objects ask the allocator for (glibc adds 8
//! to 16 bytes per block on top, so the block count is printed too).

#![allow(clippy::expect_used)]

mod footprint;

use footprint::per_object;
use gpufed_operator::agent::slim;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// One dhat profiler at a time: the tests of this file take turns.
static PROFILER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The metadata the apiserver adds to every object: UID, version, creation time, managedFields.
fn served(mut obj: Value, i: usize, manager: &str) -> Value {
    let meta = &mut obj["metadata"];
    meta["uid"] = format!("5d2f6a1c-9b3e-4c7d-8e1f-{i:012}").into();
    meta["resourceVersion"] = format!("{}", 100_000 + i).into();
    meta["creationTimestamp"] = "2026-12-06T17:00:00Z".into();
    meta["generation"] = 1.into();
    meta["managedFields"] = json!([{"manager": manager, "operation": "Apply", "apiVersion": "v1",
        "time": "2026-12-06T17:00:00Z", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:labels": {"f:gpufed.io/job-uid": {}}}, "f:spec": {"f:x": {}}}}]);
    obj
}

fn job_uid(i: usize) -> String {
    format!("9e8d7c6b-5a4f-3e2d-1c0b-{i:012}")
}

/// A running job's Placement as the hub's apiserver serves it to the agent.
fn placement(i: usize) -> Value {
    served(
        json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "Placement",
            "metadata": {"name": format!("{}-1", job_uid(i)), "namespace": "gpufed-member-bench",
                "labels": {"app.kubernetes.io/managed-by": "gpufed", "gpufed.io/job-uid": job_uid(i),
                           "gpufed.io/attempt": "1", "gpufed.io/cluster": "bench"}},
            "spec": {"job": {"uid": job_uid(i)}, "attempt": 1, "cluster": "bench", "replicas": 1,
                "gpusPerReplica": 1, "totalGpus": 1, "model": "H100", "minGpuMemoryMiB": 0,
                "pricePerGpuHour": "2.40", "maxDuration": "24h",
                "template": {"containers": [{"name": "main", "image": "registry.local/bench:1",
                                             "command": ["sleep", "infinity"]}]}},
            "status": {"phase": "Running", "localJob": format!("gpufed-{i:016x}-1"),
                "activeReplicas": 1, "succeededReplicas": 0, "startTime": "2026-12-06T17:00:01Z",
                "gpuSeconds": 120, "lastUpdateTime": "2026-12-06T17:02:01Z"}
        }),
        i,
        "gpufed-hub",
    )
}

fn job_labels(i: usize) -> Value {
    json!({"app.kubernetes.io/managed-by": "gpufed", "gpufed.io/job-uid": job_uid(i),
           "gpufed.io/attempt": "1", "gpufed.io/cluster": "bench",
           "gpufed.io/placement": format!("{}-1", job_uid(i))})
}

/// Its local Job, running, as the member's apiserver serves it.
fn job(i: usize) -> Value {
    served(
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": format!("gpufed-{i:016x}-1"), "namespace": "gpufed-jobs",
                "labels": job_labels(i),
                "annotations": {"gpufed.io/max-duration-seconds": "86400",
                                "gpufed.io/placement-namespace": "gpufed-member-bench"}},
            "spec": {"parallelism": 1, "completions": 1, "backoffLimit": 0,
                "activeDeadlineSeconds": 86400, "completionMode": "Indexed",
                "template": {"metadata": {"labels": job_labels(i)},
                    "spec": {"containers": [{"name": "main", "image": "registry.local/bench:1",
                        "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}},
            "status": {"active": 1, "ready": 1, "terminating": 0, "startTime": "2026-12-06T17:00:00Z",
                "uncountedTerminatedPods": {}}
        }),
        i,
        "gpufed-agent",
    )
}

/// Its pod, running on a kwok node, as the member's apiserver serves it (Kubernetes 1.33).
fn pod(i: usize) -> Value {
    let job = format!("gpufed-{i:016x}-1");
    let mut labels = job_labels(i);
    for (k, v) in [
        (
            "batch.kubernetes.io/controller-uid",
            "0b7c9f3e-2a1d-4e5f-9c8b-7a6d5e4f3c2b",
        ),
        ("batch.kubernetes.io/job-name", job.as_str()),
        ("controller-uid", "0b7c9f3e-2a1d-4e5f-9c8b-7a6d5e4f3c2b"),
        ("job-name", job.as_str()),
        ("batch.kubernetes.io/job-completion-index", "0"),
    ] {
        labels[k] = v.into();
    }
    let condition = |t: &str| {
        json!({"type": t, "status": "True", "lastProbeTime": null,
                                     "lastTransitionTime": "2026-12-06T17:00:01Z"})
    };
    let conditions = [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ]
    .map(condition);
    served(
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{job}-0-x7k2p"), "generateName": format!("{job}-0-"),
                "namespace": "gpufed-jobs", "labels": labels,
                "annotations": {"batch.kubernetes.io/job-completion-index": "0"},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job,
                    "uid": "0b7c9f3e-2a1d-4e5f-9c8b-7a6d5e4f3c2b", "controller": true,
                    "blockOwnerDeletion": true}],
                "finalizers": ["batch.kubernetes.io/job-tracking"]},
            "spec": {"nodeName": "kwok-node-17", "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "registry.local/bench:1",
                    "env": [{"name": "GPUFED_JOB_UID", "value": job_uid(i)}],
                    "resources": {"limits": {"nvidia.com/gpu": "1", "cpu": "1", "memory": "1Gi"},
                                  "requests": {"nvidia.com/gpu": "1", "cpu": "1", "memory": "1Gi"}}}]},
            "status": {"phase": "Running", "hostIP": "10.0.0.1", "podIP": "10.0.0.2",
                "podIPs": [{"ip": "10.0.0.2"}], "qosClass": "Guaranteed",
                "startTime": "2026-12-06T17:00:01Z",
                "conditions": conditions,
                "containerStatuses": [{"name": "main", "image": "registry.local/bench:1",
                    "imageID": "", "containerID": "containerd://abc", "ready": true,
                    "restartCount": 0, "started": true, "lastState": {},
                    "state": {"running": {"startedAt": "2026-12-06T17:00:01Z"}}}]}
        }),
        i,
        "kube-controller-manager",
    )
}

/// `json` read as `K`, trimmed as the agent's watches trim it (`agent::reflect`).
fn cached<K: Resource + DeserializeOwned>(json: Value, slim: impl Fn(&mut K)) -> K {
    footprint::cached(json, |m| m.managed_fields = None, slim)
}

#[test]
fn a_running_job_costs_the_agents_caches_a_few_kilobytes() {
    let _turn = PROFILER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _profiler = dhat::Profiler::builder().testing().build();
    const N: usize = 500;
    let rows = [
        (
            "Placement",
            per_object(N, |i| cached(placement(i), slim::placement)),
            per_object(N, |i| {
                cached(placement(i), |_: &mut gpufed_crds::Placement| {})
            }),
        ),
        (
            "local Job",
            per_object(N, |i| cached(job(i), slim::job)),
            per_object(N, |i| {
                cached(job(i), |_: &mut k8s_openapi::api::batch::v1::Job| {})
            }),
        ),
        (
            "pod",
            per_object(N, |i| cached(pod(i), |p| slim::pod(p, "gpufed-jobs"))),
            per_object(N, |i| {
                cached(pod(i), |_: &mut k8s_openapi::api::core::v1::Pod| {})
            }),
        ),
    ];
    let mut total = 0;
    for (what, (bytes, blocks), (api_bytes, _)) in rows {
        println!(
            "{what}: {bytes} bytes in {blocks:.1} blocks cached; {api_bytes} bytes as the API type without managedFields"
        );
        assert!(bytes < api_bytes, "{what}: {bytes} cached vs {api_bytes}");
        total += bytes;
    }
    println!("per running job: {total} bytes");
    // Measured when written: 1,273 + 2,088 + 2,206 = 5,567 bytes in 59 blocks (8,924 in 93
    // before Placements lost their labels and pods all but the GPU entries of their resource
    // lists, the conditions and labels the agent does not read and `lastState`; 5,695 before a
    // Placement's rare `spec.stop` and `status.endpoint` were boxed). A tenth more fails.
    assert!(
        total <= 6_125,
        "the caches hold {total} bytes per running job"
    );
}

/// What a cache adds per object on top of the object itself: kube-runtime's reflector store (an
/// `ObjectRef` key holding copies of the name, namespace, resourceVersion and UID) against the
/// agent's own cache (`agent::cache`, found by the name the object holds).
#[test]
fn the_agents_cache_adds_less_per_object_than_the_reflector_store() {
    use gpufed_operator::agent::{cache, cached};
    use kube::runtime::{reflector, watcher};
    let _turn = PROFILER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _profiler = dhat::Profiler::builder().testing().build();
    const N: usize = 2_000;
    let pods: Vec<cached::Pod> = (0..N)
        .map(|i| cached(pod(i), |p| slim::pod(p, "gpufed-jobs")))
        .collect();
    let (objects, _) = per_object(N, |i| pods[i].clone());
    let reflector = {
        let before = dhat::HeapStats::get().curr_bytes;
        let (store, mut writer) = reflector::store::<cached::Pod>();
        for p in pods.iter().cloned() {
            writer.apply_watcher_event(&watcher::Event::Apply(p));
        }
        assert_eq!(store.state().len(), N);
        (dhat::HeapStats::get().curr_bytes - before) / N
    };
    let ours = {
        let before = dhat::HeapStats::get().curr_bytes;
        let (store, mut writer) = cache::new::<cached::Pod>();
        for p in pods.iter().cloned() {
            writer.apply(watcher::Event::Apply(p), |_| {});
        }
        assert_eq!(store.len(), N);
        (dhat::HeapStats::get().curr_bytes - before) / N
    };
    println!(
        "a cached pod: {objects} bytes; in the reflector store {reflector} bytes, in the agent's cache {ours}"
    );
    // Measured when written: 2,206 bytes; 2,507 in the reflector's store, 2,241 in the agent's
    // cache (an `Arc` and a relist count per entry, and the hash table's free slots).
    assert!(
        ours <= objects + 64,
        "the agent's cache adds {} bytes per object",
        ours - objects
    );
}
