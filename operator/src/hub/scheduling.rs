//! The scheduling loop: like kube-scheduler's queue, one task takes *all* pending jobs of a pool,
//! orders them by priority then age, and runs the pure core over a snapshot of the members, so
//! priorities hold across jobs and a burst never over-commits a cluster. It is woken by the
//! jobs watch whenever the cache shows a job waiting (and by capacity changes, and every
//! [`RESYNC`] regardless).
//!
//! A decision is written into the job's status (the new attempt, its cluster, model, price and
//! planned nodes) guarded by the resourceVersion it was computed from; right after, for a pool
//! without a chain, the loop creates the Placement itself (the job controller creates it too if
//! that fails, and after the escrow lock in pools with a chain). Writes are not awaited by the
//! pass: up to [`WRITES_IN_FLIGHT`] run at once, across passes. The GPUs of a decision are
//! promised (in [`InFlight`]) *before* its write starts and until the hub's cache shows it, so
//! neither a later pass nor a stale cache can hand them out twice; a write that fails or loses
//! a race gives them back and wakes the loop.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gpufed_crds::conditions::{self, job as jc};
use gpufed_crds::naming::{chain_job_id_hex, member_namespace, placement_name};
use gpufed_crds::{
    AttemptPhase, AttemptRecord, ComputeJob, ComputeJobStatus, EvmAddress, GpuPool, JobPhase,
    MemberCluster, PlacementRef, PlannedNode, SignedOffer, TokenAmount,
};
use gpufed_scheduler::{
    Assignment, Before, Decision, FairShare, Hold, JobRequest, QuotaBook, ReclaimPolicy,
    Reservation, Running, Usage, explain, explain_placement, plan_preemptions, schedule_batch_fair,
    schedule_batch_with_quotas,
};
use kube::ResourceExt;
use tokio::sync::Semaphore;

use crate::hub::at_rest::{self, JobAtRest, JobRef};
use crate::hub::context::{Context, now};
use crate::hub::preemption::{self, Outstanding, Stop};
use crate::hub::status::{Written, write_namespaced};
use crate::hub::{challenges, lifecycle, period_usage, reclaim, snapshot};

/// Status writes (decisions, reasons to wait) in flight at once, across passes.
pub const WRITES_IN_FLIGHT: usize = 64;

/// How often the queue is re-evaluated without any trigger, and the longest a full pass waits
/// while triggers keep coming with no job queued.
pub const RESYNC: Duration = Duration::from_secs(5);

/// How long a pass waits after a trigger, so a burst of jobs is decided in one pass.
pub const DEBOUNCE: Duration = Duration::from_millis(20);

/// What the loop has decided that the hub's cache does not show yet.
#[derive(Debug, Default)]
pub struct InFlight {
    /// Job UID → (attempt decided, GPUs promised), from before the write until the cache shows it.
    by_uid: HashMap<String, (u32, Vec<Reservation>)>,
    /// Job UID → GPUs its decision in flight counts against its namespace's quota.
    quota: HashMap<String, Usage>,
    /// Job UID → signature of the reasons to wait last written (or being written), so a waiting
    /// job's status is rewritten only when why it waits changes, not when a count in it does.
    waiting: HashMap<String, u64>,
    /// Pool name → the job holding nodes after the pool's last fair pass (ADR 0025), so the hold
    /// stays with it until it is placed. Leader memory: a new leader picks the head again.
    holders: HashMap<String, String>,
    /// Preemptor (`namespace/name`) → the preemption it started whose victims are stopping
    /// (ADR 0025), until it is placed or the victims had their time. Leader memory: a new leader
    /// sees the victims being stopped (their attempts are marked) and never evicts them again.
    preempting: HashMap<String, Outstanding>,
}

impl InFlight {
    /// Forgets decisions the cache now shows (or whose job is gone), and the reasons to wait of
    /// jobs no longer waiting.
    pub fn prune<J: std::borrow::Borrow<ComputeJob>>(&mut self, jobs: &[J]) {
        let seen: HashMap<String, (u32, bool)> = jobs
            .iter()
            .map(std::borrow::Borrow::borrow)
            .filter_map(|j| {
                let attempt = j.status.as_ref().map(|s| s.attempt).unwrap_or(0);
                Some((j.uid()?, (attempt, is_queued(j))))
            })
            .collect();
        self.by_uid
            .retain(|uid, (attempt, _)| seen.get(uid).is_some_and(|(cached, _)| cached < attempt));
        let by_uid = &self.by_uid;
        self.quota.retain(|uid, _| by_uid.contains_key(uid));
        self.waiting
            .retain(|uid, _| seen.get(uid).is_some_and(|(_, pending)| *pending));
    }

    /// Promises `gpus` to attempt `attempt` of job `uid` while its decision is written.
    pub fn promise(&mut self, uid: &str, attempt: u32, gpus: Vec<Reservation>) {
        self.by_uid.insert(uid.to_string(), (attempt, gpus));
        self.waiting.remove(uid);
    }

    /// Gives back what was promised to `uid` (its write failed or lost a race).
    pub fn release(&mut self, uid: &str) {
        self.by_uid.remove(uid);
        self.quota.remove(uid);
    }

    /// Records the quota use of the decision in flight for `uid` (see [`InFlight::promise`]).
    pub fn charge(&mut self, uid: &str, usage: Usage) {
        self.quota.insert(uid.to_string(), usage);
    }

    /// The job that held nodes after the pool's last fair pass.
    pub fn holder(&self, pool: &str) -> Option<&str> {
        self.holders.get(pool).map(String::as_str)
    }

    /// Records the hold of the pool's fair pass (none: forget the previous one).
    pub fn set_holder(&mut self, pool: &str, hold: Option<&Hold>) {
        match hold {
            Some(h) => self.holders.insert(pool.to_string(), h.job.clone()),
            None => self.holders.remove(pool),
        };
    }

    /// Forgets the preemption started for `preemptor` (a victim's stop could not be written), so
    /// the next pass plans again.
    pub fn forget_preemption(&mut self, preemptor: &str) {
        self.preempting.remove(preemptor);
    }

    /// The preemption started for `preemptor` and not yet over, if any.
    pub fn preemption(&self, preemptor: &str) -> Option<&Outstanding> {
        self.preempting.get(preemptor)
    }

    /// The quota use of the decision in flight for `uid`, if any.
    pub fn charged(&self, uid: &str) -> Option<&Usage> {
        self.quota.get(uid)
    }

    /// Whether a decision for `uid` is being written or not yet in the cache.
    pub fn deciding(&self, uid: &str) -> bool {
        self.by_uid.contains_key(uid)
    }

