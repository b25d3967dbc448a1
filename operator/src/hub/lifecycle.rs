//! The life of a `ComputeJob` after the scheduler has spoken, as a pure function: from the job and
//! what the hub sees of the world (pool, member health, the current Placement), compute the next
//! status and the actions to take (create or delete a Placement, wake the scheduler) and the
//! Events to publish. The job controller performs them; nothing here does I/O or reads a clock.
//!
//! Rules (design.md, "Life of a ComputeJob"):
//! * an attempt whose member is NotReady or gone is **Lost**: its Placement is deleted (so a member
//!   that comes back finds nothing to run) and the job is re-placed with `attempt + 1` elsewhere,
//!   while attempts remain; usage reported before the loss is kept;
//! * a Placement that vanished under a running attempt is treated the same way;
//! * a failed attempt is retried only when `retry.retryOnFailure` is set; a rejected one, one the
//!   member stopped while fenced off from the hub, and one whose gang the member could not schedule
//!   (`GangUnschedulable`, the member's early form of a start timeout), always — each counts
//!   against `retry.maxAttempts`, like a start timeout;
//! * a job with no active attempt waits in Pending for the scheduling loop.

use std::collections::BTreeMap;

use gpufed_crds::conditions::{self, job as jc};
use gpufed_crds::naming::{
    LABEL_ATTEMPT, LABEL_CLUSTER, LABEL_JOB_UID, LABEL_MANAGED_BY, MANAGED_BY, member_namespace,
};
use gpufed_crds::{
    AttemptPhase, AttemptRecord, ComputeJob, ComputeJobStatus, EvmAddress, JobPhase, JobReference,
    Placement, PlacementPhase, PlacementSpec, PlacementStatus, SettlementState, Usage,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ObjectMeta;

pub use gpufed_crds::placement::reasons::FENCED;
pub use gpufed_crds::placement::reasons::GANG_UNSCHEDULABLE;
pub use gpufed_crds::placement::reasons::LEASE_EXPIRED;
pub use gpufed_crds::placement::reasons::LOCAL_JOB_MISSING;
pub use gpufed_crds::placement::reasons::PREEMPTED;
/// Reason of an attempt whose pods did not start within the pool's start timeout.
pub const START_TIMEOUT: &str = "StartTimeout";

/// In a pool without a chain the scheduling loop creates the Placement right after its decision;
/// the controller creates one only if it is still missing this long after the decision (so the two
/// do not race to create it while the cache catches up).
pub const PLACEMENT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What the hub knows about the world around one job.
#[derive(Clone, Debug, Default)]
pub struct World {
    /// The job's pool exists.
    pub pool_exists: bool,
    /// The pool pays on chain.
    pub pool_has_chain: bool,
    /// The payer bound to the job's namespace in the pool, if any.
    pub payer: Option<EvmAddress>,
    /// Readiness of the current attempt's member: `None` if the MemberCluster is gone.
    pub member_ready: Option<bool>,
    /// The current attempt's Placement: `None` if it does not exist, else its status.
    pub placement: Option<Option<PlacementStatus>>,
    /// When the current attempt's Placement was created, if it exists.
    pub placement_created: Option<Time>,
    /// The pool's start timeout: an attempt not running this long after placement is given up.
    pub start_timeout: std::time::Duration,
    /// The priority the job may be queued at (`GpuPoolSpec::priority_for`).
    pub priority: i32,
    /// Why the job may not have the priority it asks for: (reason, message).
    pub priority_refused: Option<(&'static str, String)>,
    /// Why the Secrets the job refers to cannot be delivered (checked while it waits).
    pub secrets_unavailable: Option<crate::sealing::Unavailable>,
    /// The pool's `spec.usageCheck`: Placements ask their members to record telemetry, and each
    /// attempt's claimed GPU-seconds are checked against it (docs/contracts.md).
    pub usage_check: Option<gpufed_crds::UsageCheck>,
    /// The current attempt's Placement asked its member to record telemetry
    /// (`spec.usageRecording`): only then is its usage checked (one placed before the pool
    /// turned the check on has no telemetry to be checked against).
    pub placement_records_usage: bool,
}

/// What the hub knows about a job that has no attempt yet, from its pool alone: whether the pool
/// exists and pays on chain, the payer bound to the job's namespace, and the priority the job may
/// be queued at. The job controller adds the current attempt's member and Placement.
pub fn admission_world(job: &ComputeJob, pool: Option<&gpufed_crds::GpuPool>) -> World {
    let ns = job.metadata.namespace.as_deref().unwrap_or_default();
    let (priority, priority_refused) = match pool.map(|p| {
        p.spec.priority_for(
            ns,
            job.spec.priority_class_name.as_deref(),
            job.spec.priority,
        )
    }) {
        Some(Ok(p)) => (p, None),
        Some(Err(why)) => (job.spec.priority, Some(why)),
        None => (job.spec.priority, None),
    };
    // The hub's own jobs (challenges, ADR 0027) pay nobody and are paid by nobody: no payer, no
    // escrow lock, whatever the pool's chain and payer bindings say.
    let hub_job = crate::hub::challenges::is_hub_job(job);
    World {
        priority,
        priority_refused,
        secrets_unavailable: None,
        pool_exists: pool.is_some(),
        pool_has_chain: !hub_job && pool.is_some_and(|p| p.spec.chain.is_some()),
        payer: pool.filter(|_| !hub_job).and_then(|p| {
            p.spec
                .payers
                .iter()
                .find(|b| b.namespace == ns)
                .map(|b| b.account.clone())
        }),
        member_ready: None,
        placement: None,
        placement_created: None,
        start_timeout: pool
            .map(|p| p.spec.start_timeout.as_duration())
            .unwrap_or(std::time::Duration::from_secs(600)),
        usage_check: pool.and_then(|p| p.spec.usage_check.clone()),
        placement_records_usage: false,
    }
}

impl World {
    /// The pool's usage check, where the current attempt's Placement records telemetry.
    fn checked_usage(&self) -> Option<&gpufed_crds::UsageCheck> {
        self.usage_check
            .as_ref()
            .filter(|_| self.placement_records_usage)
    }
}

/// Whether `out` (computed for `job` in `world`) only admits a job that was never admitted nor
/// refused into the queue, in a pool without a chain. Such a first admission is written by the
/// scheduling loop together with the job's first decision — one status write instead of two
/// (ADR 0015) — and the job controller leaves it alone for [`ADMISSION_DEFERRAL`].
pub fn admission_deferred(job: &ComputeJob, world: &World, out: &Outcome) -> bool {
    let never_admitted = job
        .status
        .as_ref()
        .is_none_or(|s| conditions::find(&s.conditions, jc::ADMITTED).is_none());
    never_admitted
        // The loop cannot read Secrets: a job that refers to some is admitted by the controller.
        && !job.spec.template.uses_secrets()
        && !world.pool_has_chain
        && out.events.is_empty()
        && out.actions == [Action::Schedule]
        && out.status.phase == JobPhase::Pending
        && out.status.attempt == 0
        && conditions::is_true(&out.status.conditions, jc::ADMITTED)
}

/// How long the job controller leaves a first admission to the scheduling loop
/// ([`admission_deferred`]) before it writes the admission itself, so that a job shows it is
/// queued even while the loop works through a burst.
pub const ADMISSION_DEFERRAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Something the controller must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create this Placement (if it does not exist).
    CreatePlacement(Box<Placement>),
    /// Delete the Placement `namespace/name`.
    DeletePlacement {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// Wake the scheduling loop.
    Schedule,
}

/// An Event to publish about the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Warning (true) or Normal.
    pub warning: bool,
    /// PascalCase reason.
    pub reason: &'static str,
    /// Human text.
    pub message: String,
}

/// The next status, actions and events.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Status to write (written only if it differs from the current one).
    pub status: ComputeJobStatus,
    /// Actions, in order.
    pub actions: Vec<Action>,
    /// Events to publish.
    pub events: Vec<Note>,
}

