//! The fence task: checks several times a second whether the last successful heartbeat is older
//! than the fence timeout ([`fence`](super::fence)), and while it is, deletes every local gpufed Job
//! that has not finished (with its pods; see [`fence_victims`]) and keeps the placement sync from
//! starting anything.
//!
//! It runs apart from the sync, which may be waiting on a hub that does not answer, and it only
//! talks to the member's own apiserver. Deletions are repeated on every check while fenced, so a Job
//! created in a race with the fence going up is deleted too. Each stopped Job's Placement is
//! remembered, so that once the hub is back the sync reports it `Failed` with reason `Fenced`
//! instead of running it again.
//!
//! While the agent is not fenced the same task renews the lease of every running local Job (its
//! `activeDeadlineSeconds`, [`renewed_deadline`]): an agent that dies stops renewing, and the
//! member's Job controller stops the pods before the hub can run the attempt elsewhere.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gpufed_crds::naming::LABEL_PLACEMENT;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};

use super::api::{API_TIMEOUT, timed_opt};
use super::context::Context;
use super::fence::{FenceState, Transition, fence_timeout, job_lease, renewed_deadline};
use super::job_builder::max_duration_of;
use super::plan::{DeleteReason, FENCED, fence_victims};

/// How often the fence state is checked.
pub fn check_every(heartbeat_interval: Duration) -> Duration {
    heartbeat_interval.clamp(Duration::from_millis(100), Duration::from_millis(500))
}

/// Deletes every unfinished local gpufed Job; returns how many it deleted.
async fn stop_all(ctx: &Context, since: Duration, timeout: Duration) -> usize {
    let api: Api<Job> = Api::namespaced(ctx.local.clone(), &ctx.args.jobs_namespace);
    let mut stopped = 0;
    let now = Time(Timestamp::now());
    for job in fence_victims(&ctx.stores.jobs.state()) {
        let name = job.name_any();
        let placement = job.labels().get(LABEL_PLACEMENT).cloned();
        let deleted = timed_opt(
            format!("deleting local Job {name}"),
            API_TIMEOUT,
            api.delete(&name, &DeleteParams::background()),
        )
        .await;
        match deleted {
            Ok(found) => {
                if let Some(p) = &placement {
                    ctx.shared.record_fenced(p.clone(), now.clone());
                }
                if found.is_some() {
                    stopped += 1;
                    ctx.metrics
                        .agent_jobs_deleted
                        .with_label_values(&[DeleteReason::Fenced.label()])
                        .inc();
                    tracing::warn!(job = %name, placement = ?placement, silent_for = ?since, fence_timeout = ?timeout, "fenced: deleted local Job");
                    Context::event(
                        &ctx.local_events,
                        job.as_ref(),
                        true,
                        FENCED,
                        format!(
                            "no heartbeat to the hub for {}s (fence timeout {}s): the hub may run this attempt elsewhere, so the member stopped it",
                            since.as_secs(),
                            timeout.as_secs()
                        ),
                    );
                }
            }
            Err(e) => {
                tracing::error!(job = %name, error = %e, kind = e.kind(), "fenced: could not delete local Job")
            }
        }
    }
    stopped
}

/// Lease renewals in flight at once: a member with thousands of running Jobs needs one PATCH per
/// Job every half lease, which one request after another cannot keep up with.
pub const RENEWALS_IN_FLIGHT: usize = 32;

/// Moves the deadline of every running local Job forward by up to `lease` (see
/// [`renewed_deadline`]), [`RENEWALS_IN_FLIGHT`] at a time; returns how many it renewed. A Job
/// that has not started yet (no `startTime`) is not counting down and waits.
async fn renew_leases(ctx: &Context, lease: Duration) -> usize {
    use futures::StreamExt;
    let api: Api<Job> = Api::namespaced(ctx.local.clone(), &ctx.args.jobs_namespace);
    let now = Timestamp::now();
    let due: Vec<(String, u64, i64)> = fence_victims(&ctx.stores.jobs.state())
        .into_iter()
        .filter_map(|job| {
            let started = job.status.as_ref()?.start_time.as_ref()?;
            let max = max_duration_of(&job)?;
            let elapsed = u64::try_from(now.duration_since(started.0).as_secs()).unwrap_or(0);
            let current = job.spec.as_ref().and_then(|s| s.active_deadline_seconds);
            let next = renewed_deadline(elapsed, current, max, lease)?;
            Some((job.name_any(), elapsed, next))
        })
        .collect();
    futures::stream::iter(due)
        .map(|(name, elapsed, next)| {
            let api = api.clone();
            async move {
                let patch = serde_json::json!({"spec": {"activeDeadlineSeconds": next}});
                match timed_opt(
                    format!("renewing the lease of local Job {name}"),
                    API_TIMEOUT,
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
                )
                .await
                {
                    Ok(_) => {
                        tracing::debug!(job = %name, elapsed, deadline = next, "renewed the local Job's lease");
                        true
                    }
                    Err(e) => {
                        tracing::warn!(job = %name, error = %e, kind = e.kind(), "could not renew the local Job's lease");
                        false
                    }
                }
            }
        })
        .buffer_unordered(RENEWALS_IN_FLIGHT)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await
}

/// Watches the fence state until the process ends.
pub async fn run(ctx: Arc<Context>) {
    let mut state = FenceState::default();
    let every = check_every(ctx.args.heartbeat_interval);
    loop {
        let last = ctx.shared.last_heartbeat_or_start();
        let timeout = fence_timeout(ctx.args.fence_timeout, ctx.shared.pool_timeout());
        ctx.metrics.agent_fence_timeout.set(timeout.as_secs_f64());
        let now = Instant::now();
        let silent = now.saturating_duration_since(last);
        match state.update(last, now, timeout) {
            Transition::Fenced => {
                ctx.shared.set_fenced(true);
                ctx.health.set_ready(false);
                ctx.metrics.agent_fenced.inc();
                tracing::error!(
                    silent_for = ?silent,
                    fence_timeout = ?timeout,
                    "fenced off: the hub has not acknowledged a heartbeat for longer than the fence timeout; stopping every local gpufed Job and starting nothing until it does"
                );
                ctx.shared.wake.notify_one();
                ctx.shared.fence_changed.notify_one();
            }
            Transition::Recovered => {
                ctx.shared.set_fenced(false);
                tracing::info!(
                    stopped = ctx.shared.fenced_placements().len(),
                    "heartbeat acknowledged again: no longer fenced; stopped placements are reported as Fenced"
                );
                ctx.shared.wake.notify_one();
                ctx.shared.fence_changed.notify_one();
            }
            Transition::Unchanged => {}
        }
        if state.is_fenced() {
            let stopped = stop_all(&ctx, silent, timeout).await;
            if stopped > 0 {
                tracing::warn!(stopped, "fenced: local Jobs deleted");
            }
        } else {
            renew_leases(&ctx, job_lease(timeout)).await;
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_is_checked_at_least_twice_a_second() {
        assert_eq!(
            check_every(Duration::from_secs(5)),
            Duration::from_millis(500)
        );
        assert_eq!(
            check_every(Duration::from_millis(200)),
            Duration::from_millis(200)
        );
    }
}
