//! The log relay: the hub's part of `kubectl gpufed logs` (docs/adr/0028-job-logs.md).
//!
//! A tenant asks for a log by creating a `JobLog` in its own namespace; the hub cannot reach the
//! member and the tenant cannot reach the member's namespace, so the hub carries the request to
//! the attempt's Placement (annotation `log.gpufed.io/<JobLog UID>`, a [`LogRequest`]) and the
//! member's answer (`Placement.status.logs`) back into the JobLog's status. [`decide`] is pure:
//! it checks the job, the replica and the attempt, and turns the caches into at most one
//! annotation patch and one status to write; [`run`] is the loop that carries them out.
//!
//! A request the member has not answered within [`MEMBER_TIMEOUT`] is answered by the hub with
//! `MemberNotResponding`. Requests not renewed for [`REQUEST_TTL`] are removed from the Placement
//! when the hub next writes one there; the rest go with the Placement.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use gpufed_crds::joblog::{LogRequest, REQUEST_ANNOTATION_PREFIX, reasons, request_annotation};
use gpufed_crds::{ComputeJob, JobLog, JobLogStatus, Placement};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::hub::context::{Context, now};

/// How long the hub waits for a member's answer before it answers `MemberNotResponding`.
pub const MEMBER_TIMEOUT: Duration = Duration::from_secs(15);
/// A request older than this is removed from its Placement.
pub const REQUEST_TTL: Duration = Duration::from_secs(600);
/// Longest wait between two passes when no JobLog changes (member answers arrive this way).
const TICK: Duration = Duration::from_millis(250);

/// What one JobLog needs.
#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    /// A merge patch of the Placement's annotations: `(namespace, name, patch)`.
    pub request: Option<(String, String, serde_json::Value)>,
    /// The JobLog's new status, when it changes.
    pub status: Option<JobLogStatus>,
}

fn seconds_between(from: &Time, to: &Time) -> f64 {
    to.0.duration_since(from.0).as_secs_f64()
}

/// The Placement of the job's current attempt, else of its last one: `(namespace, name)`.
fn attempt_placement(job: &ComputeJob) -> Option<(String, String)> {
    let st = job.status.as_ref()?;
    if let Some(p) = &st.placement {
        return Some((p.namespace.clone(), p.name.clone()));
    }
    let last = st.attempts.last()?;
    Some((
        gpufed_crds::naming::member_namespace(&last.cluster),
        last.placement.clone(),
    ))
}

