//! The ceiling: how many jobs per second the same apiserver takes each job's create and the hub's
//! writes for it at, with no hub running — the benchmark replays them itself. The closed loop it
//! is compared with times the creates too (from the first create to the last Placement), so the
//! replay does each job's create first: a hub that cost the apiserver nothing beyond its writes
//! would reach 1.0. For a pool without a chain, placing one job costs the hub, in order:
//!
//! 1. a JSON patch adding its finalizer to `metadata.finalizers` (kube-runtime's finalizer helper);
//! 2. one server-side-apply status patch with the admission (condition `Admitted`) and the
//!    decision (attempt record, placement reference, condition `Scheduled`), guarded by the
//!    resourceVersion it was computed from (the scheduling loop writes a new job's admission with
//!    its first decision, ADR 0015);
//! 3. the create of the Placement in the member's namespace;
//! 4. one `events.k8s.io/v1` Event (`Placed`).
//!
//! Each job's create and writes run one after the other (each needs the previous answer's
//! resourceVersion), with `in_flight` jobs at once. The objects have the shape the hub writes
//! (the Placement as `operator/src/hub/lifecycle.rs` `placement_for` builds it), under the hub's
//! field manager.

use std::collections::BTreeMap;
use std::time::Instant;

use futures::StreamExt;
use gpufed_crds::conditions::{self, job as jc};
use gpufed_crds::naming::{
    LABEL_ATTEMPT, LABEL_CLUSTER, LABEL_JOB_UID, LABEL_MANAGED_BY, MANAGED_BY, member_namespace,
    placement_name,
};
use gpufed_crds::{
    AttemptPhase, AttemptRecord, ComputeJob, ComputeJobStatus, JobPhase, JobReference, Placement,
    PlacementRef, PlacementSpec, PlannedNode, TokenAmount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::agents::{Heartbeats, harness_writes};
use super::apimetrics::{RequestCount, subtract};
use super::latency::{create_job, job_names};
use super::procstat::{CpuSample, CpuUse};
use crate::{Cluster, Error};

/// The hub's field manager and event reporter.
const MANAGER: &str = "gpufed-hub";
/// The hub's finalizer on ComputeJobs.
const FINALIZER: &str = "gpufed.io/cleanup";

/// The apiserver's rate for the hub's write mix at one concurrency.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ceiling {
    /// Jobs whose writes were in flight at once.
    pub in_flight: usize,
    /// Jobs replayed.
    pub jobs: usize,
    /// Seconds for all of them.
    pub secs: f64,
    /// Writes the apiserver counted meanwhile, the fake agents' heartbeats taken out.
    pub writes: Vec<RequestCount>,
    /// CPU of each component meanwhile.
    pub cpu: Vec<CpuUse>,
    /// Whether each job's create was part of the timed replay (runs before it was, read from
    /// older JSON, timed the hub's writes alone).
    #[serde(default)]
    pub with_creates: bool,
}

impl Ceiling {
    /// Jobs per second of the whole mix.
    pub fn rate(&self) -> f64 {
        self.jobs as f64 / self.secs.max(f64::EPSILON)
    }
}

/// Replays the write mix of `jobs` jobs, `in_flight` at a time, in `namespace` (which must exist
/// and hold no jobs of the names used), placing them round-robin on `members`.
pub async fn ceiling(
    cluster: &Cluster,
    heartbeats: &Heartbeats,
    namespace: &str,
    members: &[String],
    jobs: usize,
    in_flight: usize,
) -> Result<Ceiling, Error> {
    let client = cluster.client();
    let names = job_names(&format!("mix{in_flight}"), jobs);
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGER.into(),
            instance: None,
        },
    );
    let (before, renewals_before) = heartbeats.scrape(&client).await?;
    let cpu_before = CpuSample::take(cluster)?;
    let t0 = Instant::now();
    let results: Vec<Result<(), Error>> = futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let member = members
                .get(i % members.len().max(1))
                .cloned()
                .unwrap_or_default();
            let client = client.clone();
            let recorder = recorder.clone();
            async move { one_job(&client, &recorder, namespace, name, &member).await }
        })
        .buffer_unordered(in_flight.max(1))
        .collect()
        .await;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = CpuSample::take(cluster)?.since(&cpu_before);
    let (after, renewals_after) = heartbeats.scrape(&client).await?;
    results.into_iter().collect::<Result<Vec<()>, Error>>()?;
    // The creates are the harness's, as in the closed loop: the writes left are the hub's mix.
    let writes = subtract(
        &after.writes_since(&before),
        &harness_writes(
            u64::try_from(jobs).unwrap_or(u64::MAX),
            renewals_after - renewals_before,
        ),
    );
    Ok(Ceiling {
        in_flight,
        jobs,
        secs,
        writes,
        cpu,
        with_creates: true,
    })
}