    /// Every promised GPU.
    pub fn reservations(&self) -> impl Iterator<Item = &Reservation> {
        self.by_uid.values().flat_map(|(_, r)| r.iter())
    }

    /// Records that `uid` waits for `signature`; false if that is already recorded (nothing to
    /// write).
    pub fn wait_for(&mut self, uid: &str, signature: u64) -> bool {
        self.waiting.insert(uid.to_string(), signature) != Some(signature)
    }

    /// Forgets the recorded reasons of `uid` (its write failed), so the next pass writes again.
    pub fn forget_wait(&mut self, uid: &str) {
        self.waiting.remove(uid);
    }
}

type Shared = Arc<Mutex<InFlight>>;

fn locked(state: &Shared) -> std::sync::MutexGuard<'_, InFlight> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs the loop until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    let state: Shared = Arc::default();
    let writes = Arc::new(Semaphore::new(WRITES_IN_FLIGHT));
    let mut exported = HashSet::new();
    let mut last_full = tokio::time::Instant::now();
    loop {
        let triggered = tokio::select! {
            _ = ctx.schedule.notified() => true,
            _ = tokio::time::sleep_until(last_full + RESYNC) => false,
        };
        // Let a burst of triggers settle into one pass.
        tokio::time::sleep(DEBOUNCE).await;
        // Scanned under the cache's read lock, without copying every job's handle out of it.
        let queued = ctx.stores.jobs.find(is_queued).is_some();
        if skip_pass(triggered, queued, last_full.elapsed()) {
            continue;
        }
        last_full = tokio::time::Instant::now();
        pass(&ctx, &state, &writes, &mut exported).await;
    }
}

/// Whether a wake-up of the loop may skip the pass: it was a trigger (not the resync), no job is
/// queued, and a full pass ran within [`RESYNC`]. Members' inventories trigger the loop (a
/// capacity change may let a waiting job fit) many times a second at 1,000 members; with no job
/// waiting, a pass decides nothing and costs time linear in the jobs held (110 ms at 20,000 jobs,
/// back to back). A full pass still runs every [`RESYNC`] for what it does besides deciding:
/// the free-GPU gauges, stops of preempted attempts to ask for again, the in-flight record.
pub fn skip_pass(triggered: bool, queued: bool, since_full: Duration) -> bool {
    triggered && !queued && since_full < RESYNC
}

/// Whether `job` waits for the scheduler: admitted, Pending, not being deleted.
pub fn is_pending(job: &ComputeJob) -> bool {
    job.metadata.deletion_timestamp.is_none()
        && job.status.as_ref().is_some_and(|s| {
            s.phase == JobPhase::Pending && conditions::is_true(&s.conditions, jc::ADMITTED)
        })
}

/// Whether `job` is new to the hub: it carries the hub's finalizer (so a Placement made for it
/// is cleaned up) but was never admitted nor refused. The loop admits such a job with its first
/// decision when the job controller would only admit it (`lifecycle::admission_deferred`) —
/// except a job that refers to Secrets, which the controller admits once it has read them. A
/// finished job is not new, though the cache keeps no conditions of one at rest (`hub::slim_job`).
pub fn awaiting_admission(job: &ComputeJob) -> bool {
    job.metadata.deletion_timestamp.is_none()
        // Its Secrets are checked by the job controller before it is admitted.
        && !job.spec.template.uses_secrets()
        && job
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == crate::hub::job_controller::FINALIZER))
        && job
            .status
            .as_ref()
            .is_none_or(|s| {
                !s.phase.is_finished() && conditions::find(&s.conditions, jc::ADMITTED).is_none()
            })
}

/// Whether `job` is one the loop decides: waiting, or new to the hub.
pub fn is_queued(job: &ComputeJob) -> bool {
    is_pending(job) || awaiting_admission(job)
}

