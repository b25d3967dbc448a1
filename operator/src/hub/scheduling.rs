//! The scheduling loop: like kube-scheduler's queue, one task takes *all* pending jobs of a pool,
//! orders them by priority then age, and runs the pure core over a snapshot of the members, so
//! priorities hold across jobs and a burst never over-commits a cluster. It wakes when a job
//! becomes pending, when capacity changes (member inventory, an attempt ending) and every few
//! seconds regardless.
//!
//! A decision is written into the job's status (the new attempt, its cluster, model, price and
//! planned nodes) guarded by the resourceVersion it was computed from; the job controller then
//! creates the Placement. Until the hub's cache shows a decision, the loop keeps the GPUs it just
//! promised in memory, so a stale cache cannot hand them out twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use gpufed_crds::conditions::{self, job as jc};
use gpufed_crds::naming::{chain_job_id_hex, member_namespace, placement_name};
use gpufed_crds::{
    AttemptPhase, AttemptRecord, ComputeJob, ComputeJobStatus, EvmAddress, GpuPool, JobPhase,
    MemberCluster, PlacementRef, PlannedNode, TokenAmount,
};
use gpufed_scheduler::{
    Assignment, Decision, Reservation, explain, explain_placement, schedule_batch,
};
use kube::ResourceExt;

use crate::hub::context::{Context, now};
use crate::hub::snapshot;
use crate::hub::status::{Written, write_namespaced};

/// Status writes of one pass in flight at once.
pub const WRITE_CONCURRENCY: usize = 8;

/// How often the queue is re-evaluated without any trigger.
pub const RESYNC: Duration = Duration::from_secs(5);

/// GPUs this loop promised to jobs whose new status the cache does not show yet.
#[derive(Default)]
struct InFlight {
    /// Job UID → (attempt decided, GPUs promised).
    by_uid: HashMap<String, (u32, Vec<Reservation>)>,
    /// `(cluster, model)` series of `gpufed_cluster_free_gpus` set by the last pass.
    exported: std::collections::HashSet<(String, String)>,
}

impl InFlight {
    /// Forgets decisions the cache now shows (or whose job is gone).
    fn prune(&mut self, jobs: &[Arc<ComputeJob>]) {
        let seen: HashMap<String, u32> = jobs
            .iter()
            .filter_map(|j| Some((j.uid()?, j.status.as_ref().map(|s| s.attempt).unwrap_or(0))))
            .collect();
        self.by_uid
            .retain(|uid, (attempt, _)| seen.get(uid).is_some_and(|cached| cached < attempt));
    }
}

/// Runs the loop until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    let mut in_flight = InFlight::default();
    loop {
        tokio::select! {
            _ = ctx.schedule.notified() => {}
            _ = tokio::time::sleep(RESYNC) => {}
        }
        // Let a burst of triggers settle into one pass.
        tokio::time::sleep(Duration::from_millis(50)).await;
        pass(&ctx, &mut in_flight).await;
    }
}

/// Whether `job` waits for the scheduler: admitted, Pending, not being deleted.
fn is_pending(job: &ComputeJob) -> bool {
    job.metadata.deletion_timestamp.is_none()
        && job.status.as_ref().is_some_and(|s| {
            s.phase == JobPhase::Pending && conditions::is_true(&s.conditions, jc::ADMITTED)
        })
}

