//! Preemption in the scheduling loop (ADR 0025): which running attempts the hub may evict, what
//! it remembers of the preemptions it started, the texts that explain them, and the fenced writes
//! that stop a victim.
//!
//! The pure core (`gpufed_scheduler::plan_preemptions`) picks the victims after a pass
//! ([`crate::hub::scheduling::decide_with`] calls it on the jobs the pass left without a cluster).
//! For each victim the hub marks the attempt preempted in the job's status (reason `Preempted`,
//! a message naming the preemptor), then sets `Placement.spec.stop` with the pool's grace period;
//! the member's agent stops the pods with that grace and reports the attempt ended with its final
//! usage, and the job controller ends it `Preempted` and re-queues the job
//! (`lifecycle::requeue_preempted`); settlement pays it like any ended attempt, once.
//!
//! **Held for the preemptor.** A preemption is remembered ([`Outstanding`], leader memory like
//! the fair-share holder) until its preemptor is placed, or until its victims had the grace
//! period and [`PATIENCE`] more to stop. Meanwhile the preemptor is decided before the pass, on
//! its own: once the victims' GPUs show free it is placed; until then the nodes it was promised
//! are taken from every other job of the pass, and it evicts no one else. An attempt being
//! stopped (reason `Preempted`, not ended) is never a candidate victim again.

use std::time::Duration;

use gpufed_crds::naming::member_namespace;
use gpufed_crds::placement::reasons::PREEMPTED;
use gpufed_crds::{AttemptPhase, ComputeJob, MemberCluster, Placement, PlacementStop};
use gpufed_scheduler::{Preempt, Reservation, Running};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;

use crate::hub::context::Context;
use crate::hub::snapshot;
use crate::hub::status::{Written, write_namespaced};

/// How long past the grace period the hub waits for a preemption's victims to stop (their member
/// reports, its inventory shows the GPUs free) before it forgets the preemption, so the preemptor
/// may plan again.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A preemption the hub started and whose preemptor is not placed yet.
#[derive(Clone, Debug, PartialEq)]
pub struct Outstanding {
    /// The pool it was decided in.
    pub pool: String,
    /// The preemptor's priority (outstanding preemptors are decided highest first).
    pub priority: i32,
    /// What the core planned: victims, cluster, and where the preemptor goes.
    pub plan: Preempt,
    /// The GPUs the preemptor was promised once the victims are gone: kept from other jobs.
    pub claim: Vec<Reservation>,
    /// When it was decided.
    pub since: Time,
    /// The pool's grace period then.
    pub grace: Duration,
    /// For a reclaim of lent quota (`spec.reclaimWithinCohort`), the claimant's explanation
    /// ([`crate::hub::reclaim::claimant_text`]); `None` for a preemption by priority.
    pub reclaim: Option<String>,
}

impl Outstanding {
    /// Whether its victims had the grace period and [`PATIENCE`] more, by `now`.
    pub fn expired(&self, now: &Time) -> bool {
        let waited = now.0.duration_since(self.since.0).as_secs_f64();
        waited > (self.grace + PATIENCE).as_secs_f64()
    }

    /// Whether it evicts attempt `attempt` of `job`.
    pub fn evicts(&self, job: &str, attempt: u32) -> bool {
        self.plan
            .victims
            .iter()
            .any(|v| v.job == job && v.attempt == attempt)
    }
}

/// The GPUs `plan`'s preemptor (`gpus_per_replica` each replica) takes where it will go.
pub fn claim(plan: &Preempt, gpus_per_replica: u32) -> Vec<Reservation> {
    plan.assignment
        .nodes
        .iter()
        .map(|(node, replicas)| Reservation {
            cluster: plan.assignment.cluster.clone(),
            node: node.clone(),
            gpus: replicas.saturating_mul(gpus_per_replica),
        })
        .collect()
}