/// Computes the next state of `job`.
pub fn reconcile(job: &ComputeJob, world: &World, now: &Time) -> Outcome {
    let mut out = Outcome {
        status: job.status.clone().unwrap_or_default(),
        ..Default::default()
    };
    let spec = &job.spec;
    let generation = job.metadata.generation;
    let st = &mut out.status;
    st.gpus = spec.replicas * spec.gpus_per_replica;
    st.observed_generation = generation;
    if st.queued_time.is_none() {
        st.queued_time = Some(now.clone());
    }
    if st.phase.is_finished() {
        return out;
    }

    // Admission.
    if !world.pool_exists {
        let message = format!(
            "GpuPool {:?} does not exist: create it, or re-create the job with spec.pool naming an existing pool",
            spec.pool
        );
        set(
            st,
            jc::ADMITTED,
            false,
            "PoolNotFound",
            &message,
            generation,
            now,
        );
        wait(st, "PoolNotFound", message);
        return out;
    }
    if world.pool_has_chain && spec.max_price_per_gpu_hour.is_none() {
        let message = format!(
            "GpuPool {:?} pays on chain and locks maxPricePerGpuHour × GPUs × maxDuration up front: \
             re-create the job with spec.maxPricePerGpuHour set",
            spec.pool
        );
        set(
            st,
            jc::ADMITTED,
            false,
            "MaxPriceRequired",
            &message,
            generation,
            now,
        );
        wait(st, "MaxPriceRequired", message);
        return out;
    }
    if world.pool_has_chain && world.payer.is_none() {
        let ns = job.metadata.namespace.as_deref().unwrap_or_default();
        let message = format!(
            "namespace {ns:?} has no payer in GpuPool {:?}: ask the pool admin to add it to spec.payers",
            spec.pool
        );
        set(
            st,
            jc::ADMITTED,
            false,
            "NoPayerBinding",
            &message,
            generation,
            now,
        );
        wait(st, "NoPayerBinding", message);
        return out;
    }
    // A priority the pool does not grant keeps a waiting job out of the queue; a running attempt is
    // left alone (the priority only orders pending jobs).
    let running = st
        .attempts
        .iter()
        .any(|a| a.attempt == st.attempt && st.attempt > 0 && !a.phase.is_finished());
    if let (Some((reason, message)), false) = (&world.priority_refused, running) {
        set(st, jc::ADMITTED, false, reason, message, generation, now);
        wait(st, reason, message.clone());
        return out;
    }
    // A Secret the job refers to is missing (or not shared with the hub): nothing is placed until
    // it is there; the job controller checks again on every pass.
    if let (Some(why), false) = (&world.secrets_unavailable, running) {
        if st.reason.as_deref() != Some(why.reason) || st.explanation.as_ref() != Some(&why.message)
        {
            out.events.push(Note {
                warning: true,
                reason: why.reason,
                message: why.message.clone(),
            });
        }
        set(
            st,
            jc::ADMITTED,
            false,
            why.reason,
            &why.message,
            generation,
            now,
        );
        wait(st, why.reason, why.message.clone());
        return out;
    }
    set(
        st,
        jc::ADMITTED,
        true,
        "Accepted",
        "the spec is valid and the pool exists",
        generation,
        now,
    );
    st.payer = world.payer.clone();
    if world.priority_refused.is_none() {
        st.priority = Some(world.priority);
    }

    let current = st
        .attempts
        .iter()
        .position(|a| a.attempt == st.attempt && st.attempt > 0 && !a.phase.is_finished());
    match current {
        Some(i) => advance_attempt(job, world, now, &mut out, i),
        None => {
            if st.phase != JobPhase::Pending {
                st.phase = JobPhase::Pending;
            }
            out.actions.push(Action::Schedule);
        }
    }
    if job.spec.serving.is_some() {
        out.status.endpoint = Some(Box::new(super::serving::endpoint(
            &out.status,
            world.placement.as_ref(),
        )));
    }
    refresh_usage(&mut out.status);
    out
}

