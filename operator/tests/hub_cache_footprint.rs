//! What the hub's caches hold per job: its ComputeJob and the Placement of its attempt, or once the
//! job is at rest only its record (`hub::keep_job`, `hub::keep_placement`, ADR 0041), each read
//! from the JSON the apiserver serves (copied from a run of `gpufed-bench agent`, with a UID and
//! name per job) and trimmed as the hub's watches trim them (`hub::slim_meta`, then `hub::slim_job`
//! / `hub::slim_placement`). The
//! hub's memory goal is 100,000 jobs in 500 MiB (issue 11; docs/benchmarks.md, "Scale"), most of
//! them finished, so the finished job is the row that counts most.
//!
//! Counted with dhat's heap statistics: the bytes the objects ask the allocator for (glibc adds 8
//! to 16 bytes per block on top, so the block count is printed too).

#![allow(clippy::expect_used)]

mod footprint;

use footprint::per_object;
use gpufed_crds::ComputeJob;
use gpufed_operator::hub;
use gpufed_operator::hub::at_rest::JobAtRest;
use gpufed_operator::hub::context::JobUids;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn uid(prefix: &str, i: usize) -> String {
    format!("{prefix}-10ca-4dfe-9990-{i:012}")
}

fn managed_fields(manager: &str) -> Value {
    json!([{"manager": manager, "operation": "Apply", "apiVersion": "gpufed.io/v1alpha1",
            "time": "2026-12-06T20:57:36Z", "fieldsType": "FieldsV1", "subresource": "status",
            "fieldsV1": {"f:status": {"f:phase": {}, "f:attempt": {}, "f:gpus": {}}}}])
}

fn condition(type_: &str, reason: &str, message: &str) -> Value {
    json!({"lastTransitionTime": "2026-12-06T20:57:36Z", "message": message,
           "observedGeneration": 1, "reason": reason, "status": "True", "type": type_})
}

/// A single-GPU job of the agent benchmark, running (as served on 2026-12-06), or finished.
fn job(i: usize, finished: bool) -> Value {
    let placement = format!("gpufed-{i:016x}-1");
    let mut j = json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"creationTimestamp": "2026-12-06T20:57:36Z", "finalizers": ["gpufed.io/cleanup"],
            "generation": 1, "name": format!("agent-{i:05}"), "namespace": "bench",
            "resourceVersion": format!("{}", 79_292 + i), "uid": uid("f5cddc91", i),
            "managedFields": managed_fields("gpufed-hub")},
        "spec": {"gpu": {"minMemoryGiB": 0, "models": ["H100"]}, "gpusPerReplica": 1,
            "maxDuration": "1h", "pool": "default", "priority": 0, "replicas": 1,
            "retry": {"maxAttempts": 3, "retryOnFailure": false},
            "template": {"containers": [{"env": [{"name": "GPUFED_SIM_DURATION", "value": "100h"}],
                                         "image": "busybox:1.36", "name": "main"}]}},
        "status": {"attempt": 1,
            "attempts": [{"attempt": 1, "cluster": "gpufed-a0", "gpuSeconds": 603, "model": "H100",
                "phase": "Running", "placedTime": "2026-12-06T20:57:36Z", "placement": placement,
                "plannedNodes": [{"node": "gpufed-a0-n0", "replicas": 1}],
                "pricePerGpuHour": "2.40", "startTime": "2026-12-06T20:57:45Z"}],
            "conditions": [
                condition("Admitted", "Accepted", "the spec is valid and the pool exists"),
                condition("Scheduled", "Placed", "placed on gpufed-a0: the only fitting cluster (H100 at 2.40/GPU-hour)"),
                condition("Running", "PodsRunning", "1 replica(s) running on gpufed-a0")],
            "explanation": "placed on gpufed-a0: the only fitting cluster (H100 at 2.40/GPU-hour)",
            "gpus": 1, "observedGeneration": 1, "phase": "Running",
            "placement": {"cluster": "gpufed-a0", "model": "H100", "name": placement,
                          "namespace": "gpufed-member-gpufed-a0", "pricePerGpuHour": "2.40"},
            "priority": 0, "queuedTime": "2026-12-06T20:57:36Z",
            "usage": {"gpuSeconds": 603, "startTime": "2026-12-06T20:57:45Z"}}
    });
    if finished {
        let st = &mut j["status"];
        st["phase"] = "Succeeded".into();
        st["completionTime"] = "2026-12-06T21:07:49Z".into();
        st["attempts"][0]["phase"] = "Succeeded".into();
        st["attempts"][0]["finishTime"] = "2026-12-06T21:07:48Z".into();
        st["usage"]["finishTime"] = "2026-12-06T21:07:48Z".into();
        st["conditions"][2] = condition("Running", "Finished", "the job has finished");
        st["conditions"]
            .as_array_mut()
            .expect("conditions")
            .push(condition(
                "Finished",
                "Succeeded",
                "every replica succeeded on gpufed-a0 (603 GPU-seconds)",
            ));
    }
    j
}

