//! The ComputeJob controller: wires [`lifecycle`](super::lifecycle) to the API. It watches jobs,
//! their Placements (mapped back by the job UID they carry, since a Placement lives in another
//! namespace and cannot be owned, and names its job by UID only: ADR 0037), member clusters (a member going NotReady fails over its jobs) and pools.
//!
//! Each reconcile runs inside kube-runtime's finalizer helper: *apply* computes the next status and
//! performs its actions; *cleanup* (the job is being deleted) removes every Placement of the job
//! before the finalizer goes, so a member stops the work before the job disappears.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use gpufed_crds::conditions::{self, job as jc, member as mc};
use gpufed_crds::naming::LABEL_JOB_UID;
use gpufed_crds::{ComputeJob, GpuPool, MemberCluster, Placement, SettlementState};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;

use crate::error::{Error, Result};
use crate::hub::JobSubscriptions;
use crate::hub::context::{Context, now};
use crate::hub::lifecycle::{self, Action, World};
use crate::hub::settlement;
use crate::hub::stale;
use crate::hub::status::{Written, write_namespaced};

/// Finalizer that keeps a job until its Placements are gone.
pub const FINALIZER: &str = "gpufed.io/cleanup";
const CONTROLLER: &str = "computejob";

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    subs: JobSubscriptions,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let jobs_by_member = ctx.stores.jobs.clone();
    let members = ctx.stores.members.clone();
    let jobs_by_pool = ctx.stores.jobs.clone();
    let pools = ctx.stores.pools.clone();
    let member_seen = Changes::default();
    let pool_seen = Changes::default();
    let (uids, jobs_by_uid) = (ctx.stores.job_uids.clone(), ctx.stores.jobs.clone());
    Controller::for_shared_stream(subs.jobs, ctx.stores.jobs.clone())
        .watches_shared_stream(subs.placements, move |p: Arc<Placement>| {
            uids.get(&p.spec.job.uid, &jobs_by_uid)
        })
        .watches_shared_stream(subs.members, move |m: Arc<MemberCluster>| {
            // Only readiness (and removal) matters to the jobs on a member: its inventory and
            // heartbeat updates do not wake them.
            let name = m.name_any();
            let gone = members.get(&ObjectRef::new(&name)).is_none();
            let ready = m
                .status
                .as_ref()
                .is_some_and(|s| conditions::is_true(&s.conditions, mc::READY));
            let changed = member_seen.changed(&name, (ready, gone));
            let jobs = if changed {
                jobs_by_member.state_filter(|j| {
                    j.status
                        .as_ref()
                        .and_then(|s| s.placement.as_ref())
                        .is_some_and(|p| p.cluster == name)
                })
            } else {
                vec![]
            };
            jobs.into_iter()
                .map(|j| ObjectRef::from_obj(j.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches_shared_stream(subs.pools, move |p: Arc<GpuPool>| {
            // Only a spec change (or removal) matters to the pool's jobs, not its status roll-up.
            let name = p.name_any();
            let gone = pools.get(&ObjectRef::new(&name)).is_none();
            let changed = pool_seen.changed(&name, (p.metadata.generation, gone));
            let jobs = if changed {
                jobs_by_pool.state_filter(|j| j.spec.pool == name)
            } else {
                vec![]
            };
            jobs.into_iter()
                .map(|j| ObjectRef::from_obj(j.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The last value of what a watch mapper cares about, per object: so an update that changes
/// nothing relevant wakes nobody.
struct Changes<T>(std::sync::Mutex<std::collections::HashMap<String, T>>);

impl<T> Default for Changes<T> {
    fn default() -> Self {
        Changes(std::sync::Mutex::new(std::collections::HashMap::new()))
    }
}

impl<T: PartialEq> Changes<T> {
    /// Records `value` for `name`; whether it differs from the last one (true the first time).
    fn changed(&self, name: &str, value: T) -> bool {
        let Ok(mut seen) = self.0.lock() else {
            return true;
        };
        if seen.get(name) == Some(&value) {
            return false;
        }
        seen.insert(name.to_string(), value);
        true
    }
}

fn key(job: &ComputeJob) -> String {
    format!(
        "computejob/{}/{}",
        job.namespace().unwrap_or_default(),
        job.name_any()
    )
}

fn error_policy(job: Arc<ComputeJob>, err: &Error, ctx: Arc<Context>) -> Requeue {
    let delay = ctx.backoffs.next(&key(&job));
    tracing::warn!(
        job = %job.name_any(),
        namespace = %job.namespace().unwrap_or_default(),
        error = %err,
        kind = err.kind(),
        retry_in = ?delay,
        "reconcile failed"
    );
    ctx.metrics.failed(CONTROLLER, err.kind());
    Requeue::requeue(delay)
}

#[tracing::instrument(skip_all, fields(job = %job.name_any(), namespace = %job.namespace().unwrap_or_default()))]
async fn reconcile(job: Arc<ComputeJob>, ctx: Arc<Context>) -> Result<Requeue> {
    let t0 = Instant::now();
    let ns = job
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    let api: Api<ComputeJob> = Api::namespaced(ctx.client.clone(), &ns);
    let job_key = job.clone();
    let result = finalizer(&api, FINALIZER, job, |event| async {
        match event {
            Finalizer::Apply(job) => apply(job, &ctx).await,
            Finalizer::Cleanup(job) => cleanup(job, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.reconciled(CONTROLLER, t0.elapsed());
    if result.is_ok() {
        ctx.backoffs.reset(&key(&job_key));
    }
    result
}

/// What the hub sees around `job`, from its caches.
fn world(job: &ComputeJob, ctx: &Context) -> World {
    let pool = ctx.stores.pool(&job.spec.pool);
    let mut w = lifecycle::admission_world(job, pool.as_deref());
    let current = job.status.as_ref().and_then(|s| {
        s.attempts
            .iter()
            .find(|a| a.attempt == s.attempt && s.attempt > 0)
    });
    if let Some(rec) = current {
        w.member_ready = ctx.stores.member(&rec.cluster).map(|m| {
            m.status
                .as_ref()
                .is_some_and(|s| conditions::is_true(&s.conditions, mc::READY))
        });
        let placement = ctx.stores.placement(
            &gpufed_crds::naming::member_namespace(&rec.cluster),
            &rec.placement,
        );
        w.placement_created = placement
            .as_ref()
            .and_then(|p| p.metadata.creation_timestamp.clone());
        w.placement_records_usage = placement
            .as_ref()
            .is_some_and(|p| p.spec.usage_recording.is_some());
        w.placement = placement.map(|p| p.status.clone());
    }
    w
}

/// Puts each usage receipt of `st` (a status just written, or already the job's) on its attempt's
/// Placement (annotation `gpufed.io/usage-receipt`), where the provider's member credentials can
/// read it and `kubectl gpufed claim` submits it if the hub does not settle. Compared with the
/// cached Placement, so it is written when it differs and again after a failed write (logged); a
/// Placement no longer cached (deleted, or its job at rest) is left alone. Only called after the
/// status holding the receipts was written: a pass from a stale cached job may sign an amount the
/// job never records, and a provider must not be able to claim it.
async fn publish_receipts(pool: &GpuPool, st: &gpufed_crds::ComputeJobStatus, ctx: &Context) {
    let Some(chain) = pool.spec.chain.as_ref() else {
        return;
    };
    for a in &st.attempts {
        let Some(s) = a.settlement.as_ref() else {
            continue;
        };
        let Some(receipt) = s.receipt.as_ref() else {
            continue;
        };
        let namespace = gpufed_crds::naming::member_namespace(&a.cluster);
        let Some(cached) = ctx.stores.placement(&namespace, &a.placement) else {
            continue;
        };
        let claimable = gpufed_crds::ClaimableReceipt {
            chain_id: chain.chain_id,
            rpc_url: chain.rpc_url.clone(),
            escrow: chain.escrow.to_string(),
            job_id: s.job_id.clone(),
            receipt: receipt.clone(),
        };
        let Ok(value) = serde_json::to_string(&claimable) else {
            continue;
        };
        let shown = cached
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(gpufed_crds::naming::ANNOTATION_USAGE_RECEIPT));
        if shown == Some(&value) {
            continue;
        }
        let api: Api<Placement> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = serde_json::json!({"metadata": {"annotations": {
            gpufed_crds::naming::ANNOTATION_USAGE_RECEIPT: value
        }}});
        if let Err(e) = api
            .patch(
                &a.placement,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
        {
            tracing::warn!(placement = %a.placement, %namespace, error = %e, "could not put the usage receipt on the placement");
        }
    }
}

/// What a money step leaves to do once the job's status is written: its receipts to publish and
/// its settlements to send ([`settlement::Step::settle`]).
struct Payout {
    pool: Arc<GpuPool>,
    chain: Arc<crate::hub::chain::ChainClient>,
    step: settlement::Step,
}

impl Payout {
    /// Publishes the receipts of `st` (the status as written) and queues the settlements.
    async fn run(&self, st: &gpufed_crds::ComputeJobStatus, ctx: &Context) {
        publish_receipts(&self.pool, st, ctx).await;
        ctx.settler
            .send(&self.pool.name_any(), &self.chain, &self.step)
            .await;
    }
}

/// Raises the current serving attempt's `Placement.spec.fundedSeconds` to what its renewed lock
/// funds (`windowsFunded × maxDuration`, ADR 0030 section 7), so that the member's agent moves the
/// local Job's deadline. Compared with the cached Placement, so it is written once per renewal and
/// again after a failed write. Failures are logged: the next pass writes it again.
async fn publish_funding(job: &ComputeJob, st: &gpufed_crds::ComputeJobStatus, ctx: &Context) {
    if job.spec.serving.is_none() {
        return;
    }
    let Some(a) = st.attempts.iter().find(|a| a.attempt == st.attempt) else {
        return;
    };
    if a.phase.is_finished() {
        return;
    }
    let Some(funded) = a
        .settlement
        .as_ref()
        .filter(|s| s.windows_funded > 1)
        .and_then(|s| {
            u64::from(s.windows_funded).checked_mul(job.spec.max_duration.as_secs_ceil())
        })
    else {
        return;
    };
    let namespace = gpufed_crds::naming::member_namespace(&a.cluster);
    let Some(cached) = ctx.stores.placement(&namespace, &a.placement) else {
        return;
    };
    if cached.spec.funded_seconds.is_some_and(|f| f >= funded) {
        return;
    }
    let api: Api<Placement> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = serde_json::json!({"spec": {"fundedSeconds": funded}});
    match api
        .patch(
            &a.placement,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => {
            tracing::info!(placement = %a.placement, %namespace, funded, "raised the serving attempt's funded seconds")
        }
        Err(e) => {
            tracing::warn!(placement = %a.placement, %namespace, error = %e, "could not raise the serving attempt's funded seconds")
        }
    }
}

/// Runs the money step for pools with a chain: when to come back, and what to do once the status
/// is written ([`Payout`]). Chain errors are shown on the job (condition `Funded`, reason
/// `ChainUnavailable`) and retried; they never lose the job or a payment.
async fn money(
    job: &ComputeJob,
    ctx: &Context,
    out: &mut lifecycle::Outcome,
) -> Result<(Option<Duration>, Option<Payout>)> {
    let Some(pool) = ctx
        .stores
        .pool(&job.spec.pool)
        .filter(|p| p.spec.chain.is_some())
    else {
        return Ok((None, None));
    };
    if !conditions::is_true(&out.status.conditions, jc::ADMITTED) {
        return Ok((None, None));
    }
    let now_secs = u64::try_from(now().0.as_second()).unwrap_or(0);
    let result = match ctx.chain(&pool).await {
        Ok(chain) => settlement::advance(&chain, &pool, job, &mut out.status, now_secs)
            .await
            .map(|step| (chain, step)),
        Err(e) => Err(e),
    };
    match result {
        Ok((chain, mut step)) => {
            publish_funding(job, &out.status, ctx).await;
            let counts = ctx.metrics.settlements.clone();
            counts.with_label_values(&["locked"]).inc_by(step.locked);
            counts.with_label_values(&["expired"]).inc_by(step.expired);
            for (warning, reason, message) in std::mem::take(&mut step.events) {
                out.events.push(lifecycle::Note {
                    warning,
                    reason,
                    message,
                });
            }
            if step.lock_errors > 0 {
                counts
                    .with_label_values(&["error"])
                    .inc_by(step.lock_errors);
            }
            let current = out
                .status
                .attempts
                .iter()
                .find(|a| a.attempt == out.status.attempt)
                .and_then(|a| a.settlement.clone());
            let (funded, reason, message) = match current {
                Some(s)
                    if matches!(
                        s.state,
                        SettlementState::Locked
                            | SettlementState::Settling
                            | SettlementState::Settled
                    ) =>
                {
                    (
                        true,
                        "Locked",
                        "the escrow holds the funds of the current attempt".to_string(),
                    )
                }
                Some(s) if s.state == SettlementState::Locking => (
                    false,
                    "LockFailed",
                    s.message
                        .unwrap_or_else(|| "the lock transaction is being retried".into()),
                ),
                _ => (
                    false,
                    "NotLocked",
                    "no funds locked for a current attempt".to_string(),
                ),
            };
            conditions::set_condition(
                &mut out.status.conditions,
                conditions::condition(
                    jc::FUNDED,
                    funded,
                    reason,
                    message,
                    job.metadata.generation,
                    now(),
                ),
            );
            let soon = step.again_soon.then_some(Duration::from_secs(2));
            let again = [soon, step.recheck_in].into_iter().flatten().min();
            Ok((again, Some(Payout { pool, chain, step })))
        }
        Err(e @ (Error::Chain(_) | Error::Config(_) | Error::Kube { .. })) => {
            tracing::warn!(error = %e, "chain step failed; will retry");
            ctx.metrics.settlements.with_label_values(&["error"]).inc();
            conditions::set_condition(
                &mut out.status.conditions,
                conditions::condition(
                    jc::FUNDED,
                    false,
                    "ChainUnavailable",
                    e.to_string(),
                    job.metadata.generation,
                    now(),
                ),
            );
            let again = ctx
                .backoffs
                .next(&format!("chain/{}", key(job)))
                .min(Duration::from_secs(30));
            Ok((Some(again), None))
        }
        Err(e) => Err(e),
    }
}

/// `job` as the apiserver has it now (its status subresource, which serves the whole object),
/// where the cached copy cannot be trusted: trimmed, or possibly stale.
async fn read_job(ctx: &Context, job: &ComputeJob) -> Result<ComputeJob> {
    Api::<ComputeJob>::namespaced(
        ctx.client.clone(),
        job.metadata.namespace.as_deref().unwrap_or_default(),
    )
    .get_status(&job.name_any())
    .await
    .map_err(Error::kube(format!("reading ComputeJob {}", key(job))))
}

async fn apply(job: Arc<ComputeJob>, ctx: &Context) -> Result<Requeue> {
    // A job at rest is cached trimmed (`hub::slim_job`): it has nothing left to do, so it waits
    // for a change; an edit to it is reconciled from the whole job, read from the apiserver, since
    // a status computed from the trimmed copy would drop what the copy lacks.
    let job = if crate::hub::at_rest_in_cache(&job) {
        let observed = job.status.as_ref().and_then(|s| s.observed_generation);
        if observed == job.metadata.generation {
            return Ok(Requeue::await_change());
        }
        Arc::new(read_job(ctx, &job).await?)
    } else {
        job
    };
    // A cached copy the apiserver already showed stale (a 409, or a read before a Placement)
    // would compute the same outdated change again: wait for the watch to bring the newer one.
    let job_key = key(&job);
    let cached_rv = job.resource_version().unwrap_or_default();
    if ctx.stale_jobs.known(&job_key, &cached_rv, Instant::now()) {
        tracing::debug!(
            resource_version = %cached_rv,
            "this cached copy of the job was found stale: waiting for the watch to catch up"
        );
        return Ok(Requeue::requeue(stale::RECHECK_AFTER));
    }
    let mut world_now = world(&job, ctx);
    world_now.secrets_unavailable = secrets_unavailable(&job, ctx).await?;
    let mut out = lifecycle::reconcile(&job, &world_now, &now());
    if lifecycle::admission_deferred(&job, &world_now, &out) {
        // The scheduling loop writes the admission with the job's first decision; the job
        // controller writes it only if the loop has not within the deferral.
        let age = job
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| Duration::try_from(now().0.duration_since(t.0)).unwrap_or(Duration::ZERO))
            .unwrap_or(lifecycle::ADMISSION_DEFERRAL);
        if let Some(left) = lifecycle::ADMISSION_DEFERRAL.checked_sub(age)
            && !left.is_zero()
        {
            ctx.schedule.notify_one();
            return Ok(Requeue::requeue(left));
        }
    }
    let (again, payout) = money(&job, ctx, &mut out).await?;
    if again.is_none() {
        ctx.backoffs.reset(&format!("chain/{}", key(&job)));
    }
    // A lock that just landed lets the Placement be written in the same pass.
    let funded_now = out.status.attempts.iter().any(|a| {
        a.attempt == out.status.attempt
            && a.phase == gpufed_crds::AttemptPhase::Placed
            && a.settlement
                .as_ref()
                .is_some_and(|s| s.state == SettlementState::Locked)
    }) && !out
        .actions
        .iter()
        .any(|a| matches!(a, Action::CreatePlacement(_)));
    if funded_now {
        let mut advanced = job.as_ref().clone();
        advanced.status = Some(out.status.clone());
        let again = lifecycle::reconcile(&advanced, &world(&advanced, ctx), &now());
        out.actions.extend(again.actions);
        out.status = again.status;
    }
    let uid = job.uid().unwrap_or_default();
    let mine = ctx.stores.attempt_placements(&uid, job.status.as_ref());
    let stale = lifecycle::superseded(
        job.status.as_ref(),
        mine.iter().map(|p| {
            (
                p.metadata.namespace.as_deref().unwrap_or_default(),
                p.metadata.name.as_deref().unwrap_or_default(),
                p.spec.attempt,
            )
        }),
    );
    for (namespace, name) in &stale {
        tracing::warn!(placement = %name, %namespace, "deleting a Placement of an attempt the job moved past");
        delete_placement(ctx, namespace, name).await?;
    }
    for action in &out.actions {
        match action {
            Action::CreatePlacement(p) => {
                // The job may be cached from before it moved past this attempt: ask the
                // apiserver before handing a member work (one read, on this path only, and once
                // per stale copy: `hub::stale`).
                let fresh = read_job(ctx, &job).await?;
                if fresh.metadata.deletion_timestamp.is_some()
                    || !lifecycle::wants_placement(fresh.status.as_ref(), p.spec.attempt)
                {
                    if fresh.resource_version().as_deref() == Some(cached_rv.as_str()) {
                        // Not a stale cache: the status itself does not want this Placement.
                        // Nothing is remembered, so any change to what the job is watched
                        // through recomputes it.
                        tracing::warn!(
                            placement = %p.name_any(),
                            attempt = p.spec.attempt,
                            "not creating the placement: the job's current status does not want it"
                        );
                    } else {
                        tracing::info!(
                            placement = %p.name_any(),
                            attempt = p.spec.attempt,
                            "not creating the placement: the job has moved on (its cached copy was stale)"
                        );
                        ctx.stale_jobs.record(&job_key, &cached_rv, Instant::now());
                    }
                    return Ok(Requeue::requeue(stale::RECHECK_AFTER));
                }
                ctx.stale_jobs.forget(&job_key);
                create_placement(ctx, &job.namespace().unwrap_or_default(), p).await?
            }
            Action::DeletePlacement { namespace, name } => {
                delete_placement(ctx, namespace, name).await?
            }
            // The scheduler is woken by the watch once the cache shows the job waiting.
            Action::Schedule => {}
        }
    }
    if job.status.as_ref() != Some(&out.status) {
        if write_namespaced(&ctx.client, job.as_ref(), &out.status).await? == Written::Conflict {
            // Someone (the scheduling loop) changed the job meanwhile: recompute from fresh
            // state, which the watch brings (and wakes the job with). Retrying from this copy
            // before then could only conflict again (55 conflicts/s in a 10,000-pod run).
            ctx.stale_jobs.record(&job_key, &cached_rv, Instant::now());
            return Ok(Requeue::requeue(stale::RECHECK_AFTER));
        }
        for note in &out.events {
            ctx.event(
                job.as_ref(),
                note.warning,
                note.reason,
                "Reconcile",
                note.message.clone(),
            );
        }
        if out
            .actions
            .iter()
            .any(|a| matches!(a, Action::DeletePlacement { .. }))
        {
            ctx.metrics
                .failovers
                .with_label_values(&[out.status.reason.as_deref().unwrap_or("Lost")])
                .inc();
        }
    }
    // The status holds what the money step signed: now it may be published and paid.
    if let Some(payout) = &payout {
        payout.run(&out.status, ctx).await;
    }
    // Come back when money is in flight, when a start timeout runs out, or in five minutes; a job
    // at rest only when something changes.
    let mut advanced = job.as_ref().clone();
    advanced.status = Some(out.status.clone());
    let deadline = lifecycle::start_deadline(&advanced, &world_now, &now());
    let recheck = lifecycle::usage_recheck(&job, &out.status, &world_now);
    let grace = out
        .status
        .attempts
        .iter()
        .find(|a| a.attempt == out.status.attempt && world_now.placement.is_none())
        .and_then(|a| lifecycle::placement_grace(a, &world_now, &now()))
        .map(|left| left + Duration::from_millis(100));
    // Secrets cannot be watched (the hub may only `get` them, and only where the tenant allowed
    // it): a job waiting for one looks again every few seconds.
    let secrets_poll = world_now.secrets_unavailable.as_ref().map(|_| SECRETS_POLL);
    let timers = [again, deadline, recheck, grace, secrets_poll];
    if lifecycle::at_rest(&out.status)
        && !crate::hub::result_check::needs_template(&job)
        && timers.iter().all(Option::is_none)
    {
        // Finished, its money at rest and no result check to run: only a change to the job or
        // to what it is watched through (its Placements, its pool, its members) wakes it.
        return Ok(Requeue::await_change());
    }
    let next = timers
        .into_iter()
        .chain([Some(Duration::from_secs(300))])
        .flatten()
        .min()
        .unwrap_or(Duration::from_secs(300));
    Ok(Requeue::requeue(next))
}

/// How often a job waiting for a Secret (missing, or not shared with the hub) checks again.
pub const SECRETS_POLL: Duration = Duration::from_secs(5);

/// Why the Secrets of `job` cannot be delivered, checked only while it waits for a placement
/// (a running attempt already has them sealed into its Placement).
async fn secrets_unavailable(
    job: &ComputeJob,
    ctx: &Context,
) -> Result<Option<crate::sealing::Unavailable>> {
    let waiting = job.status.as_ref().is_none_or(|s| {
        !s.phase.is_finished()
            && !s
                .attempts
                .iter()
                .any(|a| a.attempt == s.attempt && s.attempt > 0 && !a.phase.is_finished())
    });
    if !waiting || !job.spec.template.uses_secrets() || job.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let ns = job.namespace().unwrap_or_default();
    crate::hub::secrets::check(ctx, &ns, &job.spec.template).await
}

/// Creates `p`, a Placement of a job in `job_namespace`; one that already exists is fine (the
/// scheduler may have written it first). Its template's Secrets are sealed to the member first
/// (`hub::secrets`, from the job's namespace): plaintext never goes into a Placement.
pub(crate) async fn create_placement(
    ctx: &Context,
    job_namespace: &str,
    p: &Placement,
) -> Result<()> {
    let ns = p
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    let member = ctx.stores.member(&p.spec.cluster);
    if !takes_placements(member.as_deref()) {
        // It went NotReady (or away) after the decision, while the lock was taken or the
        // Secrets sealed: no work for it. The attempt fails over once the job controller sees it.
        tracing::info!(placement = %p.name_any(), cluster = %p.spec.cluster, "not creating a placement on a member that is no longer Ready");
        return Ok(());
    }
    let api: Api<Placement> = Api::namespaced(ctx.client.clone(), &ns);
    if p.spec.template.uses_secrets() && ctx.stores.placement(&ns, &p.name_any()).is_some() {
        // Already there (the cache says so): no need to read and seal the Secrets again.
        return Ok(());
    }
    let mut p = p.clone();
    crate::hub::secrets::seal_into(ctx, job_namespace, &mut p).await?;
    let p = &p;
    match api.create(&PostParams::default(), p).await {
        Ok(_) => {
            tracing::info!(placement = %p.name_any(), %ns, "created placement");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(Error::kube(format!(
            "creating Placement {ns}/{}",
            p.name_any()
        ))(e)),
    }
}

/// Whether a Placement may be handed to `member` now: it exists and is Ready, as the cache shows
/// it at the moment of writing (a decision made from an older view is not enough).
fn takes_placements(member: Option<&MemberCluster>) -> bool {
    member
        .and_then(|m| m.status.as_ref())
        .is_some_and(|s| conditions::is_true(&s.conditions, mc::READY))
}

async fn delete_placement(ctx: &Context, namespace: &str, name: &str) -> Result<()> {
    let api: Api<Placement> = Api::namespaced(ctx.client.clone(), namespace);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            tracing::info!(placement = %name, %namespace, "deleted placement");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::kube(format!(
            "deleting Placement {namespace}/{name}"
        ))(e)),
    }
}

/// The usage the member last reported for the current attempt of `st`.
fn reported_usage(st: &gpufed_crds::ComputeJobStatus, ctx: &Context) -> u64 {
    st.attempts
        .iter()
        .find(|a| a.attempt == st.attempt)
        .and_then(|a| {
            ctx.stores.placement(
                &gpufed_crds::naming::member_namespace(&a.cluster),
                &a.placement,
            )
        })
        .and_then(|p| p.status.as_ref().map(|s| s.gpu_seconds))
        .unwrap_or(0)
}

/// Settles the money of a job being deleted: the running attempt is Cancelled and paid for the
/// usage its member reported. Returns the job's final status (what the quota ledger counts), or
/// `None` while a settlement is still in flight.
async fn settle_on_delete(
    job: &ComputeJob,
    ctx: &Context,
) -> Result<Option<gpufed_crds::ComputeJobStatus>> {
    let Some(mut st) = job.status.clone() else {
        return Ok(Some(Default::default()));
    };
    let reported = reported_usage(&st, ctx);
    let pool = ctx
        .stores
        .pool(&job.spec.pool)
        .filter(|p| p.spec.chain.is_some());
    let Some(pool) = pool.filter(|_| settlement::unsettled(&st)) else {
        // Nothing to pay: a running attempt ends with the use its member reported.
        settlement::cancel_current(job, &mut st, reported, &now());
        return Ok(Some(st));
    };
    settlement::cancel_current(job, &mut st, reported, &now());
    let chain = ctx.chain(&pool).await?;
    let now_secs = u64::try_from(now().0.as_second()).unwrap_or(0);
    let step = settlement::advance(&chain, &pool, job, &mut st, now_secs).await?;
    let counts = &ctx.metrics.settlements;
    counts.with_label_values(&["expired"]).inc_by(step.expired);
    counts
        .with_label_values(&["error"])
        .inc_by(step.lock_errors);
    if job.status.as_ref() != Some(&st)
        && write_namespaced(&ctx.client, job, &st).await? == Written::Conflict
    {
        // Computed from a stale copy: nothing of it is paid; the cleanup runs again.
        return Err(Error::Chain(
            "the deleted job changed while its last attempt was being settled".into(),
        ));
    }
    ctx.settler.send(&pool.name_any(), &chain, &step).await;
    Ok((!settlement::unsettled(&st)).then_some(st))
}

/// Waits (up to [`LEDGER_CACHE_WAIT`]) until the hub's cache of `pool` shows the job `uid` in its
/// quota ledger: the job may leave the jobs cache only after, or a scheduling pass could count it
/// nowhere. An error retries the cleanup (the ledger write is idempotent).
async fn ledger_cached(ctx: &Context, pool: &str, uid: &str) -> Result<()> {
    let deadline = Instant::now() + LEDGER_CACHE_WAIT;
    loop {
        let shown = ctx
            .stores
            .pool(pool)
            .is_some_and(|p| crate::hub::quota_ledger::retired(&p).contains(uid));
        if shown {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!("waiting for GpuPool {pool}'s quota ledger in the hub's cache"),
                after: LEDGER_CACHE_WAIT,
            });
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// How long a deleted job's cleanup waits for its ledger entry to reach the pool cache.
const LEDGER_CACHE_WAIT: Duration = Duration::from_secs(2);

/// Deletes every Placement of the job (asking the API, not the cache, so none is missed), after
/// settling what it used.
async fn cleanup(job: Arc<ComputeJob>, ctx: &Context) -> Result<Requeue> {
    let uid = job.uid().ok_or(Error::MissingObjectKey(".metadata.uid"))?;
    let Some(settled) = settle_on_delete(&job, ctx).await? else {
        return Err(Error::Chain(
            "waiting for the settlement of the deleted job's last attempt".into(),
        ));
    };
    let api: Api<Placement> = Api::all(ctx.client.clone());
    let lp = ListParams::default().labels(&format!("{LABEL_JOB_UID}={uid}"));
    let placements = api
        .list(&lp)
        .await
        .map_err(Error::kube("listing the Placements of a deleted job"))?;
    for p in &placements.items {
        let ns = p
            .namespace()
            .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
        delete_placement(ctx, &ns, &p.name_any()).await?;
    }
    if !placements.items.is_empty() {
        ctx.event(
            job.as_ref(),
            false,
            "Cancelled",
            "Delete",
            format!(
                "deleted {} placement(s) before removing the job",
                placements.items.len()
            ),
        );
    }
    let left = api
        .list(&lp)
        .await
        .map_err(Error::kube("listing the Placements of a deleted job"))?;
    if !left.items.is_empty() {
        return Err(Error::Invalid {
            what: "cleanup".into(),
            detail: format!("{} placement(s) still exist", left.items.len()),
        });
    }
    // What it used keeps counting against its namespace's period quotas (ADR 0019) once the
    // job is gone: into the pool's ledger before the finalizer goes.
    let mut last = job.as_ref().clone();
    last.status = Some(settled);
    let now_secs = u64::try_from(now().0.as_second()).unwrap_or(0);
    if crate::hub::quota_ledger::record(&ctx.client, &last, now_secs).await? {
        ledger_cached(ctx, &job.spec.pool, &uid).await?;
    }
    ctx.schedule.notify_one();
    Ok(Requeue::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufed_crds::MemberClusterStatus;

    fn member(ready: Option<bool>) -> MemberCluster {
        let mut m = gpufed_crds::testing::member("alpha", "H100", "2.00").build();
        m.status = ready.map(|ok| MemberClusterStatus {
            conditions: vec![conditions::condition(
                mc::READY,
                ok,
                if ok { "Heartbeat" } else { "HeartbeatExpired" },
                "",
                None,
                now(),
            )],
            ..Default::default()
        });
        m
    }

    #[test]
    fn only_a_member_ready_now_takes_a_placement() {
        assert!(takes_placements(Some(&member(Some(true)))));
        assert!(!takes_placements(Some(&member(Some(false)))));
        assert!(!takes_placements(Some(&member(None))));
        assert!(!takes_placements(None));
    }
}