/// The attempts of `jobs` in `pool` that may be evicted: running, not already being stopped, and
/// whose GPUs their member's inventory already counts as used (an attempt still starting is held
/// by a reservation, which evicting it would not give back in this pass).
pub fn candidates<J, M>(
    pool: &str,
    jobs: &[J],
    members: &std::collections::BTreeMap<String, M>,
) -> Vec<Running>
where
    J: std::borrow::Borrow<ComputeJob>,
    M: std::borrow::Borrow<MemberCluster>,
{
    let mut out = vec![];
    for job in jobs.iter().map(std::borrow::Borrow::borrow) {
        if job.spec.pool != pool {
            continue;
        }
        let Some(st) = job.status.as_ref().filter(|s| !s.phase.is_finished()) else {
            continue;
        };
        let Some(rec) = st.attempts.iter().find(|a| a.attempt == st.attempt) else {
            continue;
        };
        if rec.phase != AttemptPhase::Running
            || rec.reason.as_deref() == Some(PREEMPTED)
            || !snapshot::inventory_shows(rec, members)
        {
            continue;
        }
        let started = rec.start_time.as_ref().or(rec.placed_time.as_ref());
        out.push(Running {
            job: snapshot::job_key(job),
            attempt: rec.attempt,
            priority: st.priority.unwrap_or(job.spec.priority),
            cluster: rec.cluster.clone(),
            nodes: rec
                .planned_nodes
                .iter()
                .map(|n| {
                    (
                        n.node.clone(),
                        n.replicas.saturating_mul(job.spec.gpus_per_replica),
                    )
                })
                .collect(),
            started: started
                .map(|t| u64::try_from(t.0.as_second()).unwrap_or(0))
                .unwrap_or(0),
        });
    }
    out
}

/// What a victim's attempt says: `preempted by team-a/urgent (priority 1000 > 10), which needs
/// 4 GPUs on alpha; stopping with a 30s grace period`. `gpus`: the preemptor's GPUs.
pub fn victim_message(
    plan: &Preempt,
    priority: i32,
    victim_priority: i32,
    gpus: u64,
    grace: u32,
) -> String {
    format!(
        "preempted by {} (priority {priority} > {victim_priority}), which needs {gpus} GPUs on \
         {}; stopping with a {grace}s grace period",
        plan.job, plan.cluster,
    )
}

/// What the preemptor's explanation says while its victims stop: `no cluster has room as things
/// stand; preempting 2 attempts of lower priority on alpha to free 4 GPUs: team-b/low attempt 1
/// (priority 10, 2 GPUs), …; placed once they stop (grace 30s, ADR 0025)`.
pub fn preemptor_text(plan: &Preempt, grace: Duration) -> String {
    let victims: Vec<String> = plan
        .victims
        .iter()
        .map(|v| {
            format!(
                "{} attempt {} (priority {}, {} GPU{})",
                v.job,
                v.attempt,
                v.priority,
                v.gpus,
                if v.gpus == 1 { "" } else { "s" }
            )
        })
        .collect();
    let n = plan.victims.len();
    format!(
        "no cluster has room as things stand; preempting {n} attempt{} of lower priority on {} to \
         free {} GPU{}: {}; placed once they stop (grace {}s, ADR 0025)",
        if n == 1 { "" } else { "s" },
        plan.cluster,
        plan.freed_gpus(),
        if plan.freed_gpus() == 1 { "" } else { "s" },
        victims.join(", "),
        grace.as_secs(),
    )
}

/// A fingerprint of a preemption (preemptor's cluster and victims), the signature of the
/// preemptor's reason to wait: its explanation is written once per preemption.
pub fn signature(plan: &Preempt) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let attempts: Vec<String> = plan.victims.iter().map(|v| v.attempt.to_string()).collect();
    let parts = std::iter::once("preempting")
        .chain(std::iter::once(plan.cluster.as_str()))
        .chain(plan.victims.iter().map(|v| v.job.as_str()))
        .chain(attempts.iter().map(String::as_str));
    for part in parts {
        for b in part.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// One victim to stop.
#[derive(Clone, Debug, PartialEq)]
pub struct Stop {
    /// The victim's attempt.
    pub attempt: u32,
    /// The preemptor, `namespace/name` (forgotten if the stop cannot be written).
    pub preemptor: String,
    /// The pool (metric label).
    pub pool: String,
    /// The attempt's message, naming the preemptor.
    pub message: String,
    /// Seconds the pods get to stop.
    pub grace_seconds: u32,
}

/// The body of the merge patch that asks a Placement's member to stop it.
#[derive(Debug, Serialize)]
struct StopPatch<'a> {
    spec: StopSpec<'a>,
}

#[derive(Debug, Serialize)]
struct StopSpec<'a> {
    stop: &'a PlacementStop,
}