fn set(
    st: &mut ComputeJobStatus,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    conditions::set_condition(
        &mut st.conditions,
        conditions::condition(type_, ok, reason, message, generation, now.clone()),
    );
}

fn wait(st: &mut ComputeJobStatus, reason: &str, explanation: String) {
    st.phase = JobPhase::Pending;
    st.reason = Some(reason.to_string());
    st.explanation = Some(explanation);
}

fn advance_attempt(job: &ComputeJob, world: &World, now: &Time, out: &mut Outcome, i: usize) {
    let generation = job.metadata.generation;
    let record = out.status.attempts[i].clone();
    let lost = match world.member_ready {
        None => Some((
            "MemberRemoved",
            format!("member cluster {} was removed", record.cluster),
        )),
        Some(false) => Some((
            "HeartbeatExpired",
            format!(
                "member cluster {} stopped heartbeating; attempt {} is fenced off and re-placed",
                record.cluster, record.attempt
            ),
        )),
        Some(true) => match &world.placement {
            None if record.phase == AttemptPhase::Placed
                && record.settlement.as_ref().is_some_and(|s| {
                    matches!(
                        s.state,
                        SettlementState::Unfunded | SettlementState::Locking
                    )
                }) =>
            {
                // No lock, no run: the Placement is written once the escrow holds the funds.
                out.status.phase = JobPhase::Funding;
                return;
            }
            None if record.phase == AttemptPhase::Placed
                && placement_grace(&record, world, now).is_some() =>
            {
                // The scheduling loop is creating it; the controller comes back after the grace.
                out.status.phase = JobPhase::Placed;
                return;
            }
            None if record.phase == AttemptPhase::Placed => {
                out.actions
                    .push(Action::CreatePlacement(Box::new(placement_for(
                        job,
                        &record,
                        world.usage_check.as_ref(),
                    ))));
                // The scheduler's explanation stays; a status write only to reword it would be
                // one more write per job.
                if !conditions::is_true(&out.status.conditions, jc::SCHEDULED) {
                    set(
                        &mut out.status,
                        jc::SCHEDULED,
                        true,
                        "Placed",
                        &format!("placed on {}", record.cluster),
                        generation,
                        now,
                    );
                }
                out.status.phase = JobPhase::Placed;
                return;
            }
            None => Some((
                "PlacementDeleted",
                format!(
                    "Placement {} was deleted while the attempt ran",
                    record.placement
                ),
            )),
            Some(status) => {
                let running = status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(|p| p != PlacementPhase::Accepted);
                // Counted from when the Placement was written (time spent waiting for the escrow
                // lock is not the member's), else from the decision.
                let waited = world
                    .placement_created
                    .as_ref()
                    .or(record.placed_time.as_ref())
                    .map(|t| now.0.duration_since(t.0).as_secs_f64())
                    .unwrap_or(0.0);
                if !running && waited > world.start_timeout.as_secs_f64() {
                    start_timed_out(job, world, now, out, i, status.as_ref());
                    return;
                }
                sync_from_placement(job, now, out, i, status.as_ref(), world.checked_usage());
                return;
            }
        },
    };
    if let Some((reason, message)) = lost {
        let rec = &mut out.status.attempts[i];
        // Being stopped for a preemptor (ADR 0025) when its member or Placement went: it ends
        // preempted all the same, with the usage reported so far.
        let preempted = rec.reason.as_deref() == Some(PREEMPTED);
        if preempted {
            rec.phase = AttemptPhase::Preempted;
        } else {
            rec.phase = AttemptPhase::Lost;
            rec.reason = Some(reason.into());
            rec.message = Some(message.clone());
        }
        rec.finish_time = Some(now.clone());
        if let Some(Some(p)) = &world.placement {
            let (used, capped) = record_usage(job, rec, p.gpu_seconds, now);
            rec.gpu_seconds = used;
            if let Some(note) = capped {
                out.events.push(note);
            }
            check_usage(job, world.checked_usage(), now, out, i, p, true);
        }
        out.actions.push(Action::DeletePlacement {
            namespace: member_namespace(&record.cluster),
            name: record.placement.clone(),
        });
        if preempted {
            requeue_preempted(
                job,
                now,
                out,
                i,
                &format!("{message} while it was being stopped"),
            );
        } else {
            retry_or_fail(job, now, out, true, reason, message);
        }
    }
}