/// One job's create (as a user submits it) and the hub's four writes for it.
async fn one_job(
    client: &Client,
    recorder: &Recorder,
    namespace: &str,
    name: &str,
    member: &str,
) -> Result<(), Error> {
    create_job(client, namespace, name).await?;
    let job = add_finalizer(client, namespace, name).await?;
    // The admission and the decision in one status write, as the scheduling loop writes a new
    // job's first decision.
    let (decided, record) = decision_status(&job, admission_status(&job), member);
    let job = write_status(client, &job, &decided).await?;
    let placement = placement_for(&job, &record);
    Api::<Placement>::namespaced(client.clone(), &member_namespace(member))
        .create(&PostParams::default(), &placement)
        .await
        .map_err(Error::kube("creating a Placement"))?;
    let note = format!(
        "attempt {}: {}",
        record.attempt,
        decided.explanation.as_deref().unwrap_or_default()
    );
    recorder
        .publish(
            &Event {
                type_: EventType::Normal,
                reason: "Placed".into(),
                note: Some(note),
                action: "Schedule".into(),
                secondary: None,
            },
            &job.object_ref(&()),
        )
        .await
        .map_err(Error::kube("publishing an Event"))?;
    Ok(())
}

/// kube-runtime's finalizer patch: test that there are no finalizers, then add ours.
async fn add_finalizer(client: &Client, namespace: &str, name: &str) -> Result<ComputeJob, Error> {
    let body = serde_json::to_vec(&json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
    ]))
    .map_err(|e| Error::Other(e.to_string()))?;
    let req = http::Request::patch(format!(
        "/apis/gpufed.io/v1alpha1/namespaces/{namespace}/computejobs/{name}"
    ))
    .header(http::header::CONTENT_TYPE, "application/json-patch+json")
    .body(body)
    .map_err(|e| Error::Other(format!("building the finalizer patch: {e}")))?;
    client
        .request::<ComputeJob>(req)
        .await
        .map_err(Error::kube("adding the finalizer"))
}