async fn pass(ctx: &Context, in_flight: &mut InFlight) {
    let jobs = ctx.stores.jobs.state();
    in_flight.prune(&jobs);
    let members: BTreeMap<String, MemberCluster> = ctx
        .stores
        .members
        .state()
        .into_iter()
        .map(|m| (m.name_any(), m.as_ref().clone()))
        .collect();
    let all_jobs: Vec<ComputeJob> = jobs.iter().map(|j| j.as_ref().clone()).collect();
    let mut reservations = snapshot::reservations(&all_jobs, &members);
    reservations.extend(
        in_flight
            .by_uid
            .values()
            .flat_map(|(_, r)| r.iter().cloned()),
    );

    let mut exported = std::collections::HashSet::new();
    for pool in ctx.stores.pools.state() {
        let pool_name = pool.name_any();
        let pending: Vec<&Arc<ComputeJob>> = jobs
            .iter()
            .filter(|j| j.spec.pool == pool_name && is_pending(j))
            .filter(|j| {
                j.uid()
                    .is_some_and(|uid| !in_flight.by_uid.contains_key(&uid))
            })
            .collect();
        ctx.metrics
            .pending_jobs
            .with_label_values(&[&pool_name])
            .set(pending.len() as i64);
        let clusters: Vec<_> = members
            .values()
            .filter(|m| m.spec.pool == pool_name)
            .map(|m| snapshot::cluster_state(&pool, m, ctx.stores.bond(&m.name_any()).as_deref()))
            .collect();
        exported.extend(export_free_gpus(ctx, &clusters, &reservations));
        if pending.is_empty() {
            continue;
        }
        ctx.metrics
            .scheduling_passes
            .with_label_values(&[&pool_name])
            .inc();
        let requests: Vec<_> = pending
            .iter()
            .map(|j| snapshot::job_request(j, snapshot::creation_order(j)))
            .collect();
        let policy = snapshot::policy(&pool);
        let decisions = match schedule_batch(&requests, &clusters, &reservations, &policy) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(pool = %pool_name, error = %e, "scheduling pass failed");
                continue;
            }
        };
        let by_key: HashMap<String, &Arc<ComputeJob>> =
            pending.iter().map(|j| (snapshot::job_key(j), *j)).collect();
        // Decisions are independent once the batch is computed: write them a few at a time.
        let outcomes: Vec<Option<(String, u32, Vec<Reservation>)>> = futures::stream::iter(
            decisions,
        )
        .map(|(key, decision)| {
            let job = by_key.get(&key).map(|j| (*j).clone());
            let pool = pool.clone();
            async move {
                let job = job?;
                match decision {
                    Decision::Place(a) => {
                        let promised = promised(&job, &a);
                        match record_placement(ctx, &job, &pool, &a, policy.strategy).await {
                            Ok(true) => {
                                let attempt =
                                    job.status.as_ref().map(|s| s.attempt).unwrap_or(0) + 1;
                                job.uid().map(|uid| (uid, attempt, promised))
                            }
                            Ok(false) => None,
                            Err(e) => {
                                tracing::warn!(job = %key, error = %e, "recording a placement");
                                None
                            }
                        }
                    }
                    Decision::NoFit(reasons) => {
                        if let Err(e) = record_no_fit(ctx, &job, &explain(&reasons)).await {
                            tracing::warn!(job = %key, error = %e, "recording why a job waits");
                        }
                        None
                    }
                }
            }
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
        for (uid, attempt, promised) in outcomes.into_iter().flatten() {
            reservations.extend(promised.iter().cloned());
            in_flight.by_uid.insert(uid, (attempt, promised));
        }
    }
    // Series of members (or models) that are gone disappear, without a gap for the others.
    for (cluster, model) in in_flight.exported.difference(&exported) {
        let _ = ctx.metrics.free_gpus.remove_label_values(&[cluster, model]);
    }
    in_flight.exported = exported;
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
    let mut set = vec![];
    for c in clusters {
        let mut by_model: BTreeMap<&str, i64> = BTreeMap::new();
        for n in &c.nodes {
            let reserved: u32 = reservations
                .iter()
                .filter(|r| r.cluster == c.name && r.node == n.name)
                .map(|r| r.gpus)
                .sum();
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

/// The status of a job just placed by `a`: a new attempt, phase Placed (or Funding in pools with a chain).
pub fn placed_status(
    job: &ComputeJob,
    pool: &GpuPool,
    a: &Assignment,
    provider: Option<EvmAddress>,
    explanation: String,
    at: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> ComputeJobStatus {
    let mut st = job.status.clone().unwrap_or_default();
    let attempt = st.attempt + 1;
    let ns = job.namespace().unwrap_or_default();
    let uid = job.uid().unwrap_or_default();
    let name = placement_name(&ns, &job.name_any(), &uid, attempt);
    let price = TokenAmount::from_atto(a.price);
    let has_chain = pool.spec.chain.is_some();
    st.attempt = attempt;
    st.phase = if has_chain {
        JobPhase::Funding
    } else {
        JobPhase::Placed
    };
    st.placement = Some(PlacementRef {
        cluster: a.cluster.clone(),
        namespace: member_namespace(&a.cluster),
        name: name.clone(),
        model: a.model.clone(),
        price_per_gpu_hour: price,
    });
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
        settlement: has_chain
            .then(|| crate::hub::settlement::unfunded(chain_job_id_hex(&uid, attempt))),
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
    st
}

async fn record_placement(
    ctx: &Context,
    job: &ComputeJob,
    pool: &GpuPool,
    a: &Assignment,
    strategy: gpufed_scheduler::Strategy,
) -> crate::error::Result<bool> {
    let at = now();
    let explanation = explain_placement(a, a.fitting_clusters, strategy);
    let provider = ctx
        .stores
        .member(&a.cluster)
        .and_then(|m| m.spec.wallet.clone());
    let status = placed_status(job, pool, a, provider, explanation.clone(), &at);
    if write_namespaced(&ctx.client, job, &status).await? == Written::Conflict {
        return Ok(false);
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
    )
    .await;
    Ok(true)
}

async fn record_no_fit(
    ctx: &Context,
    job: &ComputeJob,
    explanation: &str,
) -> crate::error::Result<()> {
    let current = job.status.clone().unwrap_or_default();
    if current.explanation.as_deref() == Some(explanation)
        && current.reason.as_deref() == Some("NoFit")
    {
        return Ok(());
    }
    // Counted when the reason a job waits changes, not at every pass.
    ctx.metrics.decisions.with_label_values(&["nofit"]).inc();
    let mut st: ComputeJobStatus = current;
    st.reason = Some("NoFit".into());
    st.explanation = Some(explanation.to_string());
    conditions::set_condition(
        &mut st.conditions,
        conditions::condition(
            jc::SCHEDULED,
            false,
            "NoFit",
            explanation,
            job.metadata.generation,
            now(),
        ),
    );
    if write_namespaced(&ctx.client, job, &st).await? == Written::Yes {
        ctx.event(job, true, "Pending", "Schedule", explanation.to_string())
            .await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufed_crds::GpuPoolSpec;
    use gpufed_crds::testing::job;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn assignment() -> Assignment {
        Assignment {
            cluster: "beta".into(),
            model: "A100".into(),
            price: 1_200_000_000_000_000_000,
            nodes: vec![("b-1".into(), 2), ("b-2".into(), 1)],
            free_after: 5,
            fitting_clusters: 2,
        }
    }

    fn pool() -> GpuPool {
        GpuPool::new(
            "default",
            GpuPoolSpec {
                strategy: Default::default(),
                heartbeat_timeout: "40s".parse().unwrap(),
                start_timeout: "10m".parse().unwrap(),
                min_bond: None,
                chain: None,
                payers: vec![],
                priority_classes: vec![],
            },
        )
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
        f.prune(&[]);
        assert!(f.by_uid.is_empty(), "deleted jobs are forgotten");
    }
}