/// Re-queues a job whose attempt `i` just ended preempted (ADR 0025): Pending for a new attempt,
/// which may go to the same cluster; not counted against `retry.maxAttempts`.
fn requeue_preempted(job: &ComputeJob, now: &Time, out: &mut Outcome, i: usize, how: &str) {
    let generation = job.metadata.generation;
    let rec = &out.status.attempts[i];
    let why = rec.message.clone().unwrap_or_else(|| PREEMPTED.to_string());
    let message = format!(
        "attempt {} on {} was preempted ({why}); it {how} after {} GPU-seconds",
        rec.attempt, rec.cluster, rec.gpu_seconds
    );
    let st = &mut out.status;
    set(st, jc::RUNNING, false, PREEMPTED, &message, generation, now);
    st.phase = JobPhase::Pending;
    st.placement = None;
    st.reason = Some(PREEMPTED.to_string());
    st.message = Some(message.clone());
    st.explanation = Some(format!("{message}; waiting for a new attempt"));
    set(
        st,
        jc::SCHEDULED,
        false,
        PREEMPTED,
        &message,
        generation,
        now,
    );
    out.actions.push(Action::Schedule);
    out.events.push(Note {
        warning: true,
        reason: "Requeued",
        message: format!("{message}; placing attempt {}", st.attempt + 1),
    });
}

/// How long until the current attempt's start timeout runs out, if it is waiting to start, so the
/// controller can come back on time rather than on the next unrelated event.
pub fn start_deadline(job: &ComputeJob, world: &World, now: &Time) -> Option<std::time::Duration> {
    let st = job.status.as_ref()?;
    let rec = st.attempts.iter().find(|a| a.attempt == st.attempt)?;
    if !matches!(rec.phase, AttemptPhase::Placed | AttemptPhase::Accepted) {
        return None;
    }
    let since = world.placement_created.as_ref()?;
    let waited = now.0.duration_since(since.0).as_secs_f64().max(0.0);
    let left = world.start_timeout.as_secs_f64() - waited;
    Some(std::time::Duration::from_secs_f64(left.max(0.0) + 1.0))
}

/// How long the controller leaves the creation of `record`'s Placement to the scheduling loop
/// (pools without a chain, within [`PLACEMENT_GRACE`] of the decision); `None` once it is its own.
pub fn placement_grace(
    record: &AttemptRecord,
    world: &World,
    now: &Time,
) -> Option<std::time::Duration> {
    if world.pool_has_chain || record.phase != AttemptPhase::Placed {
        return None;
    }
    let placed = record.placed_time.as_ref()?;
    let since = now.0.duration_since(placed.0).as_secs_f64().max(0.0);
    let left = PLACEMENT_GRACE.as_secs_f64() - since;
    (left > 0.0).then(|| std::time::Duration::from_secs_f64(left))
}

/// How long until a capped usage report of the current attempt can be believed in full: a member
/// may report GPU-seconds before the hub's clock allows them (clocks differ, the report raced the
/// placement), and nothing else may wake the job before its next report.
pub fn usage_recheck(
    job: &ComputeJob,
    status: &ComputeJobStatus,
    world: &World,
) -> Option<std::time::Duration> {
    let reported = world.placement.as_ref()?.as_ref()?.gpu_seconds;
    let rec = status
        .attempts
        .iter()
        .find(|a| a.attempt == status.attempt && !a.phase.is_finished())?;
    let missing = reported.checked_sub(rec.gpu_seconds).filter(|m| *m > 0)?;
    let gpus = u64::from(job.spec.replicas * job.spec.gpus_per_replica).max(1);
    Some(std::time::Duration::from_secs(missing.div_ceil(gpus) + 1))
}