/// Stops attempt `stop.attempt` of `job`: marks it preempted in the job's status (guarded by the
/// resourceVersion it was decided from), then sets its Placement's `spec.stop`; both through the
/// hub's fenced client (ADR 0016). Returns whether the attempt was marked (false: the job changed
/// meanwhile, the attempt is no longer running, or the write failed).
pub async fn stop_victim(ctx: &Context, job: &ComputeJob, stop: &Stop) -> bool {
    let key = snapshot::job_key(job);
    let mut st = job.status.clone().unwrap_or_default();
    let current = st.attempt;
    let Some(rec) = st
        .attempts
        .iter_mut()
        .find(|a| a.attempt == stop.attempt && a.attempt == current && !a.phase.is_finished())
    else {
        return false;
    };
    rec.reason = Some(PREEMPTED.to_string());
    rec.message = Some(stop.message.clone());
    let (cluster, placement) = (rec.cluster.clone(), rec.placement.clone());
    match write_namespaced(&ctx.client, job, &st).await {
        Ok(Written::Yes) => {}
        Ok(Written::Conflict) => return false,
        Err(e) => {
            tracing::warn!(job = %key, error = %e, "marking a preempted attempt");
            return false;
        }
    }
    ctx.metrics
        .preemptions
        .with_label_values(&[&stop.pool])
        .inc();
    ctx.event(
        job,
        true,
        "Preempted",
        "Preempt",
        format!("attempt {}: {}", stop.attempt, stop.message),
    );
    tracing::info!(job = %key, attempt = stop.attempt, preemptor = %stop.preemptor, "preempted");
    if let Err(e) = request_stop(ctx, &cluster, &placement, stop).await {
        // The attempt is marked: the scheduling loop sets the stop again (`unstopped`).
        tracing::warn!(job = %key, %placement, error = %e, "asking the member to stop a preempted attempt");
    }
    true
}

/// What the member reads in `Placement.spec.stop`: why, naming no job. The attempt's own message
/// on the hub names the preemptor and the victims' tenants; a member sees no job's namespace or
/// name (ADR 0037), so the Placement says only what it must do.
pub fn placement_stop_message(grace_seconds: u32) -> String {
    format!(
        "preempted: the hub needs these GPUs for a job of higher priority or for quota its \
         cohort lent; stopping with a {grace_seconds}s grace period"
    )
}

/// Sets `spec.stop` on Placement `name` of `cluster`.
pub async fn request_stop(
    ctx: &Context,
    cluster: &str,
    name: &str,
    stop: &Stop,
) -> crate::error::Result<()> {
    let ns = member_namespace(cluster);
    let api: Api<Placement> = Api::namespaced(ctx.client.clone(), &ns);
    let body = PlacementStop {
        reason: PREEMPTED.to_string(),
        message: Some(placement_stop_message(stop.grace_seconds)),
        grace_period_seconds: stop.grace_seconds,
    };
    let patch = StopPatch {
        spec: StopSpec { stop: &body },
    };
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // Gone: the attempt ends without it (the job controller sees the Placement deleted).
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(crate::error::Error::kube(format!(
            "stopping Placement {ns}/{name}"
        ))(e)),
    }
}

/// Attempts of `jobs` marked preempted whose Placement (in the hub's cache) has no stop yet: the
/// write of the stop failed after the mark. `(cluster, placement, stop)` to set again.
pub fn unstopped<J: std::borrow::Borrow<ComputeJob>>(
    ctx: &Context,
    pool: &gpufed_crds::GpuPool,
    jobs: &[J],
) -> Vec<(String, String, Stop)> {
    let pool_name = pool.metadata.name.clone().unwrap_or_default();
    let mut out = vec![];
    for job in jobs.iter().map(std::borrow::Borrow::borrow) {
        if job.spec.pool != pool_name {
            continue;
        }
        let Some(st) = job.status.as_ref().filter(|s| !s.phase.is_finished()) else {
            continue;
        };
        for rec in st.attempts.iter().filter(|a| {
            a.attempt == st.attempt
                && !a.phase.is_finished()
                && a.reason.as_deref() == Some(PREEMPTED)
        }) {
            let ns = member_namespace(&rec.cluster);
            let Some(p) = ctx.stores.placement(&ns, &rec.placement) else {
                continue;
            };
            if p.spec.stop.is_some() {
                continue;
            }
            out.push((
                rec.cluster.clone(),
                rec.placement.clone(),
                Stop {
                    attempt: rec.attempt,
                    preemptor: String::new(),
                    pool: pool_name.clone(),
                    message: rec.message.clone().unwrap_or_else(|| PREEMPTED.into()),
                    grace_seconds: grace_seconds(pool),
                },
            ));
        }
    }
    out
}