/// Server-side apply of `status`, guarded by the job's resourceVersion, as the hub writes it.
async fn write_status(
    client: &Client,
    job: &ComputeJob,
    status: &ComputeJobStatus,
) -> Result<ComputeJob, Error> {
    let body = json!({
        "apiVersion": "gpufed.io/v1alpha1",
        "kind": "ComputeJob",
        "metadata": {"name": job.name_any(), "resourceVersion": job.resource_version()},
        "status": status,
    });
    Api::<ComputeJob>::namespaced(client.clone(), &job.namespace().unwrap_or_default())
        .patch_status(
            &job.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(Error::kube("writing a job's status"))
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// What the hub writes when it admits a new job into a pool without a chain.
fn admission_status(job: &ComputeJob) -> ComputeJobStatus {
    let at = now();
    let mut st = ComputeJobStatus {
        phase: JobPhase::Pending,
        gpus: job.spec.replicas * job.spec.gpus_per_replica,
        observed_generation: job.metadata.generation,
        queued_time: Some(at.clone()),
        priority: Some(job.spec.priority),
        ..Default::default()
    };
    conditions::set_condition(
        &mut st.conditions,
        conditions::condition(
            jc::ADMITTED,
            true,
            "Accepted",
            "the spec is valid and the pool exists",
            job.metadata.generation,
            at,
        ),
    );
    st
}

/// What the scheduling loop writes when it places the job on `member`: attempt 1.
fn decision_status(
    job: &ComputeJob,
    mut st: ComputeJobStatus,
    member: &str,
) -> (ComputeJobStatus, AttemptRecord) {
    let at = now();
    let attempt = st.attempt + 1;
    let name = placement_name(&job.uid().unwrap_or_default(), attempt);
    let price = TokenAmount::from_atto(2_100_000_000_000_000_000);
    let explanation =
        format!("placed on {member}: cheapest of 3 fitting clusters (H100 at 2.10/GPU-hour)");
    let record = AttemptRecord {
        attempt,
        cluster: member.to_string(),
        placement: name.clone(),
        model: "H100".into(),
        price_per_gpu_hour: price,
        provider: None,
        phase: AttemptPhase::Placed,
        reason: None,
        message: None,
        placed_time: Some(at.clone()),
        start_time: None,
        finish_time: None,
        gpu_seconds: 0,
        exits: vec![],
        planned_nodes: vec![PlannedNode {
            node: format!("{member}-n0"),
            replicas: job.spec.replicas,
        }],
        settlement: None,
        unverified_member: false,
        offer: None,
        usage_check: None,
    };
    st.attempt = attempt;
    st.phase = JobPhase::Placed;
    st.placement = Some(Box::new(PlacementRef {
        cluster: member.to_string(),
        namespace: member_namespace(member),
        name,
        model: "H100".into(),
        price_per_gpu_hour: price,
    }));
    st.explanation = Some(explanation.clone());
    st.attempts.push(record.clone());
    conditions::set_condition(
        &mut st.conditions,
        conditions::condition(
            jc::SCHEDULED,
            true,
            "Placed",
            explanation,
            job.metadata.generation,
            at,
        ),
    );
    (st, record)
}

/// The Placement of `record`, as the hub's `placement_for` builds it.
fn placement_for(job: &ComputeJob, record: &AttemptRecord) -> Placement {
    let uid = job.uid().unwrap_or_default();
    let labels = BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_JOB_UID.to_string(), uid.clone()),
        (LABEL_ATTEMPT.to_string(), record.attempt.to_string()),
        (LABEL_CLUSTER.to_string(), record.cluster.clone()),
    ]);
    Placement {
        metadata: ObjectMeta {
            name: Some(record.placement.clone()),
            namespace: Some(member_namespace(&record.cluster)),
            labels: Some(labels),
            ..Default::default()
        },
        spec: PlacementSpec {
            job: JobReference { uid },
            attempt: record.attempt,
            cluster: record.cluster.clone(),
            replicas: job.spec.replicas,
            gpus_per_replica: job.spec.gpus_per_replica,
            total_gpus: job.spec.replicas * job.spec.gpus_per_replica,
            model: record.model.clone(),
            min_gpu_memory_mib: job.spec.gpu.min_gpu_memory_mib(),
            price_per_gpu_hour: record.price_per_gpu_hour,
            max_duration: job.spec.max_duration,
            chain_job_id: None,
            template: job.spec.template.clone(),
            sealed_secrets: None,
            serving: None,
            usage_recording: None,
            funded_seconds: None,
            stop: None,
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufed_crds::testing::job;

    #[test]
    fn the_replayed_decision_names_its_placement_and_attempt_like_the_hub() {
        let mut j = job("train").build();
        j.metadata.uid = Some("u-1".into());
        let (st, record) = decision_status(&j, admission_status(&j), "m001");
        assert_eq!((st.attempt, st.phase), (1, JobPhase::Placed));
        assert!(conditions::is_true(&st.conditions, jc::ADMITTED));
        assert!(conditions::is_true(&st.conditions, jc::SCHEDULED));
        let p = placement_for(&j, &record);
        assert_eq!(p.namespace().as_deref(), Some("gpufed-member-m001"));
        assert_eq!(Some(p.name_any()), st.placement.map(|r| r.name));
        assert_eq!(p.spec.total_gpus, j.spec.replicas * j.spec.gpus_per_replica);
    }
}