/// Gives up an attempt whose pods did not start within the pool's start timeout: its Placement is
/// deleted (the member removes the local Job) and the job is tried elsewhere.
fn start_timed_out(
    job: &ComputeJob,
    world: &World,
    now: &Time,
    out: &mut Outcome,
    i: usize,
    status: Option<&PlacementStatus>,
) {
    let rec = &mut out.status.attempts[i];
    let detail = status
        .and_then(|s| s.message.clone())
        .map(|m| format!(" (member says: {m})"))
        .unwrap_or_default();
    let message = format!(
        "pods of attempt {} did not start on {} within the pool's startTimeout of {}{detail}",
        rec.attempt,
        rec.cluster,
        gpufed_crds::KubeDuration::from(world.start_timeout)
    );
    rec.phase = AttemptPhase::Failed;
    rec.reason = Some(START_TIMEOUT.into());
    rec.message = Some(message.clone());
    rec.finish_time = Some(now.clone());
    let (namespace, name) = (member_namespace(&rec.cluster), rec.placement.clone());
    out.actions
        .push(Action::DeletePlacement { namespace, name });
    retry_or_fail(job, now, out, true, START_TIMEOUT, message);
}

fn sync_from_placement(
    job: &ComputeJob,
    now: &Time,
    out: &mut Outcome,
    i: usize,
    status: Option<&PlacementStatus>,
    usage: Option<&gpufed_crds::UsageCheck>,
) {
    let generation = job.metadata.generation;
    let Some(ps) = status else {
        // Written but not yet picked up by the member.
        out.status.phase = JobPhase::Placed;
        return;
    };
    let rec = &mut out.status.attempts[i];
    let (used, capped) = record_usage(job, rec, ps.gpu_seconds, now);
    rec.gpu_seconds = used;
    if let Some(note) = capped {
        out.events.push(note);
    }
    if rec.start_time.is_none() {
        rec.start_time = ps.start_time.clone();
    }
    if !ps.exits.is_empty() {
        rec.exits = ps.exits.clone();
    }
    let cluster = rec.cluster.clone();
    // Whether the attempt ends with this report (its record is still unfinished).
    let ending = ps.phase.is_some_and(PlacementPhase::is_finished) && !rec.phase.is_finished();
    check_usage(job, usage, now, out, i, ps, ending);
    let rec = &mut out.status.attempts[i];
    match ps.phase {
        None | Some(PlacementPhase::Accepted) => {
            if rec.phase == AttemptPhase::Placed {
                rec.phase = AttemptPhase::Accepted;
            }
            out.status.phase = JobPhase::Placed;
        }
        Some(PlacementPhase::Running) => {
            let started = rec.phase != AttemptPhase::Running;
            rec.phase = AttemptPhase::Running;
            out.status.phase = JobPhase::Running;
            let message = format!(
                "{} replica(s) running on {cluster}",
                ps.active_replicas.max(1)
            );
            set(
                &mut out.status,
                jc::RUNNING,
                true,
                "PodsRunning",
                &message,
                generation,
                now,
            );
            if started {
                out.events.push(Note {
                    warning: false,
                    reason: "Running",
                    message,
                });
            }
        }
        Some(PlacementPhase::Succeeded) => {
            rec.phase = AttemptPhase::Succeeded;
            rec.reason = ps.reason.clone().or(Some("Completed".into()));
            rec.finish_time = ps.finish_time.clone().or(Some(now.clone()));
            let gpu_seconds = rec.gpu_seconds;
            let st = &mut out.status;
            st.phase = JobPhase::Succeeded;
            st.reason = Some("Completed".into());
            st.message = None;
            // What the attempt's uploads stored (ADR 0029); the member lists them only for an
            // attempt whose every upload succeeded.
            st.outputs = ps.outputs.clone();
            st.explanation = Some(format!(
                "completed on {cluster} using {gpu_seconds} GPU-seconds"
            ));
            st.completion_time = Some(now.clone());
            set(
                st,
                jc::RUNNING,
                false,
                "Completed",
                "all replicas completed",
                generation,
                now,
            );
            set(
                st,
                jc::FINISHED,
                true,
                "Succeeded",
                &format!("completed on {cluster}"),
                generation,
                now,
            );
            out.events.push(Note {
                warning: false,
                reason: "Succeeded",
                message: format!("completed on {cluster} using {gpu_seconds} GPU-seconds"),
            });
        }
        // Stopped by its member because the hub asked it to (`spec.stop`), after the hub had
        // marked the attempt preempted: a member's word alone never makes an attempt uncounted.
        Some(PlacementPhase::Failed)
            if ps.reason.as_deref() == Some(PREEMPTED)
                && rec.reason.as_deref() == Some(PREEMPTED) =>
        {
            rec.phase = AttemptPhase::Preempted;
            rec.finish_time = ps.finish_time.clone().or(Some(now.clone()));
            requeue_preempted(job, now, out, i, "stopped");
        }
        Some(phase @ (PlacementPhase::Failed | PlacementPhase::Rejected)) => {
            let rejected = phase == PlacementPhase::Rejected;
            let reason = ps
                .reason
                .clone()
                .unwrap_or_else(|| if rejected { "Rejected" } else { "Failed" }.into());
            let message = format!(
                "attempt {} on {cluster} {}: {}",
                rec.attempt,
                if rejected {
                    "was rejected by the member"
                } else {
                    "failed"
                },
                ps.message.clone().unwrap_or_else(|| reason.clone())
            );
            rec.phase = AttemptPhase::Failed;
            rec.reason = Some(reason.clone());
            rec.message = ps.message.clone();
            rec.finish_time = ps.finish_time.clone().or(Some(now.clone()));
            // A member that fenced itself (lost the hub for too long) stopped the pods, its agent
            // stopped renewing the Job's lease, the local Job vanished, or the member could not
            // schedule the whole gang (what the start timeout would have ended, found early): not
            // the workload's fault, so it is retried like a rejection.
            let fenced = matches!(
                ps.reason.as_deref(),
                Some(FENCED | LOCAL_JOB_MISSING | LEASE_EXPIRED | GANG_UNSCHEDULABLE)
            );
            let retryable = rejected || fenced || job.spec.retry.retry_on_failure;
            let reason: &'static str = if rejected {
                "AttemptRejected"
            } else {
                "AttemptFailed"
            };
            retry_or_fail(job, now, out, retryable, reason, message);
        }
    }
}