/// What the hub does for `log` given its `job` (if it exists) and the attempt's `placement` (if
/// cached), at `now`.
pub fn decide(
    log: &JobLog,
    job: Option<&ComputeJob>,
    placement: Option<&Placement>,
    now: &Time,
) -> Decision {
    let poll = log.spec.poll;
    let prev = log.status.clone().unwrap_or_default();
    if prev.observed_poll == Some(poll) {
        return Decision::default();
    }
    let ns = log.namespace().unwrap_or_default();
    let answer = |reason: &str, message: String| JobLogStatus {
        observed_poll: Some(poll),
        reason: Some(reason.into()),
        message: Some(message),
        ..prev.clone()
    };
    let done = |status: JobLogStatus| Decision {
        request: None,
        status: Some(status),
    };
    let Some(job) = job else {
        return done(answer(
            reasons::JOB_NOT_FOUND,
            format!(
                "computejob {:?} not found in namespace {ns:?}",
                log.spec.job
            ),
        ));
    };
    let replicas = job.spec.replicas;
    if log.spec.replica >= replicas {
        return done(answer(
            reasons::REPLICA_OUT_OF_RANGE,
            format!(
                "replica {} is out of range: job {:?} has {replicas} replica{} (0 to {})",
                log.spec.replica,
                log.spec.job,
                if replicas == 1 { "" } else { "s" },
                replicas.saturating_sub(1)
            ),
        ));
    }
    let Some((p_ns, p_name)) = attempt_placement(job) else {
        let phase = job.status.as_ref().map(|s| s.phase).unwrap_or_default();
        return done(answer(
            reasons::NO_ATTEMPT,
            format!(
                "job {:?} has no attempt yet (phase {phase:?}): no replica has run, so there is no log",
                log.spec.job
            ),
        ));
    };
    let attempt = job.status.as_ref().map(|s| s.attempt);
    let Some(placement) = placement else {
        return done(answer(
            reasons::PLACEMENT_GONE,
            format!(
                "the Placement {p_name} of attempt {} is gone from the hub: its logs can no longer be read",
                attempt.unwrap_or(0)
            ),
        ));
    };
    let cluster = placement.spec.cluster.clone();
    let uid = log.uid().unwrap_or_default();
    let mut status = JobLogStatus {
        attempt: Some(placement.spec.attempt),
        cluster: Some(cluster.clone()),
        ..prev.clone()
    };
    // The member's answer to this poll, if it is there.
    if let Some(chunk) = placement
        .status
        .iter()
        .flat_map(|s| s.logs.iter())
        .find(|c| c.request == uid && c.poll == poll)
    {
        status.observed_poll = Some(poll);
        status.lines = (!chunk.lines.is_empty()).then(|| chunk.lines.clone());
        status.cursor = chunk.cursor.clone().or_else(|| log.spec.after.clone());
        status.more = chunk.more;
        status.running = chunk.running;
        status.reason = chunk.error.as_ref().map(|_| reasons::NOT_AVAILABLE.into());
        status.message = chunk.error.clone();
        return done(status);
    }
    let want = LogRequest {
        replica: log.spec.replica,
        container: log.spec.container.clone(),
        after: log.spec.after.clone(),
        poll,
        at: now.0.to_string(),
    };
    let key = request_annotation(&uid);
    let current: Option<LogRequest> = placement
        .annotations()
        .get(&key)
        .and_then(|v| serde_json::from_str(v).ok());
    let same = |c: &LogRequest| {
        LogRequest {
            at: String::new(),
            ..c.clone()
        } == LogRequest {
            at: String::new(),
            ..want.clone()
        }
    };
    if current.as_ref().is_none_or(|c| !same(c)) {
        let mut annotations = serde_json::Map::new();
        for (k, v) in placement.annotations() {
            let stale = k.starts_with(REQUEST_ANNOTATION_PREFIX)
                && *k != key
                && serde_json::from_str::<LogRequest>(v)
                    .ok()
                    .and_then(|r| r.at.parse().ok())
                    .is_none_or(|at| seconds_between(&Time(at), now) > REQUEST_TTL.as_secs_f64());
            if stale {
                annotations.insert(k.clone(), serde_json::Value::Null);
            }
        }
        let value = serde_json::to_string(&want).unwrap_or_default();
        annotations.insert(key, serde_json::Value::String(value));
        status.requested_poll = Some(poll);
        status.requested_time = Some(now.clone());
        return Decision {
            request: Some((
                p_ns,
                p_name,
                serde_json::json!({"metadata": {"annotations": annotations}}),
            )),
            status: Some(status),
        };
    }
    // Passed on already: a member that does not answer in time gets an answer from the hub.
    match (prev.requested_poll, prev.requested_time.as_ref()) {
        (Some(p), Some(at)) if p == poll => {
            if seconds_between(at, now) > MEMBER_TIMEOUT.as_secs_f64() {
                done(answer(
                    reasons::MEMBER_NOT_RESPONDING,
                    format!(
                        "member {cluster:?} did not answer within {}s: its agent may be down or cut off from the hub; try again later",
                        MEMBER_TIMEOUT.as_secs()
                    ),
                ))
            } else {
                Decision::default()
            }
        }
        // The hub restarted between its two writes: the timeout starts now.
        _ => {
            status.requested_poll = Some(poll);
            status.requested_time = Some(now.clone());
            done(status)
        }
    }
}

