//! What the agent reports on a Placement's status, as pure functions of the local Job, its pods and
//! the status reported so far.
//!
//! * Phase: `Accepted` once the local Job exists, `Running` once every replica has started,
//!   `Succeeded`/`Failed` from the Job's `Complete`/`Failed` condition (reason from the Job, e.g.
//!   `DeadlineExceeded`, `BackoffLimitExceeded`, with the first pod failure in the message).
//! * GPU-seconds ([`usage`](super::usage)) never go down: a pod that vanished (garbage-collected,
//!   deleted on fencing) takes its seconds with it, but what was reported stays reported. Once the
//!   placement has finished, its status is frozen.
//! * Writes happen only on change; a running placement's GPU-seconds alone are refreshed at most
//!   once per interval.

use std::time::Duration;

use super::cached::Job;
use super::cached::Pod;
use gpufed_crds::placement::reasons::LEASE_EXPIRED;
use gpufed_crds::placement::{MAX_EXITS, MAX_FIRST_TERMINATION_MESSAGE, MAX_TERMINATION_MESSAGE};
use gpufed_crds::{ContainerExit, PlacementPhase, PlacementSpec, PlacementStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::usage::{first_start, gpu_seconds};

/// Longest message written into a status.
const MAX_MESSAGE: usize = 1000;

/// `s` cut to at most 1000 bytes on a character boundary (status messages and Event notes).
pub fn cut(s: String) -> String {
    cut_to(s, MAX_MESSAGE)
}

fn true_condition<'a>(
    job: &'a Job,
    type_: &str,
) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

fn running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// Why a failed pod failed: `pod P: container C exited with code N (Reason): message`.
pub fn pod_failure(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Failed") {
        return None;
    }
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let container = status.container_statuses.iter().flatten().find_map(|cs| {
        let t = cs.state.as_ref()?.terminated.as_ref()?;
        (t.exit_code != 0).then(|| {
            let mut s = format!("container {} exited with code {}", cs.name, t.exit_code);
            if let Some(r) = &t.reason {
                s.push_str(&format!(" ({r})"));
            }
            if let Some(m) = t.message.as_ref().filter(|m| !m.is_empty()) {
                s.push_str(&format!(": {}", m.trim()));
            }
            s
        })
    });
    let detail = container.or_else(|| {
        let reason = status.reason.clone()?;
        Some(match &status.message {
            Some(m) => format!("{reason}: {m}"),
            None => reason,
        })
    })?;
    Some(format!("pod {name}: {detail}"))
}

/// Annotation (and label) with an Indexed Job pod's completion index: its replica number.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// `s` cut to at most `max` bytes on a character boundary.
fn cut_to(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// How the pods' containers ended, from their terminated states: non-zero exits first, then by
/// replica and container, at most [`MAX_EXITS`]; termination messages trimmed and cut to
/// [`MAX_FIRST_TERMINATION_MESSAGE`] bytes in the first exit (a challenge's answer,
/// docs/adr/0022-challenges.md) and [`MAX_TERMINATION_MESSAGE`] in the others.
pub fn exits(pods: &[&Pod]) -> Vec<ContainerExit> {
    let mut out: Vec<ContainerExit> = pods
        .iter()
        .flat_map(|pod| {
            let replica = super::usage::replica_index(pod);
            pod.status
                .as_ref()
                .into_iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
                .filter_map(move |cs| {
                    let t = cs.state.as_ref()?.terminated.as_ref()?;
                    Some(ContainerExit {
                        replica,
                        container: cs.name.clone(),
                        exit_code: t.exit_code,
                        reason: t.reason.clone(),
                        message: t
                            .message
                            .as_ref()
                            .map(|m| cut_to(m.trim().to_string(), MAX_FIRST_TERMINATION_MESSAGE))
                            .filter(|m| !m.is_empty()),
                        started_at: t.started_at.clone(),
                        finished_at: t.finished_at.clone(),
                    })
                })
        })
        .collect();
    // The data helpers' containers (ADR 0029) after the workload's, so the first exit listed is
    // the workload's own.
    let helper = |e: &ContainerExit| super::job_data::is_helper(&e.container);
    out.sort_by(|a, b| {
        (a.exit_code == 0, helper(a), a.replica, &a.container).cmp(&(
            b.exit_code == 0,
            helper(b),
            b.replica,
            &b.container,
        ))
    });
    out.truncate(MAX_EXITS);
    for exit in out.iter_mut().skip(1) {
        if let Some(m) = exit.message.take() {
            exit.message = Some(cut_to(m, MAX_TERMINATION_MESSAGE));
        }
    }
    out
}

/// Why a pod that has not started yet waits, if it is stuck rather than just starting:
/// `(reason, "pod P: reason: message")`, e.g. `Unschedulable` or `ImagePullBackOff`.
pub fn pod_waiting(pod: &Pod) -> Option<(String, String)> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Pending") {
        return None;
    }
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let unschedulable = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False" && c.reason.is_some());
    if let Some(c) = unschedulable {
        let reason = c.reason.clone().unwrap_or_default();
        let msg = c.message.clone().unwrap_or_default();
        return Some((reason.clone(), format!("pod {name}: {reason}: {msg}")));
    }
    status.container_statuses.iter().flatten().find_map(|cs| {
        let w = cs.state.as_ref()?.waiting.as_ref()?;
        let reason = w.reason.clone().filter(|r| r != "ContainerCreating")?;
        let msg = w.message.clone().unwrap_or_default();
        Some((reason.clone(), format!("pod {name}: {reason}: {msg}")))
    })
}