async fn pass(
    ctx: &Arc<Context>,
    state: &Shared,
    writes: &Arc<Semaphore>,
    exported_before: &mut HashSet<(String, String)>,
) {
    let _timer = ctx.metrics.scheduling_pass_duration.start_timer();
    let jobs = ctx.stores.jobs.state();
    // The records of jobs at rest that the store's snapshot does not hold, read only for a pool
    // with period quotas (the records after the store's snapshot: see `Jobs::new`).
    let records = std::cell::OnceCell::new();
    let members: BTreeMap<String, Arc<MemberCluster>> = ctx
        .stores
        .members
        .state()
        .into_iter()
        .map(|m| (m.name_any(), ctx.stores.priced_member(&m)))
        .collect();
    let mut reservations = snapshot::reservations(&jobs, &members);
    {
        let mut s = locked(state);
        s.prune(&jobs);
        reservations.extend(s.reservations().cloned());
    }

    // GPUs the pool's attempts hold per member and model, for offers that count GPUs.
    let held = if snapshot::any_counted(members.values().map(|m| m.as_ref())) {
        snapshot::held_gpus(&jobs)
    } else {
        HashMap::new()
    };
    let mut exported = HashSet::new();
    for pool in ctx.stores.pools.state() {
        let pool_name = pool.name_any();
        // Tenant jobs see at most the GPUs each offer still offers (its per-model `gpus`).
        let clusters: Vec<_> = members
            .values()
            .filter(|m| m.spec.pool == pool_name)
            .map(|m| {
                let mut c =
                    snapshot::cluster_state(&pool, m, ctx.stores.bond(&m.name_any()).as_deref());
                snapshot::cap_offered(&mut c, &snapshot::offered_left(m, &held), &reservations);
                c
            })
            .collect();
        exported.extend(export_free_gpus(ctx, &clusters, &reservations));
        let keyless = snapshot::keyless_members(members.values().map(|m| m.as_ref()));
        let (hub_jobs, tenant_jobs): (Vec<_>, Vec<_>) = jobs
            .iter()
            .filter(|j| j.spec.pool == pool_name)
            .cloned()
            .partition(|j| challenges::is_hub_job(j));
        let mut rounds: Vec<(Arc<GpuPool>, Round)> = Vec::new();
        // The hub's challenges first, each only on the member it verifies, as in a pool without
        // chain, bond, quotas, fair share or verification (ADR 0027): they pay nothing and are
        // what verifies a member in the first place.
        if !hub_jobs.is_empty() {
            let hub_pool = Arc::new(challenges::hub_pool(&pool));
            let mut by_member: BTreeMap<&str, Vec<Arc<ComputeJob>>> = BTreeMap::new();
            for j in &hub_jobs {
                if let Some(m) = challenges::verifies(j) {
                    by_member.entry(m).or_default().push(Arc::clone(j));
                }
            }
            for (member, js) in by_member {
                let Some(m) = members.get(member).filter(|m| m.spec.pool == pool_name) else {
                    continue;
                };
                let one = [snapshot::cluster_state(&hub_pool, m, None)];
                let round = {
                    let mut s = locked(state);
                    decide(
                        &js,
                        &hub_pool,
                        &one,
                        &keyless,
                        &mut reservations,
                        &mut s,
                        &now(),
                    )
                };
                match round {
                    Ok(r) => {
                        // A challenge left waiting holds the GPUs free on the node it needs, so
                        // the tenant jobs decided next do not keep that node busy (ADR 0027).
                        if r.pending > 0 {
                            let waiting = js.iter().filter(|j| {
                                j.status
                                    .as_ref()
                                    .is_none_or(|s| s.placement.is_none() && !s.phase.is_finished())
                            });
                            for j in waiting {
                                if let Some(h) = challenges::hold(j, &one[0], &reservations) {
                                    reservations.push(h);
                                }
                            }
                        }
                        rounds.push((Arc::clone(&hub_pool), r))
                    }
                    Err(e) => {
                        tracing::error!(pool = %pool_name, %member, error = %e, "scheduling challenges failed")
                    }
                }
            }
        }
        // Preempted attempts whose stop was not written after their mark: ask again.
        for (cluster, placement, stop) in preemption::unstopped(ctx, &pool, &tenant_jobs) {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                if let Err(e) = preemption::request_stop(&ctx, &cluster, &placement, &stop).await {
                    tracing::warn!(%placement, error = %e, "asking the member to stop a preempted attempt");
                }
            });
        }
        let running =
            if pool.spec.preemption.is_never() && pool.spec.reclaim_within_cohort.is_never() {
                vec![]
            } else {
                preemption::candidates(&pool_name, &tenant_jobs, &members)
            };
        let at_rest: &[Arc<JobAtRest>] = if period_usage::has_period_quotas(&pool) {
            records.get_or_init(|| at_rest::not_in(&jobs, ctx.stores.job_uids.records()))
        } else {
            &[]
        };
        let round = {
            let mut s = locked(state);
            decide_counting(
                &tenant_jobs,
                at_rest,
                &pool,
                &clusters,
                &keyless,
                &mut reservations,
                &mut s,
                &now(),
                &running,
            )
        };
        match round {
            Ok(r) => rounds.push((Arc::clone(&pool), r)),
            Err(e) => {
                tracing::error!(pool = %pool_name, error = %e, "scheduling pass failed");
            }
        }
        let pending: usize = rounds.iter().map(|(_, r)| r.pending).sum();
        ctx.metrics
            .pending_jobs
            .with_label_values(&[&pool_name])
            .set(pending as i64);
        if pending > 0 {
            ctx.metrics
                .scheduling_passes
                .with_label_values(&[&pool_name])
                .inc();
        }
        for (pool, round) in rounds {
            let strategy = snapshot::policy(&pool).strategy;
            for Planned {
                job,
                admitted,
                write,
            } in round.writes
            {
                // Backpressure: a pass waits only when WRITES_IN_FLIGHT writes are already out.
                let Ok(permit) = writes.clone().acquire_owned().await else {
                    return;
                };
                let (ctx, state, pool) = (ctx.clone(), state.clone(), pool.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let uid = job.uid().unwrap_or_default();
                    let job = match admitted {
                        // A new job: its decision is written with its admission, as one status.
                        Some(status) => {
                            let mut j = ComputeJob::clone(&job);
                            j.status = Some(*status);
                            Arc::new(j)
                        }
                        None => job,
                    };
                    match write {
                        Write::Place(a) => {
                            if !place(&ctx, &job, &pool, &a, strategy).await {
                                locked(&state).release(&uid);
                                ctx.schedule.notify_one();
                            }
                        }
                        Write::Stop(stop) => {
                            if !preemption::stop_victim(&ctx, &job, &stop).await {
                                locked(&state).forget_preemption(&stop.preemptor);
                                ctx.schedule.notify_one();
                            }
                        }
                        Write::Wait(reason, explanation) => {
                            if let Err(e) = record_wait(&ctx, &job, reason, &explanation).await {
                                let key = snapshot::job_key(&job);
                                tracing::warn!(job = %key, error = %e, "recording why a job waits");
                                locked(&state).forget_wait(&uid);
                            }
                        }
                    }
                });
            }
        }
    }
    // Series of members (or models) that are gone disappear, without a gap for the others.
    for (cluster, model) in exported_before.difference(&exported) {
        let _ = ctx.metrics.free_gpus.remove_label_values(&[cluster, model]);
    }
    *exported_before = exported;
}

/// What one pool's share of a pass decided.
pub struct Round {
    /// Jobs of the pool waiting for a decision (not counting those being written).
    pub pending: usize,
    /// The writes to make.
    pub writes: Vec<Planned>,
}

/// One job's write.
pub struct Planned {
    /// The job as the cache shows it (its resourceVersion guards the write).
    pub job: Arc<ComputeJob>,
    /// For a job new to the hub, its status once admitted: the write starts from it.
    pub admitted: Option<Box<ComputeJobStatus>>,
    /// What to write.
    pub write: Write,
}