/// Deadline of each apiserver call of the relay.
const API_TIMEOUT: Duration = Duration::from_secs(10);

async fn relay(ctx: &Context, log: &JobLog) -> Result<()> {
    let ns = log.namespace().unwrap_or_default();
    let job = match ctx
        .stores
        .jobs
        .get(&ObjectRef::new(&log.spec.job).within(&ns))
    {
        Some(j) => Some(j),
        // Not cached: the job is at rest (ADR 0041: the hub keeps only a record of it), or gone.
        // Asked of the apiserver only while the request waits for an answer.
        None if wants_answer(log) => read(ctx, "ComputeJob", &ns, &log.spec.job)
            .await?
            .map(Arc::new),
        None => None,
    };
    let placement = match job.as_deref().and_then(attempt_placement) {
        Some((p_ns, p_name)) => match ctx.stores.placement(&p_ns, &p_name) {
            Some(p) => Some(p),
            // Not cached: the job is at rest (`hub::keep_placement`), or the Placement is gone.
            // Asked of the apiserver only while the request waits for an answer.
            None if wants_answer(log) => {
                read(ctx, "Placement", &p_ns, &p_name).await?.map(Arc::new)
            }
            None => None,
        },
        None => None,
    };
    let decision = decide(log, job.as_deref(), placement.as_deref(), &now());
    if let Some((p_ns, p_name, patch)) = &decision.request {
        let what = format!("passing a log request on to Placement {p_ns}/{p_name}");
        let api: Api<Placement> = Api::namespaced(ctx.client.clone(), p_ns);
        within(what.clone(), async {
            api.patch(p_name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map_err(Error::kube(what))
        })
        .await?;
    }
    if let Some(status) = &decision.status {
        // Guarded by the resourceVersion read: a JobLog changed meanwhile is decided again.
        within(
            format!("writing the status of JobLog {ns}/{}", log.name_any()),
            crate::hub::status::write_namespaced(&ctx.client, log, status),
        )
        .await?;
    }
    Ok(())
}

/// Whether `log` waits for an answer to its latest poll ([`decide`] does nothing otherwise).
fn wants_answer(log: &JobLog) -> bool {
    log.status.as_ref().and_then(|s| s.observed_poll) != Some(log.spec.poll)
}

/// The `kind` object `namespace/name` as the apiserver has it; `None` if it does not exist.
async fn read<K>(ctx: &Context, kind: &str, namespace: &str, name: &str) -> Result<Option<K>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let what = format!("reading {kind} {namespace}/{name}");
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    within(what.clone(), async {
        api.get_opt(name).await.map_err(Error::kube(what))
    })
    .await
}

/// `call`, given up after [`API_TIMEOUT`] with an error naming `what`.
async fn within<T>(what: String, call: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(API_TIMEOUT, call)
        .await
        .map_err(|_| Error::Timeout {
            what,
            after: API_TIMEOUT,
        })?
}

/// Relays log requests and answers until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    let wake = Arc::new(Notify::new());
    let (store, writer) = reflector::store::<JobLog>();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<JobLog>::all(ctx.client.clone()), Default::default())
            .default_backoff()
            .modify(|l: &mut JobLog| l.managed_fields_mut().clear()),
    );
    let woken = wake.clone();
    tokio::spawn(stream.for_each(move |event| {
        match event {
            Ok(_) => woken.notify_one(),
            Err(e) => tracing::warn!(error = %e, "JobLog watch failed; retrying"),
        }
        futures::future::ready(())
    }));
    loop {
        for log in store.state() {
            if let Err(e) = relay(&ctx, &log).await {
                tracing::warn!(joblog = %log.name_any(), namespace = ?log.namespace(), error = %e, "relaying a log request failed");
                ctx.metrics.failed("joblog", e.kind());
            }
        }
        let _ = tokio::time::timeout(TICK, wake.notified()).await;
    }
}

#[cfg(test)]
#[path = "log_relay_tests.rs"]
mod tests;
