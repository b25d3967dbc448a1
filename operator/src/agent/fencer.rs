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
//! While the agent is not fenced the same task keeps the member's lease Job live
//! ([`member_lease`], ADR 0021): every local Job is owned by it, and an agent that dies stops
//! renewing it, so the member's own controllers delete it and every Job it owns before the hub can
//! run their attempts elsewhere.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gpufed_crds::naming::LABEL_PLACEMENT;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

use super::api::{API_TIMEOUT, timed, timed_create, timed_opt};
use super::context::Context;
use super::fence::{FenceState, Transition, fence_timeout, job_lease, lease_renewal};
use super::job_builder::max_duration_of;
use super::member_lease::{self, LEASE_JOB};
use super::plan::{DeleteReason, FENCED, fence_victims};

/// How often the fence state is checked.
pub fn check_every(heartbeat_interval: Duration) -> Duration {
    heartbeat_interval.clamp(Duration::from_millis(100), Duration::from_millis(500))
}

/// Deletes every unfinished local gpufed Job; returns how many it deleted.
async fn stop_all(ctx: &Context, since: Duration, timeout: Duration) -> usize {
    let api: Api<Job> = Api::namespaced(ctx.local.clone(), &ctx.args.jobs_namespace);
    let mut stopped = 0;
    let now = Time(ctx.shared.member_now());
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

/// Keeps the member's lease Job ([`member_lease`], ADR 0021) live while the agent is not fenced:
/// creates it when there is none, renews its deadline ([`lease_renewal`]), publishes it as the
/// owner of new local Jobs, and puts running Jobs of an older agent under it. `cached` is the lease
/// Job as last read or written, so that a live lease costs no request between renewals. Errors
/// are logged and retried at the next check.
async fn keep_lease(ctx: &Context, lease: Duration, cached: &mut Option<Job>) {
    let api: Api<Job> = Api::namespaced(ctx.local.clone(), &ctx.args.jobs_namespace);
    let now = ctx.shared.member_now();
    let due = match cached.as_ref().map(|j| member_lease::state(Some(j), now)) {
        Some(member_lease::LeaseState::Live {
            elapsed, deadline, ..
        }) => lease_renewal(elapsed, deadline, lease).map(|next| (elapsed, next)),
        // Not started, lapsed or never read: read it again.
        _ => {
            match timed(
                "reading the member's lease Job".to_string(),
                API_TIMEOUT,
                api.get_opt(LEASE_JOB),
            )
            .await
            {
                Ok(found) => *cached = found,
                Err(e) => {
                    tracing::warn!(error = %e, kind = e.kind(), "could not read the member's lease Job");
                    return;
                }
            }
            None
        }
    };
    if let Some((elapsed, next)) = due {
        let patch = serde_json::json!({"spec": {"activeDeadlineSeconds": next}});
        match timed_opt(
            "renewing the member's lease Job".to_string(),
            API_TIMEOUT,
            api.patch(LEASE_JOB, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await
        {
            Ok(renewed) => {
                tracing::debug!(elapsed, deadline = next, "renewed the member's lease");
                ctx.metrics.agent_lease_renewals.inc();
                *cached = renewed;
            }
            Err(e) => {
                tracing::warn!(error = %e, kind = e.kind(), "could not renew the member's lease");
                return;
            }
        }
    }
    let state = member_lease::state(cached.as_ref(), ctx.shared.member_now());
    let owner = match state {
        member_lease::LeaseState::Absent => {
            let job = member_lease::lease_job(&ctx.args.jobs_namespace, lease.as_secs());
            match timed_create(
                "creating the member's lease Job".to_string(),
                API_TIMEOUT,
                api.create(&PostParams::default(), &job),
            )
            .await
            {
                Ok(true) => tracing::info!(
                    job = LEASE_JOB,
                    lease_seconds = lease.as_secs(),
                    "created the member's lease Job: it owns every local Job from now on"
                ),
                Ok(false) => tracing::debug!("the member's lease Job already exists"),
                Err(e) => {
                    tracing::warn!(error = %e, kind = e.kind(), "could not create the member's lease Job")
                }
            }
            // Read back (with its UID) at the next check.
            *cached = None;
            None
        }
        member_lease::LeaseState::Lapsed { why } => {
            if ctx.shared.lease_owner().is_some() {
                ctx.metrics.agent_lease_lapsed.inc();
            }
            // Its Jobs are being garbage-collected; once it is gone a new lease is created. The
            // agent deletes it itself rather than wait for the TTL controller, in the foreground
            // as that controller does: the garbage collector then deletes each local Job in the
            // foreground too, so a Job disappears only once its pods have stopped, and the sync
            // reports its attempt lost (LocalJobMissing, which lets the hub run it elsewhere) no
            // earlier than that. With background deletion the Jobs vanished first and the hub could
            // start an attempt elsewhere while the old pods were still in their grace period.
            let deleting = cached
                .as_ref()
                .is_some_and(|j| j.metadata.deletion_timestamp.is_some());
            if !deleting {
                tracing::warn!(
                    job = LEASE_JOB,
                    %why,
                    "the member's lease ran out: the member's control plane deletes every local Job it owned; no Job starts until a new lease exists"
                );
                if let Err(e) = timed_opt(
                    "deleting the lapsed lease Job".to_string(),
                    API_TIMEOUT,
                    api.delete(LEASE_JOB, &DeleteParams::foreground()),
                )
                .await
                {
                    tracing::warn!(error = %e, kind = e.kind(), "could not delete the lapsed lease Job");
                }
            }
            *cached = None;
            None
        }
        member_lease::LeaseState::Starting { owner }
        | member_lease::LeaseState::Live { owner, .. } => Some(owner),
    };
    if ctx.shared.set_lease_owner(owner.clone()) {
        // Placements waiting for a lease can start now (or must wait for a new one).
        ctx.shared.wake.notify_one();
    }
    if let Some(owner) = owner {
        adopt(ctx, &api, &owner).await;
    }
}

/// Puts running local Jobs of an older agent (each with its own renewed deadline) under the
/// member's lease, once each.
async fn adopt(ctx: &Context, api: &Api<Job>, owner: &OwnerReference) {
    for job in fence_victims(&ctx.stores.jobs.state()) {
        let Some(max) = max_duration_of(&*job) else {
            continue;
        };
        let Some(patch) = member_lease::adoption(&*job, owner, max) else {
            continue;
        };
        let name = job.name_any();
        match timed_opt(
            format!("putting local Job {name} under the member's lease"),
            API_TIMEOUT,
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await
        {
            Ok(_) => {
                tracing::info!(job = %name, "local Job of an older agent now owned by the member's lease")
            }
            Err(e) => {
                tracing::warn!(job = %name, error = %e, kind = e.kind(), "could not put a local Job under the member's lease")
            }
        }
    }
}

/// Watches the fence state until the process ends.
pub async fn run(ctx: Arc<Context>) {
    let mut state = FenceState::default();
    let mut lease = None;
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
            if ctx.shared.set_lease_owner(None) {
                tracing::info!(
                    "fenced: no local Job starts, and the member's lease is left to run out"
                );
            }
        } else {
            keep_lease(&ctx, job_lease(timeout), &mut lease).await;
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