/// The status of a placement whose local Job is `job` with `pods`, at `now`. `prev` is what was
/// reported before: GPU-seconds and the start time never move backwards.
pub fn observe(
    spec: &PlacementSpec,
    job: &Job,
    pods: &[&Pod],
    prev: Option<&PlacementStatus>,
    now: &Time,
) -> PlacementStatus {
    let job_status = job.status.clone().unwrap_or_default();
    let succeeded = u32::try_from(job_status.succeeded.unwrap_or(0)).unwrap_or(0);
    let active = pods.iter().filter(|p| running(p)).count() as u32;
    let mut st = PlacementStatus {
        phase: Some(PlacementPhase::Accepted),
        local_job: job.metadata.name.clone(),
        active_replicas: active,
        succeeded_replicas: succeeded,
        ..Default::default()
    };
    let failure = || pods.iter().find_map(|p| pod_failure(p));
    if let Some(c) = true_condition(job, "Complete") {
        st.phase = Some(PlacementPhase::Succeeded);
        st.finish_time = job_status
            .completion_time
            .clone()
            .or_else(|| c.last_transition_time.clone())
            .or_else(|| Some(now.clone()));
    } else if let Some(c) = true_condition(job, "Failed") {
        st.phase = Some(PlacementPhase::Failed);
        st.reason = Some(c.reason.clone().unwrap_or_else(|| "Failed".into()));
        // The deadline that passed was a lease no one renewed, not the attempt's maxDuration.
        let deadline = job.spec.as_ref().and_then(|s| s.active_deadline_seconds);
        let max = i64::try_from(spec.max_duration.as_secs_ceil()).unwrap_or(i64::MAX);
        if st.reason.as_deref() == Some("DeadlineExceeded") && deadline.is_some_and(|d| d < max) {
            st.reason = Some(LEASE_EXPIRED.into());
            st.message = Some(cut(format!(
                "the member's agent stopped renewing the Job's lease (deadline {}s of the attempt's {max}s): its pods were stopped so that the hub can run the attempt elsewhere",
                deadline.unwrap_or(0)
            )));
            st.finish_time = c.last_transition_time.clone().or_else(|| Some(now.clone()));
            return finish(st, spec, pods, prev, now);
        }
        let mut message = c.message.clone().unwrap_or_default();
        if let Some(f) = failure() {
            if !message.is_empty() {
                message.push_str("; ");
            }
            message.push_str(&f);
        }
        st.message = (!message.is_empty()).then(|| cut(message));
        st.finish_time = c.last_transition_time.clone().or_else(|| Some(now.clone()));
    } else if active + succeeded >= spec.replicas {
        st.phase = Some(PlacementPhase::Running);
    } else if let Some((reason, message)) = pods.iter().find_map(|p| pod_waiting(p)) {
        st.reason = Some(reason);
        st.message = Some(cut(message));
    }
    finish(st, spec, pods, prev, now)
}