fn retry_or_fail(
    job: &ComputeJob,
    now: &Time,
    out: &mut Outcome,
    retryable: bool,
    reason: &'static str,
    message: String,
) {
    let generation = job.metadata.generation;
    let st = &mut out.status;
    set(st, jc::RUNNING, false, reason, &message, generation, now);
    // Attempts whose lock was refused never ran and do not count.
    let ran = st
        .attempts
        .iter()
        .filter(|a| crate::hub::settlement::attempt_ran(a))
        .count();
    let attempts_left = ran < job.spec.retry.max_attempts as usize;
    if retryable && attempts_left {
        st.phase = JobPhase::Pending;
        st.placement = None;
        st.reason = Some(reason.to_string());
        st.message = Some(message.clone());
        st.explanation = Some(format!("{message}; waiting for another cluster"));
        set(st, jc::SCHEDULED, false, reason, &message, generation, now);
        out.actions.push(Action::Schedule);
        out.events.push(Note {
            warning: true,
            reason: "FailedOver",
            message: format!("{message}; placing attempt {} elsewhere", st.attempt + 1),
        });
    } else {
        let why = if retryable {
            format!(
                "{message}; no attempts left (retry.maxAttempts = {})",
                job.spec.retry.max_attempts
            )
        } else {
            format!("{message}; not retried (retry.retryOnFailure is false)")
        };
        st.phase = JobPhase::Failed;
        st.reason = Some(reason.to_string());
        st.message = Some(why.clone());
        st.explanation = Some(why.clone());
        st.completion_time = Some(now.clone());
        set(st, jc::FINISHED, true, "Failed", &why, generation, now);
        out.events.push(Note {
            warning: true,
            reason: "Failed",
            message: why,
        });
    }
}

/// How far, in whole seconds, an honest member's count may run ahead of the hub's clock: the
/// agent reads its member's time as the middle of the apiserver's `Date` second (ADR 0026), so up
/// to half a second ahead, and counts whole seconds from whole-second container start times.
pub const USAGE_CLOCK_MARGIN_SECS: u64 = 1;

/// The most GPU-seconds `record` can have used by `now`: every GPU of the job since the attempt
/// was placed (plus [`USAGE_CLOCK_MARGIN_SECS`]), and never beyond `maxDuration`. A member
/// reporting more is not believed.
pub fn usage_cap(job: &ComputeJob, record: &AttemptRecord, now: &Time) -> u64 {
    let gpus = u64::from(job.spec.replicas * job.spec.gpus_per_replica);
    let max_secs = job.spec.max_duration.as_secs_ceil();
    let elapsed = record
        .placed_time
        .as_ref()
        .map(|t| {
            u64::try_from(now.0.duration_since(t.0).as_secs())
                .unwrap_or(0)
                .saturating_add(USAGE_CLOCK_MARGIN_SECS)
        })
        .unwrap_or(max_secs);
    gpus.saturating_mul(elapsed.min(max_secs))
}