/// The pool's grace period in whole seconds (at most an hour, by the CRD's rule).
pub fn grace_seconds(pool: &gpufed_crds::GpuPool) -> u32 {
    u32::try_from(pool.spec.preemption_grace_period().as_secs_ceil()).unwrap_or(3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_member_reads_names_no_job() {
        let m = placement_stop_message(30);
        assert!(m.contains("30s grace"), "{m}");
        assert!(!m.contains('/'), "{m}");
    }
    use gpufed_scheduler::{Assignment, Victim};

    fn plan() -> Preempt {
        Preempt {
            job: "team-a/urgent".into(),
            cluster: "alpha".into(),
            victims: vec![
                Victim {
                    job: "team-b/low".into(),
                    attempt: 1,
                    priority: 10,
                    gpus: 2,
                },
                Victim {
                    job: "team-b/low2".into(),
                    attempt: 2,
                    priority: 10,
                    gpus: 2,
                },
            ],
            assignment: Assignment {
                cluster: "alpha".into(),
                model: "H100".into(),
                price: 1,
                ask: 1,
                nodes: vec![("a-0".into(), 2)],
                free_after: 0,
                fitting_clusters: 1,
            },
        }
    }

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn the_preemptors_explanation_names_every_victim_and_the_grace() {
        let text = preemptor_text(&plan(), Duration::from_secs(30));
        assert_eq!(
            text,
            "no cluster has room as things stand; preempting 2 attempts of lower priority on \
             alpha to free 4 GPUs: team-b/low attempt 1 (priority 10, 2 GPUs), team-b/low2 \
             attempt 2 (priority 10, 2 GPUs); placed once they stop (grace 30s, ADR 0025)"
        );
    }

    #[test]
    fn only_running_attempts_the_inventory_shows_and_not_already_stopping_are_candidates() {
        use gpufed_crds::testing::{attempt, job, member};
        use gpufed_crds::{ComputeJobStatus, Inventory, JobPhase, MemberClusterStatus};
        let mut m = member("alpha", "H100", "2.40").build();
        m.status = Some(MemberClusterStatus {
            inventory: Some(Inventory {
                update_time: Some(at(100)),
                nodes: vec![],
            }),
            ..Default::default()
        });
        let members = std::collections::BTreeMap::from([("alpha".to_string(), m)]);
        let running = |name: &str, started: i64, reason: Option<&str>| {
            let mut j = job(name).gpus(2).build();
            let mut rec = attempt(1, "alpha", AttemptPhase::Running);
            rec.start_time = Some(at(started));
            rec.reason = reason.map(str::to_string);
            rec.planned_nodes = vec![gpufed_crds::PlannedNode {
                node: "a-0".into(),
                replicas: 1,
            }];
            j.status = Some(ComputeJobStatus {
                phase: JobPhase::Running,
                attempt: 1,
                priority: Some(7),
                attempts: vec![rec],
                ..Default::default()
            });
            j
        };
        let jobs = [
            running("shown", 90, None),
            running("too-new", 110, None),
            running("stopping", 90, Some(PREEMPTED)),
        ];
        let c = candidates(&jobs[0].spec.pool, &jobs, &members);
        let [one] = c.as_slice() else { panic!("{c:?}") };
        assert!(one.job.ends_with("/shown"));
        assert_eq!((one.priority, one.started), (7, 90));
        assert_eq!(one.nodes, [("a-0".to_string(), 2)]);
    }

    #[test]
    fn a_victims_message_names_its_preemptor() {
        assert_eq!(
            victim_message(&plan(), 1000, 10, 4, 30),
            "preempted by team-a/urgent (priority 1000 > 10), which needs 4 GPUs on alpha; \
             stopping with a 30s grace period"
        );
    }

    #[test]
    fn a_one_gpu_victim_is_named_in_the_singular() {
        let mut p = plan();
        p.victims.truncate(1);
        p.victims[0].gpus = 1;
        let text = preemptor_text(&p, Duration::from_secs(5));
        assert!(
            text.contains(
                "preempting 1 attempt of lower priority on alpha to free 1 GPU: \
                 team-b/low attempt 1 (priority 10, 1 GPU); placed"
            ),
            "{text}"
        );
    }

    #[test]
    fn an_outstanding_preemption_expires_after_the_grace_and_the_patience() {
        let o = Outstanding {
            pool: "shared".into(),
            priority: 1000,
            plan: plan(),
            claim: claim(&plan(), 2),
            since: at(100),
            grace: Duration::from_secs(30),
            reclaim: None,
        };
        assert_eq!(o.claim[0].gpus, 4, "2 replicas of 2 GPUs on a-0");
        assert!(!o.expired(&at(190)));
        assert!(o.expired(&at(191)));
        assert!(o.evicts("team-b/low2", 2));
        assert!(!o.evicts("team-b/low2", 1));
    }

    #[test]
    fn a_preemptions_signature_changes_with_its_victims() {
        let mut other = plan();
        assert_eq!(signature(&plan()), signature(&other));
        other.victims.pop();
        assert_ne!(signature(&plan()), signature(&other));
    }
}