/// Its attempt's Placement, running (as served on 2026-12-06), or succeeded.
fn placement(i: usize, finished: bool) -> Value {
    let mut p = json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "Placement",
        "metadata": {"creationTimestamp": "2026-12-06T21:04:48Z", "generation": 1,
            "labels": {"app.kubernetes.io/managed-by": "gpufed", "gpufed.io/attempt": "1",
                       "gpufed.io/cluster": "gpufed-a0", "gpufed.io/job-uid": uid("f5cddc91", i)},
            "name": format!("gpufed-{i:016x}-1"), "namespace": "gpufed-member-gpufed-a0",
            "resourceVersion": format!("{}", 82_061 + i), "uid": uid("8f4e8892", i),
            "managedFields": managed_fields("gpufed-agent")},
        "spec": {"attempt": 1, "cluster": "gpufed-a0", "gpusPerReplica": 1,
            "job": {"uid": uid("f5cddc91", i)}, "maxDuration": "1h0m0s", "minGpuMemoryMiB": 0,
            "model": "H100", "pricePerGpuHour": "2.40", "replicas": 1, "totalGpus": 1,
            "template": {"containers": [{"env": [{"name": "GPUFED_SIM_DURATION", "value": "100h"}],
                                         "image": "busybox:1.36", "name": "main"}]}},
        "status": {"activeReplicas": 1, "gpuSeconds": 179, "lastUpdateTime": "2026-12-06T21:09:01Z",
            "localJob": format!("gpufed-{i:016x}-1"), "phase": "Running",
            "startTime": "2026-12-06T21:06:01Z", "succeededReplicas": 0}
    });
    if finished {
        let st = &mut p["status"];
        st["phase"] = "Succeeded".into();
        st["activeReplicas"] = 0.into();
        st["succeededReplicas"] = 1.into();
        st["finishTime"] = "2026-12-06T21:07:48Z".into();
        st["exits"] = json!([{"replica": 0, "container": "main", "exitCode": 0,
            "reason": "Completed", "startedAt": "2026-12-06T21:06:01Z",
            "finishedAt": "2026-12-06T21:07:48Z"}]);
    }
    p
}

/// `json` read as `K`, trimmed as the hub's watches trim it (`hub::watch_shared`).
fn cached<K: Resource + DeserializeOwned>(json: Value, slim: impl Fn(&mut K)) -> K {
    footprint::cached(json, hub::slim_meta, slim)
}

#[test]
fn a_job_costs_the_hubs_caches_a_few_kilobytes() {
    let _profiler = dhat::Profiler::builder().testing().build();
    const N: usize = 500;
    let mut per_job = [0usize; 2];
    for (k, finished) in [false, true].into_iter().enumerate() {
        let state = if finished { "finished" } else { "running" };
        // A job at rest (this finished job: no chain, so its money is at rest) leaves the job
        // store (`hub::keep_job`); the hub keeps its record instead (ADR 0041).
        let at_rest = !hub::keep_job(&cached(job(0, finished), hub::slim_job));
        assert_eq!(at_rest, finished, "{state}: the job kept in the store");
        let (job_bytes, job_blocks) = if at_rest {
            per_object(N, |i| {
                JobAtRest::of(&cached(job(i, finished), hub::slim_job)).expect("a job with a UID")
            })
        } else {
            per_object(N, |i| cached(job(i, finished), hub::slim_job))
        };
        // The Placement of a job at rest (this finished job: no chain, so its money is at rest)
        // leaves the cache (`hub::keep_placement`); a running job's stays.
        let uids = JobUids::default();
        uids.insert(&cached(job(0, finished), hub::slim_job));
        let kept = hub::keep_placement(&cached(placement(0, finished), hub::slim_placement), &uids);
        assert_eq!(kept, !finished, "{state}: the Placement kept");
        let (p_bytes, p_blocks) = if kept {
            per_object(N, |i| cached(placement(i, finished), hub::slim_placement))
        } else {
            (0, 0.0)
        };
        let (api_job, _) = per_object(N, |i| cached(job(i, finished), |_: &mut ComputeJob| {}));
        println!(
            "{state}: {} {job_bytes} bytes in {job_blocks:.1} blocks (the ComputeJob with its template: {api_job}), Placement {p_bytes} bytes in {p_blocks:.1} blocks",
            if at_rest { "its record" } else { "ComputeJob" }
        );
        assert!(
            job_bytes < api_job || !finished,
            "a finished job keeps its template"
        );
        per_job[k] = job_bytes + p_bytes;
    }
    println!(
        "per running job: {} bytes; per finished job: {} bytes",
        per_job[0], per_job[1]
    );
    // Measured when written: 4,115 bytes per running job and 593 per finished one (5,686 and
    // 5,663 before the hub's cached Placements lost their labels and an attempt's settlement and
    // offer were boxed; 4,547 and 4,524 before a job at rest was cached without its conditions,
    // explanation and Placement reference, then 4,547 and 3,579 before the rare parts of a job's
    // and a Placement's status and `spec.stop` were boxed, then 3,227 per finished job before a
    // job at rest's Placement left the cache, 4,195 and 1,819 before a job's Placement reference,
    // its serving spec and an attempt's usage check were boxed, then 1,627 per finished job before
    // a job at rest left the job store for its record, ADR 0041; the stores' keys and hash slots
    // are not counted, and a job at rest no longer has one in the job store). A tenth more fails.
    assert!(per_job[0] <= 4_527, "{} bytes per running job", per_job[0]);
    assert!(per_job[1] <= 652, "{} bytes per finished job", per_job[1]);
}