/// The usage to record for `record` given what its member reports: never less than already
/// recorded, never more than [`usage_cap`]; with a warning Event when the report was capped.
fn record_usage(
    job: &ComputeJob,
    record: &AttemptRecord,
    reported: u64,
    now: &Time,
) -> (u64, Option<Note>) {
    let cap = usage_cap(job, record, now);
    let used = record
        .gpu_seconds
        .max(reported)
        .min(cap.max(record.gpu_seconds));
    let note = (reported > cap && record.gpu_seconds < cap).then(|| Note {
        warning: true,
        reason: "UsageCapped",
        message: format!(
            "{} reported {reported} GPU-seconds for attempt {}; at most {cap} are possible ({} GPUs since placement, within maxDuration): recorded {used}",
            record.cluster,
            record.attempt,
            job.spec.replicas * job.spec.gpus_per_replica
        ),
    });
    (used, note)
}

/// Reason of the Event and condition when telemetry does not support an attempt's claim.
pub const USAGE_UNSUPPORTED: &str = "UsageUnsupported";

/// The verdict of `rule` on what `ps` reports for an attempt of `job` that claims `claimed`
/// GPU-seconds: from the pods' start to their finish (or the report's time, or `now`), with the
/// spans of every node in `ps.telemetry`.
pub fn usage_verdict(
    rule: &crate::usage_check::UsageRule,
    job: &ComputeJob,
    claimed: u64,
    ps: &PlacementStatus,
    now: &Time,
) -> crate::usage_check::UsageVerdict {
    use crate::usage_check::{AttemptUsage, Span, check_spans, unix};
    let Some(start) = ps.start_time.as_ref().map(unix) else {
        return crate::usage_check::UsageVerdict {
            claimed,
            unsupported: claimed,
            ..Default::default()
        };
    };
    let end = ps
        .finish_time
        .as_ref()
        .or(ps.last_update_time.as_ref())
        .map_or_else(|| unix(now), unix);
    let sources: Vec<Vec<Span>> = ps
        .telemetry
        .iter()
        .flat_map(|t| &t.nodes)
        .map(|n| n.spans.iter().map(Span::from).collect())
        .collect();
    let usage = AttemptUsage {
        start,
        end,
        gpus: u64::from(job.spec.replicas * job.spec.gpus_per_replica),
        claimed_gpu_seconds: claimed,
    };
    check_spans(rule, &usage, &sources)
}

/// In a pool that checks usage (`usage`, docs/contracts.md "Usage checked against telemetry"):
/// attempt `i`'s claimed GPU-seconds checked against its member's telemetry in `ps`, the verdict
/// kept on the attempt (settlement pays its supported part), the job's `UsageSupported`
/// condition, and a warning Event when the attempt is `ending` with a claim not fully supported.
/// Serving jobs and the hub's own jobs are not checked (nobody pays for those, or idleness is
/// their design).
fn check_usage(
    job: &ComputeJob,
    usage: Option<&gpufed_crds::UsageCheck>,
    now: &Time,
    out: &mut Outcome,
    i: usize,
    ps: &PlacementStatus,
    ending: bool,
) {
    let Some(usage) = usage else {
        return;
    };
    if job.spec.serving.is_some() || crate::hub::challenges::is_hub_job(job) {
        return;
    }
    let rule = crate::usage_check::UsageRule::from(usage);
    let rec = &mut out.status.attempts[i];
    let verdict = usage_verdict(&rule, job, rec.gpu_seconds, ps, now);
    let record = verdict.record();
    let changed = rec.usage_check.as_deref() != Some(&record);
    rec.usage_check = Some(Box::new(record));
    if !changed && !ending {
        return;
    }
    let (attempt, cluster) = (rec.attempt, rec.cluster.clone());
    let describe = |v: &crate::usage_check::UsageVerdict| {
        format!(
            "attempt {attempt} on {cluster}: its member's telemetry supports {} of the {} GPU-seconds claimed ({} s with every GPU idle beyond the pool's idleGrace of {} s, {} s without readings); settlement pays {}",
            v.supported,
            v.claimed,
            v.idle_secs,
            rule.idle_grace_secs,
            v.unobserved_secs,
            v.supported
        )
    };
    let flagged: Vec<String> = out
        .status
        .attempts
        .iter()
        .filter(|a| {
            a.usage_check
                .as_ref()
                .is_some_and(|u| u.unsupported_gpu_seconds > 0)
        })
        .map(|a| a.attempt.to_string())
        .collect();
    let generation = job.metadata.generation;
    if flagged.is_empty() {
        set(
            &mut out.status,
            jc::USAGE_SUPPORTED,
            true,
            "Supported",
            "the members' telemetry supports every GPU-second claimed",
            generation,
            now,
        );
    } else {
        set(
            &mut out.status,
            jc::USAGE_SUPPORTED,
            false,
            USAGE_UNSUPPORTED,
            &format!(
                "telemetry does not support every GPU-second claimed for attempt(s) {}; {}",
                flagged.join(", "),
                describe(&verdict)
            ),
            generation,
            now,
        );
    }
    if ending && verdict.flagged() {
        out.events.push(Note {
            warning: true,
            reason: USAGE_UNSUPPORTED,
            message: describe(&verdict),
        });
    }
}