/// Decides the pending jobs of `pool` (those not already being decided) against `clusters` and
/// `reservations` (the cache's and every promise in flight), and updates `in_flight` *before*
/// anything is written: a placement's GPUs are promised (and added to `reservations` for the
/// pools after this one), a reason to wait is recorded. Jobs new to the hub are decided too when
/// admitting them is all the job controller would do (`lifecycle::admission_deferred`, at `now`):
/// their write carries the admission. Returns the writes still to make: a reason to wait that is
/// already recorded is not written again. Jobs that use Secrets are not placed on the `keyless`
/// members (those that published no sealing key, ADR 0020). No preemption: see [`decide_with`].
pub fn decide(
    jobs: &[Arc<ComputeJob>],
    pool: &GpuPool,
    clusters: &[gpufed_scheduler::ClusterState],
    keyless: &[String],
    reservations: &mut Vec<Reservation>,
    in_flight: &mut InFlight,
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Result<Round, gpufed_scheduler::ScheduleError> {
    decide_with(
        jobs,
        pool,
        clusters,
        keyless,
        reservations,
        in_flight,
        now,
        &[],
    )
}

/// [`decide`], and in a pool with `spec.preemption: LowerPriority` the preemptions (ADR 0025):
/// preemptors whose victims are stopping are decided first, each on its own (placed if the GPUs
/// show free, else the GPUs it was promised are kept from the rest of the pass); after the pass,
/// the jobs left without a cluster that may preempt are planned against `running` (the attempts
/// that may be evicted, [`preemption::candidates`]), and each plan writes a stop on its victims
/// and the reason the preemptor waits.
#[allow(clippy::too_many_arguments)]
pub fn decide_with(
    jobs: &[Arc<ComputeJob>],
    pool: &GpuPool,
    clusters: &[gpufed_scheduler::ClusterState],
    keyless: &[String],
    reservations: &mut Vec<Reservation>,
    in_flight: &mut InFlight,
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    running: &[Running],
) -> Result<Round, gpufed_scheduler::ScheduleError> {
    decide_counting(
        jobs,
        &[],
        pool,
        clusters,
        keyless,
        reservations,
        in_flight,
        now,
        running,
    )
}

/// [`decide_with`], with the records of the jobs at rest (ADR 0041; none of them among `jobs`),
/// which count towards the pool's period quotas.
#[allow(clippy::too_many_arguments)]
pub fn decide_counting(
    jobs: &[Arc<ComputeJob>],
    at_rest: &[Arc<JobAtRest>],
    pool: &GpuPool,
    clusters: &[gpufed_scheduler::ClusterState],
    keyless: &[String],
    reservations: &mut Vec<Reservation>,
    in_flight: &mut InFlight,
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    running: &[Running],
) -> Result<Round, gpufed_scheduler::ScheduleError> {
    let pool_name = pool.name_any();
    let mut admitted: HashMap<String, Box<ComputeJobStatus>> = HashMap::new();
    let pending: Vec<&Arc<ComputeJob>> = jobs
        .iter()
        .filter(|j| j.spec.pool == pool_name)
        .filter(|j| j.uid().is_some_and(|uid| !in_flight.deciding(&uid)))
        .filter(|j| {
            if is_pending(j) {
                return true;
            }
            if !awaiting_admission(j) {
                return false;
            }
            let world = lifecycle::admission_world(j, Some(pool));
            let out = lifecycle::reconcile(j, &world, now);
            if !lifecycle::admission_deferred(j, &world, &out) {
                // Refused, or in a pool with a chain: the job controller writes its admission.
                return false;
            }
            admitted.insert(snapshot::job_key(j), Box::new(out.status));
            true
        })
        .collect();
    let mut round = Round {
        pending: pending.len(),
        writes: vec![],
    };
    if pending.is_empty() {
        return Ok(round);
    }
    let requests: Vec<_> = pending
        .iter()
        .map(|j| {
            let mut r = snapshot::job_request(j, snapshot::creation_order(j));
            if j.spec.template.uses_secrets() {
                r.exclude.extend(keyless.iter().cloned());
            }
            // A new job is queued at the priority its admission grants.
            if let Some(p) = admitted.get(&r.key).and_then(|s| s.priority) {
                r.priority = p;
            }
            // Opting in to unverified members only where the pool allows it (ADR 0031).
            r.allow_unverified &= pool
                .spec
                .verification
                .as_ref()
                .is_none_or(|v| v.allow_unverified_jobs);
            r
        })
        .collect();
    // GPUs each namespace holds: the cache's unfinished attempts, or the decision in flight.
    let usage: Vec<Usage> = jobs
        .iter()
        .filter(|j| j.spec.pool == pool_name)
        .filter_map(
            |j| match j.uid().and_then(|uid| in_flight.charged(&uid).cloned()) {
                Some(u) => Some(u),
                None => snapshot::quota_usage(j),
            },
        )
        .collect();
    let mut usage = usage;
    let mut book = QuotaBook::new(&snapshot::quotas(pool), &usage);
    if period_usage::has_period_quotas(pool) {
        // GPU-hours and spend of the current periods (ADR 0019), decisions in flight included.
        let now = period_usage::unix(now);
        let spent = period_usage::pool_usage(
            pool,
            at_rest::cached(jobs).chain(at_rest.iter().map(|r| JobRef::AtRest(r))),
            |j| {
                j.uid()
                    .and_then(|uid| in_flight.charged(&uid).map(|u| u.model.clone()))
            },
            now,
        );
        book = book.with_periods(now, &spent);
    }
    let policy = snapshot::policy(pool);
    // Preemptions started by earlier passes: forgotten once the preemptor no longer waits or its
    // victims had their time; the others are decided first, each on its own.
    let queued: HashSet<&str> = requests.iter().map(|r| r.key.as_str()).collect();
    in_flight
        .preempting
        .retain(|k, o| o.pool != pool_name || (queued.contains(k.as_str()) && !o.expired(now)));
    let mut outstanding: Vec<Outstanding> = in_flight
        .preempting
        .values()
        .filter(|o| o.pool == pool_name)
        .cloned()
        .collect();
    outstanding.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.plan.job.cmp(&b.plan.job))
    });
    let mut held: Vec<Reservation> = vec![];
    let mut early: Vec<(String, Decision)> = vec![];
    let mut draining: Vec<Outstanding> = vec![];
    for o in &outstanding {
        let Some(req) = requests.iter().find(|r| r.key == o.plan.job) else {
            continue;
        };
        let mut seen = reservations.clone();
        seen.extend(held.iter().cloned());
        let mut d = schedule_batch_with_quotas(
            std::slice::from_ref(req),
            clusters,
            &seen,
            &policy,
            &mut book,
        )?;
        match d.pop() {
            Some((key, Decision::Place(a))) => {
                held.extend(a.nodes.iter().map(|(node, replicas)| Reservation {
                    cluster: a.cluster.clone(),
                    node: node.clone(),
                    gpus: replicas.saturating_mul(req.gpus_per_replica),
                }));
                usage.push(Usage {
                    namespace: key.split('/').next().unwrap_or_default().to_string(),
                    model: a.model.clone(),
                    gpus: u64::from(req.replicas) * u64::from(req.gpus_per_replica),
                });
                in_flight.preempting.remove(&key);
                early.push((key, Decision::Place(a)));
            }
            _ => {
                held.extend(o.claim.iter().cloned());
                draining.push(o.clone());
            }
        }
    }
    let decided_early: HashSet<&str> = outstanding.iter().map(|o| o.plan.job.as_str()).collect();
    let rest: Vec<JobRequest> = requests
        .iter()
        .filter(|r| !decided_early.contains(r.key.as_str()))
        .cloned()
        .collect();
    let mut seen = reservations.clone();
    seen.extend(held.iter().cloned());
    let requests = rest;
    let mut hold: Option<Hold> = None;
    let decisions = match snapshot::fair_share(pool) {
        None => schedule_batch_with_quotas(&requests, clusters, &seen, &policy, &mut book)?,
        Some(fair) => {
            let holder = in_flight.holder(&pool_name).map(str::to_string);
            let pass = fair_pass(
                &requests,
                clusters,
                &seen,
                pool,
                &mut book,
                &fair,
                Before {
                    usage: &usage,
                    holder: holder.as_deref(),
                },
            )?;
            in_flight.set_holder(&pool_name, pass.hold.as_ref());
            hold = pass.hold;
            pass.decisions
        }
    };
    let by_key: HashMap<String, &Arc<ComputeJob>> =
        pending.iter().map(|j| (snapshot::job_key(j), *j)).collect();
    let mut unplaced: Vec<(String, Arc<ComputeJob>, String, Decision)> = vec![];
    for (key, decision) in early.into_iter().chain(decisions) {
        let Some(job) = by_key.get(&key).map(|j| Arc::clone(j)) else {
            continue;
        };
        let Some(uid) = job.uid() else {
            continue;
        };
        match decision {
            Decision::Place(a) => {
                let attempt = job.status.as_ref().map(|s| s.attempt).unwrap_or(0) + 1;
                let gpus = promised(&job, &a);
                reservations.extend(gpus.iter().cloned());
                in_flight.promise(&uid, attempt, gpus);
                in_flight.charge(
                    &uid,
                    Usage {
                        namespace: job.metadata.namespace.clone().unwrap_or_default(),
                        model: a.model.clone(),
                        gpus: u64::from(job.spec.replicas) * u64::from(job.spec.gpus_per_replica),
                    },
                );
                round.writes.push(Planned {
                    admitted: admitted.remove(&key),
                    job,
                    write: Write::Place(a),
                });
            }
            other => unplaced.push((key, job, uid, other)),
        }
    }
    // Preemption (ADR 0025): the jobs left without a cluster that may evict lower priorities.
    let mut preempting: HashSet<String> = HashSet::new();
    if !pool.spec.preemption.is_never() && !running.is_empty() {
        let preemptors: Vec<JobRequest> = unplaced
            .iter()
            .filter(|(_, job, _, d)| {
                matches!(d, Decision::NoFit(_))
                    && pool
                        .spec
                        .may_preempt(job.spec.priority_class_name.as_deref())
            })
            .filter_map(|(key, ..)| requests.iter().find(|r| &r.key == key).cloned())
            .collect();
        // Attempts an earlier preemption evicts are stopping: never evicted twice.
        let candidates: Vec<Running> = running
            .iter()
            .filter(|r| !outstanding.iter().any(|o| o.evicts(&r.job, r.attempt)))
            .cloned()
            .collect();
        if !preemptors.is_empty() && !candidates.is_empty() {
            let mut taken = reservations.clone();
            taken.extend(held.iter().cloned());
            let grace = pool.spec.preemption_grace_period().as_duration();
            let grace_seconds = preemption::grace_seconds(pool);
            for plan in plan_preemptions(&preemptors, clusters, &taken, &candidates, &policy)? {
                let Some(req) = preemptors.iter().find(|r| r.key == plan.job) else {
                    continue;
                };
                let gpus = u64::from(req.replicas) * u64::from(req.gpus_per_replica);
                for v in &plan.victims {
                    let Some(victim) = jobs.iter().find(|j| snapshot::job_key(j) == v.job) else {
                        continue;
                    };
                    round.writes.push(Planned {
                        job: Arc::clone(victim),
                        admitted: None,
                        write: Write::Stop(Box::new(Stop {
                            attempt: v.attempt,
                            preemptor: plan.job.clone(),
                            pool: pool_name.clone(),
                            message: preemption::victim_message(
                                &plan,
                                req.priority,
                                v.priority,
                                gpus,
                                grace_seconds,
                            ),
                            grace_seconds,
                        })),
                    });
                }
                let o = Outstanding {
                    pool: pool_name.clone(),
                    priority: req.priority,
                    claim: preemption::claim(&plan, req.gpus_per_replica),
                    plan,
                    since: now.clone(),
                    grace,
                    reclaim: None,
                };
                preempting.insert(o.plan.job.clone());
                in_flight.preempting.insert(o.plan.job.clone(), o.clone());
                draining.push(o);
            }
        }
    }
    // Reclaiming lent quota (ADR 0025, spec.reclaimWithinCohort): jobs still without a cluster
    // take back GPUs of their nominal quota that their cohort borrowed, through the same stops.
    let reclaim_policy = reclaim::policy(pool);
    let quotas = snapshot::quotas(pool);
    if reclaim_policy != ReclaimPolicy::Never && !running.is_empty() {
        let claimants: Vec<JobRequest> = unplaced
            .iter()
            .filter(|(key, _, _, d)| matches!(d, Decision::NoFit(_)) && !preempting.contains(key))
            .filter_map(|(key, ..)| requests.iter().find(|r| &r.key == key).cloned())
            .collect();
        let candidates: Vec<Running> = running
            .iter()
            .filter(|r| {
                !in_flight
                    .preempting
                    .values()
                    .any(|o| o.evicts(&r.job, r.attempt))
            })
            .cloned()
            .collect();
        if !claimants.is_empty() && !candidates.is_empty() {
            let mut taken = reservations.clone();
            taken.extend(held.iter().cloned());
            taken.extend(draining.iter().flat_map(|o| o.claim.iter().cloned()));
            let model_of = reclaim::models_of(jobs);
            let grace = pool.spec.preemption_grace_period().as_duration();
            let grace_seconds = preemption::grace_seconds(pool);
            let plans = reclaim::plan_reclaims(
                &claimants,
                &quotas,
                clusters,
                &taken,
                &candidates,
                &model_of,
                reclaim_policy,
                &policy,
            )?;
            for r in plans {
                let Some(req) = claimants.iter().find(|c| c.key == r.plan.job) else {
                    continue;
                };
                let gpus = u64::from(req.replicas) * u64::from(req.gpus_per_replica);
                for (v, why) in r.plan.victims.iter().zip(&r.why) {
                    let Some(victim) = jobs.iter().find(|j| snapshot::job_key(j) == v.job) else {
                        continue;
                    };
                    round.writes.push(Planned {
                        job: Arc::clone(victim),
                        admitted: None,
                        write: Write::Stop(Box::new(Stop {
                            attempt: v.attempt,
                            preemptor: r.plan.job.clone(),
                            pool: pool_name.clone(),
                            message: reclaim::victim_message(&r, why, gpus, grace_seconds),
                            grace_seconds,
                        })),
                    });
                }
                let o = Outstanding {
                    pool: pool_name.clone(),
                    priority: req.priority,
                    claim: preemption::claim(&r.plan, req.gpus_per_replica),
                    reclaim: Some(reclaim::claimant_text(&r, grace)),
                    plan: r.plan,
                    since: now.clone(),
                    grace,
                };
                preempting.insert(o.plan.job.clone());
                in_flight.preempting.insert(o.plan.job.clone(), o.clone());
                draining.push(o);
            }
        }
    }
    // Preemptors wait for their victims to stop.
    for o in &draining {
        let Some(job) = by_key.get(&o.plan.job).map(|j| Arc::clone(j)) else {
            continue;
        };
        let Some(uid) = job.uid() else {
            continue;
        };
        if in_flight.wait_for(&uid, preemption::signature(&o.plan)) {
            round.writes.push(Planned {
                admitted: admitted.remove(&o.plan.job),
                job,
                write: Write::Wait(
                    WAIT_PREEMPTING,
                    o.reclaim
                        .clone()
                        .unwrap_or_else(|| preemption::preemptor_text(&o.plan, o.grace)),
                ),
            });
        }
    }
    for (key, job, uid, decision) in unplaced {
        if preempting.contains(&key) {
            continue;
        }
        match decision {
            Decision::Place(_) => {}
            Decision::NoFit(reasons) => {
                // Which clusters give which kind of reason, not the live numbers in them (free
                // GPUs): a capacity change elsewhere does not rewrite every waiting job.
                let held = hold.as_ref().filter(|h| h.job == key);
                // Quota its cohort borrowed and did not give back (ADR 0025, reclaimWithinCohort).
                let lent = requests
                    .iter()
                    .find(|r| r.key == key)
                    .and_then(|r| reclaim::borrowing_note(r, &quotas, &usage, reclaim_policy));
                let signature = reasons.signature().0
                    ^ held.map_or(0, hold_signature)
                    ^ lent.as_ref().map_or(0, |(_, s)| *s);
                if in_flight.wait_for(&uid, signature) {
                    let mut text = explain(&reasons);
                    if let Some(h) = held {
                        text = format!("{text}; {}", held_text(h));
                    }
                    if let Some((note, _)) = &lent {
                        text = format!("{text}; {note}");
                    }
                    round.writes.push(Planned {
                        admitted: admitted.remove(&key),
                        job,
                        write: Write::Wait(WAIT_NO_FIT, text),
                    });
                }
            }
            Decision::OverQuota(over) => {
                // Rewritten when the group it waits on changes, not when the counts in it do.
                let signature = over_quota_signature(&over);
                if in_flight.wait_for(&uid, signature) {
                    round.writes.push(Planned {
                        admitted: admitted.remove(&key),
                        job,
                        write: Write::Wait(WAIT_OVER_QUOTA, over.to_string()),
                    });
                }
            }
        }
    }
    Ok(round)
}