/// `st` with what the pods say whatever the phase: exits, GPU-seconds (never less than reported
/// before) and the first start.
fn finish(
    mut st: PlacementStatus,
    spec: &PlacementSpec,
    pods: &[&Pod],
    prev: Option<&PlacementStatus>,
    now: &Time,
) -> PlacementStatus {
    st.exits = exits(pods);
    let end = st.finish_time.clone().unwrap_or_else(|| now.clone());
    let used = gpu_seconds(pods, spec.replicas, spec.gpus_per_replica, &end);
    st.gpu_seconds = used.max(prev.map(|p| p.gpu_seconds).unwrap_or(0));
    st.start_time = match (prev.and_then(|p| p.start_time.clone()), first_start(pods)) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    };
    // A serving placement says where its ready replicas answer; an ended one, nowhere.
    st.endpoint = spec.serving.as_ref().map(|serving| {
        Box::new(if st.phase.is_some_and(PlacementPhase::is_finished) {
            gpufed_crds::Endpoint::default()
        } else {
            super::serving::endpoint(serving, spec.replicas, pods)
        })
    });
    st
}

/// A final status that keeps what was reported before (GPU-seconds, start, local Job).
pub fn ended(
    prev: Option<&PlacementStatus>,
    phase: PlacementPhase,
    reason: &str,
    message: String,
    now: &Time,
) -> PlacementStatus {
    let prev = prev.cloned().unwrap_or_default();
    PlacementStatus {
        phase: Some(phase),
        reason: Some(reason.to_string()),
        message: Some(cut(message)),
        finish_time: Some(now.clone()),
        active_replicas: 0,
        last_update_time: None,
        // Nothing answers any more.
        endpoint: prev.endpoint.as_ref().map(|_| Box::default()),
        ..prev
    }
}

/// How long a running placement's GPU-seconds go between checkpoints while `running`
/// placements run on the member: `base`, or longer where that would be more than `max_rate`
/// checkpoints per second (then `running ÷ max_rate` seconds); a `max_rate` of 0 is no limit.
/// Each checkpoint is two writes on the hub (the Placement's status, then the job's), so a member
/// running 10,000 jobs at a 60 s interval cost the hub 333 writes per second (a 10,000-pod run).
pub fn checkpoint_interval(base: Duration, running: usize, max_rate: f64) -> Duration {
    if !max_rate.is_finite() || max_rate <= 0.0 {
        return base;
    }
    let paced = Duration::try_from_secs_f64(running as f64 / max_rate).unwrap_or(Duration::MAX);
    base.max(paced)
}

/// Whether `next` must be written over `prev`. Anything but the GPU-seconds of a running
/// placement is written at once; those are refreshed once `prev` is `refresh` old, and always
/// written with a final phase. `lastUpdateTime` itself never counts as a change.
pub fn needs_write(
    prev: Option<&PlacementStatus>,
    next: &PlacementStatus,
    now: &Time,
    refresh: Duration,
) -> bool {
    let Some(prev) = prev else {
        return true;
    };
    // Log answers are written by their own task under their own field manager (agent::logs).
    // Telemetry (agent::telemetry) is refreshed with the GPU-seconds.
    let strip = |s: &PlacementStatus| PlacementStatus {
        last_update_time: None,
        gpu_seconds: 0,
        logs: vec![],
        telemetry: None,
        ..s.clone()
    };
    if strip(prev) != strip(next) {
        return true;
    }
    if prev.gpu_seconds == next.gpu_seconds && prev.telemetry == next.telemetry {
        return false;
    }
    let finished = next.phase.is_some_and(PlacementPhase::is_finished);
    let age = prev
        .last_update_time
        .as_ref()
        .map(|t| now.0.duration_since(t.0).as_secs_f64());
    finished || age.is_none_or(|a| a >= refresh.as_secs_f64())
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