/// GPU-seconds settlement pays for `record`: what it reported (within the hub's cap), or in a
/// pool that checks usage only the part its telemetry supports.
pub fn paid_gpu_seconds(record: &AttemptRecord) -> u64 {
    record.usage_check.as_ref().map_or(record.gpu_seconds, |u| {
        u.supported_gpu_seconds.min(record.gpu_seconds)
    })
}

/// Sums GPU-seconds over attempts and records when the first started and the last finished.
pub(crate) fn refresh_usage(st: &mut ComputeJobStatus) {
    if st.attempts.is_empty() {
        return;
    }
    let gpu_seconds = st.attempts.iter().map(|a| a.gpu_seconds).sum();
    let start_time = st
        .attempts
        .iter()
        .filter_map(|a| a.start_time.clone())
        .min();
    let finish_time = if st.phase.is_finished() {
        st.attempts
            .iter()
            .filter_map(|a| a.finish_time.clone())
            .max()
    } else {
        None
    };
    st.usage = Some(Usage {
        gpu_seconds,
        start_time,
        finish_time,
    });
}

/// The Placement of `record` for `job`: a frozen copy of what the member must run. In a pool
/// that checks usage (`usage`), the member is asked to record telemetry, except for serving jobs
/// (a server waiting for requests is idle by design, so its usage is not checked).
pub fn placement_for(
    job: &ComputeJob,
    record: &AttemptRecord,
    usage: Option<&gpufed_crds::UsageCheck>,
) -> Placement {
    // The member sees the job's UID only: its namespace and name stay on the hub (ADR 0037).
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let labels = BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_JOB_UID.to_string(), uid.clone()),
        (LABEL_ATTEMPT.to_string(), record.attempt.to_string()),
        (LABEL_CLUSTER.to_string(), record.cluster.clone()),
    ]);
    let chain_job_id = record.settlement.as_ref().map(|s| s.job_id.clone());
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
            chain_job_id,
            template: job.spec.template.clone(),
            // Sealed when the Placement is created (`hub::sealing`), which needs the Secrets.
            sealed_secrets: None,
            serving: job.spec.serving.as_deref().cloned(),
            usage_recording: usage
                .filter(|_| job.spec.serving.is_none())
                .map(gpufed_crds::UsageCheck::recording),
            funded_seconds: None,
            stop: None,
        },
        status: None,
    }
}

/// The Placements among `placements` (this job's, as `(namespace, name, attempt)`) that must not
/// exist: those of attempts lower than the job's recorded current one that ended `Lost` or timed
/// out before starting — the controller deleted their Placements when they ended (other ended
/// attempts keep theirs, for the member's final report and the usage receipt). One still there was
/// created late, by a write in flight when the attempt ended — for example from a replica that
/// lost the leader Lease meanwhile (docs/adr/0016-leadership-fenced-writes.md) — and a member that
/// never saw the later attempt would run it.
pub fn superseded<'a>(
    status: Option<&ComputeJobStatus>,
    placements: impl IntoIterator<Item = (&'a str, &'a str, u32)>,
) -> Vec<(String, String)> {
    let Some(st) = status else {
        return vec![];
    };
    let removed = |attempt: u32| {
        st.attempts.iter().any(|a| {
            a.attempt == attempt
                && (a.phase == AttemptPhase::Lost || a.reason.as_deref() == Some(START_TIMEOUT))
        })
    };
    placements
        .into_iter()
        .filter(|(_, _, attempt)| *attempt < st.attempt && removed(*attempt))
        .map(|(ns, name, _)| (ns.to_string(), name.to_string()))
        .collect()
}

/// Whether `status` (read fresh from the apiserver, not from a cache) still wants the Placement of
/// `attempt` created: that attempt is the job's current one and waits for its Placement. A
/// reconcile can run on a job cached before a start timeout or a failover moved it to a later
/// attempt while the Placement cache already shows the old Placement deleted; creating it then
/// would hand a member an attempt the job has moved past (it would be deleted again as
/// [`superseded`], after the member may have started it).
pub fn wants_placement(status: Option<&ComputeJobStatus>, attempt: u32) -> bool {
    status.is_some_and(|st| {
        st.attempt == attempt
            && !st.phase.is_finished()
            && st
                .attempts
                .iter()
                .any(|a| a.attempt == attempt && a.phase == AttemptPhase::Placed)
    })
}

/// Whether a job with `status` has nothing left to do on its own: it finished and every
/// attempt's money is at rest (settled, expired or closed, or never on chain). Such a job changes
/// only when something it is watched through changes, so the job controller stops requeueing it
/// every few minutes: with most of 100,000 jobs finished that was hundreds of reconciles a
/// second, and a scheduled entry per job.
pub fn at_rest(status: &ComputeJobStatus) -> bool {
    status.phase.is_finished()
        && status.attempts.iter().all(|a| {
            a.settlement.as_ref().is_none_or(|s| {
                matches!(
                    s.state,
                    SettlementState::Settled | SettlementState::Expired | SettlementState::Closed
                )
            })
        })
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