/// A write a decision needs.
#[derive(Debug)]
pub enum Write {
    /// Record the placement (then create the Placement).
    Place(Assignment),
    /// Record why the job waits: the reason (`NoFit`, `OverQuota`, `Preempting`) and the
    /// explanation.
    Wait(&'static str, String),
    /// Stop a running attempt for a preemptor ([`preemption::stop_victim`]).
    Stop(Box<Stop>),
}

/// The reason of a job that no cluster fits.
pub const WAIT_NO_FIT: &str = "NoFit";

/// The reason of a job whose namespace has no quota left for it (ADR 0019).
pub const WAIT_OVER_QUOTA: &str = "OverQuota";

/// The reason of a job waiting for the attempts it preempted to stop (ADR 0025).
pub const WAIT_PREEMPTING: &str = "Preempting";

/// The fair pass (ADR 0025) over the pool's requests.
fn fair_pass(
    requests: &[gpufed_scheduler::JobRequest],
    clusters: &[gpufed_scheduler::ClusterState],
    reservations: &[Reservation],
    pool: &GpuPool,
    book: &mut QuotaBook,
    fair: &FairShare,
    before: Before<'_>,
) -> Result<gpufed_scheduler::FairPass, gpufed_scheduler::ScheduleError> {
    schedule_batch_fair(
        requests,
        clusters,
        reservations,
        &snapshot::policy(pool),
        book,
        fair,
        before,
    )
}

/// What a holder's explanation adds: `nodes n1, n2 of alpha are held for this job while their
/// attempts end (fair share, ADR 0025)`, or `node n1 of alpha is held … while its attempts end …`.
pub fn held_text(h: &Hold) -> String {
    let nodes: Vec<&str> = h.nodes.iter().map(|(n, _)| n.as_str()).collect();
    let (noun, verb, whose) = if nodes.len() == 1 {
        ("node", "is", "its")
    } else {
        ("nodes", "are", "their")
    };
    format!(
        "{noun} {} of {} {verb} held for this job while {whose} attempts end (fair share, ADR 0025)",
        nodes.join(", "),
        h.cluster,
    )
}

/// A fingerprint of a hold (cluster and nodes), mixed into the holder's no-fit signature so its
/// explanation is rewritten once when it starts or stops holding.
fn hold_signature(h: &Hold) -> u64 {
    let mut v: u64 = 0xcbf2_9ce4_8422_2325;
    for part in std::iter::once(h.cluster.as_str()).chain(h.nodes.iter().map(|(n, _)| n.as_str())) {
        for b in part.bytes().chain([0]) {
            v ^= u64::from(b);
            v = v.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    v
}

/// A fingerprint of what an over-quota job waits on (namespace, group, model), not the counts;
/// it never equals a no-fit signature of the same job in practice (64-bit hashes of different
/// inputs).
fn over_quota_signature(over: &gpufed_scheduler::OverQuota) -> u64 {
    // FNV-1a: the same value in every process, like NoFit::signature.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [
        "over-quota",
        over.namespace.as_str(),
        over.group.as_deref().unwrap_or("-"),
        over.model.as_str(),
        match over.limit {
            gpufed_scheduler::Limit::Gpus => "gpus",
            gpufed_scheduler::Limit::GpuHours { .. } => "gpu-hours",
            gpufed_scheduler::Limit::Spend { .. } => "spend",
        },
    ] {
        for b in part.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Records a placement decision and, for a pool without a chain, creates its Placement. Returns
/// whether the decision was recorded (false: the job changed meanwhile, or the write failed).
async fn place(
    ctx: &Context,
    job: &ComputeJob,
    pool: &GpuPool,
    a: &Assignment,
    strategy: gpufed_scheduler::Strategy,
) -> bool {
    let key = snapshot::job_key(job);
    let status = match record_placement(ctx, job, pool, a, strategy).await {
        Ok(Some(status)) => status,
        Ok(None) => return false,
        Err(e) => {
            tracing::warn!(job = %key, error = %e, "recording a placement");
            return false;
        }
    };
    if pool.spec.chain.is_some() {
        // The Placement waits for the escrow lock (the job controller's money step).
        return true;
    }
    let Some(record) = status.attempts.iter().find(|r| r.attempt == status.attempt) else {
        return true;
    };
    let placement = lifecycle::placement_for(job, record, pool.spec.usage_check.as_ref());
    let namespace = job.namespace().unwrap_or_default();
    if let Err(e) = crate::hub::job_controller::create_placement(ctx, &namespace, &placement).await
    {
        // Not lost: the job controller creates any missing Placement of a placed attempt.
        tracing::warn!(job = %key, error = %e, "creating the placement; the job controller will retry");
    }
    true
}

/// GPUs a decision takes, as reservations on its planned nodes.
fn promised(job: &ComputeJob, a: &Assignment) -> Vec<Reservation> {
    a.nodes
        .iter()
        .map(|(node, replicas)| Reservation {
            cluster: a.cluster.clone(),
            node: node.clone(),
            gpus: replicas * job.spec.gpus_per_replica,
        })
        .collect()
}

/// Sets the free-GPU gauge of every `(cluster, model)` and returns the series it set.
fn export_free_gpus(
    ctx: &Context,
    clusters: &[gpufed_scheduler::ClusterState],
    reservations: &[Reservation],
) -> Vec<(String, String)> {
    let reserved_on = snapshot::reserved_by_node(reservations);
    let mut set = vec![];
    for c in clusters {
        let mut by_model: BTreeMap<&str, i64> = BTreeMap::new();
        for n in &c.nodes {
            let reserved = reserved_on
                .get(&(c.name.as_str(), n.name.as_str()))
                .copied()
                .unwrap_or(0);
            *by_model.entry(n.model.as_str()).or_default() +=
                i64::from(n.offered_gpus().saturating_sub(reserved));
        }
        for (model, free) in by_model {
            ctx.metrics
                .free_gpus
                .with_label_values(&[&c.name, model])
                .set(free as f64);
            set.push((c.name.clone(), model.to_string()));
        }
    }
    set
}

/// The signed offer that asked `a.ask` for `a.model`, as the attempt's proof of the provider's
/// price; none for an unsigned offer, or one whose ask for the model is not the one the pass
/// used (the offer changed since).
pub fn offer_proof(offer: SignedOffer, a: &Assignment) -> Option<SignedOffer> {
    offer.signature.as_ref()?;
    offer
        .prices
        .iter()
        .any(|p| p.model == a.model && p.price_per_gpu_hour.atto() == a.ask)
        .then_some(offer)
}

/// The status of a job just placed by `a`: a new attempt, phase Placed (or Funding in pools with a
/// chain), with `offer` as the proof of the provider's ask when it was priced by a signed offer.
pub fn placed_status(
    job: &ComputeJob,
    pool: &GpuPool,
    a: &Assignment,
    provider: Option<EvmAddress>,
    offer: Option<SignedOffer>,
    explanation: String,
    at: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> ComputeJobStatus {
    let mut st = job.status.clone().unwrap_or_default();
    let attempt = st.attempt + 1;
    let uid = job.uid().unwrap_or_default();
    let name = placement_name(&uid, attempt);
    let price = TokenAmount::from_atto(a.price);
    let has_chain = pool.spec.chain.is_some();
    st.attempt = attempt;
    st.phase = if has_chain {
        JobPhase::Funding
    } else {
        JobPhase::Placed
    };
    st.placement = Some(Box::new(PlacementRef {
        cluster: a.cluster.clone(),
        namespace: member_namespace(&a.cluster),
        name: name.clone(),
        model: a.model.clone(),
        price_per_gpu_hour: price,
    }));
    st.reason = None;
    st.message = None;
    st.explanation = Some(explanation.clone());
    st.attempts.push(AttemptRecord {
        attempt,
        cluster: a.cluster.clone(),
        placement: name,
        model: a.model.clone(),
        price_per_gpu_hour: price,
        provider,
        phase: AttemptPhase::Placed,
        reason: None,
        message: None,
        placed_time: Some(at.clone()),
        start_time: None,
        finish_time: None,
        gpu_seconds: 0,
        exits: vec![],
        planned_nodes: a
            .nodes
            .iter()
            .map(|(node, replicas)| PlannedNode {
                node: node.clone(),
                replicas: *replicas,
            })
            .collect(),
        settlement: has_chain.then(|| {
            Box::new(crate::hub::settlement::unfunded(chain_job_id_hex(
                &uid, attempt,
            )))
        }),
        unverified_member: false,
        offer: offer.map(Box::new),
        usage_check: None,
    });
    conditions::set_condition(
        &mut st.conditions,
        conditions::condition(
            jc::SCHEDULED,
            true,
            "Placed",
            explanation,
            job.metadata.generation,
            at.clone(),
        ),
    );
    // What the job controller would add next, written now so it has nothing to rewrite.
    lifecycle::refresh_usage(&mut st);
    st
}

async fn record_placement(
    ctx: &Context,
    job: &ComputeJob,
    pool: &GpuPool,
    a: &Assignment,
    strategy: gpufed_scheduler::Strategy,
) -> crate::error::Result<Option<ComputeJobStatus>> {
    let at = now();
    let mut explanation = explain_placement(a, a.fitting_clusters, strategy);
    let member = ctx.stores.member(&a.cluster);
    let provider = member.as_ref().and_then(|m| m.spec.wallet.clone());
    let offer = member
        .as_ref()
        .and_then(|m| ctx.stores.accepted_offer(m))
        .and_then(|o| offer_proof(o, a));
    let mut status = placed_status(job, pool, a, provider, offer, explanation.clone(), &at);
    // Placed on a member whose GPUs are not verified yet: the job opted in (ADR 0031).
    if member
        .is_some_and(|m| !crate::hub::challenges::verification_state(pool, &m).allows_placement())
    {
        explanation.push_str("; its GPUs are not verified yet (the job sets spec.allowUnverified)");
        status.explanation = Some(explanation.clone());
        if let Some(r) = status.attempts.last_mut() {
            r.unverified_member = true;
        }
    }
    if write_namespaced(&ctx.client, job, &status).await? == Written::Conflict {
        return Ok(None);
    }
    ctx.metrics.decisions.with_label_values(&["placed"]).inc();
    // Waiting started when the job was queued, or when its previous attempt ended.
    let waiting_since = job.status.as_ref().and_then(|s| {
        let last_end = s
            .attempts
            .iter()
            .filter_map(|a| a.finish_time.clone())
            .max();
        match (s.queued_time.clone(), last_end) {
            (Some(q), Some(e)) => Some(q.max(e)),
            (q, e) => q.or(e),
        }
    });
    if let Some(queued) = waiting_since.as_ref() {
        let waited = at.0.duration_since(queued.0).as_secs_f64().max(0.0);
        ctx.metrics
            .placement_latency
            .with_label_values(&[&job.spec.pool])
            .observe(waited);
    }
    tracing::info!(job = %job.name_any(), cluster = %a.cluster, model = %a.model, attempt = status.attempt, "placed");
    ctx.event(
        job,
        false,
        "Placed",
        "Schedule",
        format!("attempt {}: {explanation}", status.attempt),
    );
    Ok(Some(status))
}

async fn record_wait(
    ctx: &Context,
    job: &ComputeJob,
    reason: &'static str,
    explanation: &str,
) -> crate::error::Result<()> {
    let current = job.status.clone().unwrap_or_default();
    if current.explanation.as_deref() == Some(explanation)
        && current.reason.as_deref() == Some(reason)
    {
        return Ok(());
    }
    // Counted when the reason a job waits changes, not at every pass.
    let (result, event) = match reason {
        WAIT_OVER_QUOTA => ("overquota", "Pending"),
        WAIT_PREEMPTING => ("preempting", "Preempting"),
        _ => ("nofit", "Pending"),
    };
    ctx.metrics.decisions.with_label_values(&[result]).inc();
    let mut st: ComputeJobStatus = current;
    st.reason = Some(reason.into());
    st.explanation = Some(explanation.to_string());
    conditions::set_condition(
        &mut st.conditions,
        conditions::condition(
            jc::SCHEDULED,
            false,
            reason,
            explanation,
            job.metadata.generation,
            now(),
        ),
    );
    if write_namespaced(&ctx.client, job, &st).await? == Written::Yes {
        ctx.event(
            job,
            event == "Pending",
            event,
            "Schedule",
            explanation.to_string(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufed_crds::testing::job;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn a_trigger_with_no_job_queued_skips_the_pass_until_the_resync_is_due() {
        let recent = RESYNC / 2;
        assert!(skip_pass(true, false, recent), "nothing to decide");
        assert!(
            !skip_pass(true, true, recent),
            "a queued job is decided at once"
        );
        assert!(!skip_pass(false, false, recent), "the resync always runs");
        assert!(
            !skip_pass(true, false, RESYNC),
            "triggers that never stop do not hold off the resync"
        );
    }

    #[test]
    fn a_holders_explanation_names_its_held_nodes() {
        let mut h = Hold {
            job: "team-a/big".into(),
            cluster: "alpha".into(),
            model: "H100".into(),
            nodes: vec![("alpha-0".into(), 4)],
        };
        assert_eq!(
            held_text(&h),
            "node alpha-0 of alpha is held for this job while its attempts end (fair share, ADR 0025)"
        );
        let one = hold_signature(&h);
        h.nodes.push(("alpha-1".into(), 4));
        assert_eq!(
            held_text(&h),
            "nodes alpha-0, alpha-1 of alpha are held for this job while their attempts end (fair \
             share, ADR 0025)"
        );
        assert_ne!(hold_signature(&h), one);
    }

    #[test]
    fn the_holder_is_remembered_per_pool_until_a_pass_has_none() {
        let mut f = InFlight::default();
        let h = Hold {
            job: "team-a/big".into(),
            cluster: "alpha".into(),
            model: "H100".into(),
            nodes: vec![("alpha-0".into(), 4)],
        };
        f.set_holder("shared", Some(&h));
        assert_eq!(f.holder("shared"), Some("team-a/big"));
        assert_eq!(f.holder("other"), None);
        f.set_holder("shared", None);
        assert_eq!(f.holder("shared"), None);
    }

    fn assignment() -> Assignment {
        Assignment {
            cluster: "beta".into(),
            model: "A100".into(),
            price: 1_200_000_000_000_000_000,
            ask: 1_200_000_000_000_000_000,
            nodes: vec![("b-1".into(), 2), ("b-2".into(), 1)],
            free_after: 5,
            fitting_clusters: 2,
        }
    }

    fn pool() -> GpuPool {
        gpufed_crds::testing::pool("default")
    }

    #[test]
    fn a_placement_decision_opens_the_next_attempt_with_its_planned_nodes() {
        let j = job("train").replicas(3).gpus(2).build();
        let at = Time(k8s_openapi::jiff::Timestamp::from_second(9).unwrap());
        let st = placed_status(
            &j,
            &pool(),
            &assignment(),
            None,
            None,
            "placed on beta".into(),
            &at,
        );
        assert_eq!(st.attempt, 1);
        assert_eq!(st.phase, JobPhase::Placed);
        let p = st.placement.unwrap();
        assert_eq!(
            (p.cluster.as_str(), p.namespace.as_str()),
            ("beta", "gpufed-member-beta")
        );
        assert_eq!(p.price_per_gpu_hour.to_string(), "1.20");
        let rec = &st.attempts[0];
        assert_eq!(rec.planned_nodes.len(), 2);
        assert_eq!(rec.placement, p.name);
        assert!(rec.settlement.is_none(), "no chain, no escrow");
        assert!(conditions::is_true(&st.conditions, jc::SCHEDULED));
    }

    #[test]
    fn promised_gpus_are_replicas_times_gpus_on_each_planned_node() {
        let j = job("train").replicas(3).gpus(2).build();
        let r = promised(&j, &assignment());
        assert_eq!(r.iter().map(|r| r.gpus).sum::<u32>(), 6);
        assert_eq!(r[0].node, "b-1");
    }

    #[test]
    fn in_flight_decisions_are_forgotten_once_the_cache_shows_them() {
        let mut j = job("train").build();
        j.metadata.uid = Some("u1".into());
        let mut f = InFlight::default();
        f.by_uid.insert("u1".into(), (1, vec![]));
        f.prune(&[Arc::new(j.clone())]);
        assert!(f.by_uid.contains_key("u1"), "cache still at attempt 0");
        j.status = Some(ComputeJobStatus {
            attempt: 1,
            ..Default::default()
        });
        f.prune(&[Arc::new(j)]);
        assert!(f.by_uid.is_empty());
        f.by_uid.insert("gone".into(), (1, vec![]));
        f.prune::<ComputeJob>(&[]);
        assert!(f.by_uid.is_empty(), "deleted jobs are forgotten");
    }
}

#[cfg(test)]
#[path = "scheduling_props.rs"]
mod props;

#[cfg(test)]
#[path = "scheduling_preempt_tests.rs"]
mod preempt_tests;

#[cfg(test)]
#[path = "scheduling_reclaim_tests.rs"]
mod reclaim_tests;
