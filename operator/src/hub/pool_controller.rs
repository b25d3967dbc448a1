//! The GpuPool controller: rolls member inventories and job counts up into the pool's status
//! (members, ready members, GPUs total and free, and per GPU model the clusters, capacity and a
//! price index) — what `kubectl get gpupool` and `kubectl gpufed top` show.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use gpufed_crds::conditions::{self, member as mc, pool as pool_cond};
use gpufed_crds::{
    GpuPool, GpuPoolStatus, JobPhase, MemberCluster, ModelCapacity, NamespaceShare, QuotaUsage,
    TokenAmount,
};
use kube::ResourceExt;
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::reflector::ObjectRef;

use crate::error::{Error, Result};
use crate::hub::at_rest::Jobs;
use crate::hub::context::{Context, now};
use crate::hub::status::write_cluster;

const CONTROLLER: &str = "gpupool";

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    subs: (
        crate::hub::Subscription<GpuPool>,
        crate::hub::Subscription<MemberCluster>,
    ),
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (pools, members) = subs;
    Controller::for_shared_stream(pools, ctx.stores.pools.clone())
        .watches_shared_stream(members, |m: Arc<MemberCluster>| {
            Some(ObjectRef::new(&m.spec.pool))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// A pool's status is rolled up at most this often for the same spec: every member update (each
/// inventory report, every few seconds per member) triggers a reconcile, and a roll-up reads every
/// job of the pool and asks the chain's RPC.
pub const ROLLUP_EVERY: Duration = Duration::from_secs(2);

/// How long to wait before rolling up pool `name` again, if its last roll-up of the same
/// `generation` was less than [`ROLLUP_EVERY`] ago.
fn throttled(
    rollups: &std::sync::Mutex<std::collections::HashMap<String, (Instant, Option<i64>)>>,
    name: &str,
    generation: Option<i64>,
    now: Instant,
) -> Option<Duration> {
    let r = rollups.lock().ok()?;
    let (at, seen) = r.get(name)?;
    let since = now.duration_since(*at);
    (*seen == generation && since < ROLLUP_EVERY).then(|| ROLLUP_EVERY - since)
}

fn error_policy(pool: Arc<GpuPool>, err: &Error, ctx: Arc<Context>) -> Requeue {
    let delay = ctx.backoffs.next(&format!("pool/{}", pool.name_any()));
    tracing::warn!(pool = %pool.name_any(), error = %err, kind = err.kind(), "reconcile failed");
    ctx.metrics.failed(CONTROLLER, err.kind());
    Requeue::requeue(delay)
}

/// The pool's status from its members and `jobs` (every job, at rest or not:
/// [`crate::hub::context::Stores::every_job`]); `updated` is left for the caller.
pub fn roll_up(
    pool: &GpuPool,
    members: &[Arc<MemberCluster>],
    jobs: &Jobs,
    now: u64,
) -> GpuPoolStatus {
    let all_jobs = jobs;
    let jobs = jobs.cached();
    // The jobs the pool's quota ledger may name: every job that still exists, at rest or not.
    let uids: std::collections::HashSet<&str> = if pool
        .status
        .as_ref()
        .is_some_and(|s| !s.quota_ledger.is_empty())
    {
        all_jobs.iter().filter_map(|j| j.uid()).collect()
    } else {
        Default::default()
    };
    let name = pool.name_any();
    let mine: Vec<&MemberCluster> = members
        .iter()
        .map(|m| m.as_ref())
        .filter(|m| m.spec.pool == name)
        .collect();
    let ready: Vec<&MemberCluster> = mine
        .iter()
        .copied()
        .filter(|m| {
            m.status
                .as_ref()
                .is_some_and(|s| conditions::is_true(&s.conditions, mc::READY))
        })
        .collect();
    // model → (clusters, total, free, prices weighted by free, prices weighted by total, min, max)
    #[derive(Default)]
    struct Acc {
        clusters: u32,
        total: u32,
        free: u32,
        weighted_free: u128,
        weighted_total: u128,
        min: Option<u128>,
        max: Option<u128>,
    }
    let mut by_model: BTreeMap<String, Acc> = BTreeMap::new();
    let (mut total, mut free) = (0u32, 0u32);
    let by_name: BTreeMap<String, &MemberCluster> =
        mine.iter().map(|m| (m.name_any(), *m)).collect();
    let reservations = crate::hub::snapshot::reservations(jobs, &by_name);
    let reserved_on = crate::hub::snapshot::reserved_by_node(&reservations);
    for m in &ready {
        let member_name = m.name_any();
        let Some(inv) = m.status.as_ref().and_then(|s| s.inventory.as_ref()) else {
            continue;
        };
        let mut seen = std::collections::BTreeSet::new();
        for n in inv.nodes.iter().filter(|n| n.ready) {
            let Some(price) = m.spec.prices.iter().find(|p| p.model == n.model) else {
                continue;
            };
            let price = price.price_per_gpu_hour.atto();
            let healthy = n.allocatable_gpus.saturating_sub(n.unhealthy_gpus);
            // GPUs promised to attempts the member has not reported yet are not free.
            let reserved = reserved_on
                .get(&(member_name.as_str(), n.name.as_str()))
                .copied()
                .unwrap_or(0);
            let node_free = n.free_gpus.min(healthy).saturating_sub(reserved);
            let acc = by_model.entry(n.model.clone()).or_default();
            if seen.insert(n.model.clone()) {
                acc.clusters += 1;
            }
            acc.total += healthy;
            acc.free += node_free;
            acc.weighted_free += price * u128::from(node_free);
            acc.weighted_total += price * u128::from(healthy);
            acc.min = Some(acc.min.map_or(price, |p| p.min(price)));
            acc.max = Some(acc.max.map_or(price, |p| p.max(price)));
            total += healthy;
            free += node_free;
        }
    }
    let capacity: Vec<ModelCapacity> = by_model
        .into_iter()
        .map(|(model, a)| {
            let index = if a.free > 0 {
                Some(a.weighted_free / u128::from(a.free))
            } else if a.total > 0 {
                Some(a.weighted_total / u128::from(a.total))
            } else {
                None
            };
            ModelCapacity {
                model,
                clusters: a.clusters,
                total_gpus: a.total,
                free_gpus: a.free,
                min_price: a.min.map(TokenAmount::from_atto),
                max_price: a.max.map(TokenAmount::from_atto),
                price_index: index.map(TokenAmount::from_atto),
            }
        })
        .collect();
    let pool_jobs = jobs.iter().filter(|j| j.spec.pool == name);
    let (mut pending, mut running) = (0, 0);
    for j in pool_jobs {
        match j.status.as_ref().map(|s| s.phase) {
            None | Some(JobPhase::Pending) | Some(JobPhase::Funding) => pending += 1,
            Some(JobPhase::Placed) | Some(JobPhase::Running) => running += 1,
            _ => {}
        }
    }
    let shares = match crate::hub::snapshot::fair_share(pool) {
        None => vec![],
        Some(fair) => {
            let cap: std::collections::HashMap<String, u64> = capacity
                .iter()
                .map(|c: &ModelCapacity| (c.model.clone(), u64::from(c.total_gpus)))
                .collect();
            let usage: Vec<gpufed_scheduler::Usage> = jobs
                .iter()
                .filter(|j| j.spec.pool == name)
                .filter_map(|j| crate::hub::snapshot::quota_usage(j))
                .collect();
            gpufed_scheduler::shares(&cap, &usage, &fair)
                .into_iter()
                .map(|s| NamespaceShare {
                    namespace: s.namespace,
                    weight: s.weight,
                    gpus: s.gpus,
                    dominant_model: s.dominant_model,
                    dominant_per_mille: s.dominant_per_mille,
                })
                .collect()
        }
    };
    GpuPoolStatus {
        shares,
        members: mine.len() as u32,
        ready_members: ready.len() as u32,
        total_gpus: total,
        free_gpus: free,
        capacity,
        pending_jobs: pending,
        running_jobs: running,
        last_update_time: None,
        observed_generation: pool.metadata.generation,
        quota_usage: crate::hub::snapshot::quota_report(pool, all_jobs, now)
            .into_iter()
            .map(quota_usage_status)
            .collect(),
        // Kept by the job controller; the roll-up only drops ended periods and UIDs of jobs gone.
        quota_ledger: crate::hub::quota_ledger::prune(
            pool.status
                .as_ref()
                .map(|s| s.quota_ledger.as_slice())
                .unwrap_or_default(),
            now,
            |uid| uids.contains(uid),
        ),
        utilization: pool.status.as_ref().and_then(|s| s.utilization.clone()),
        clearing_prices: crate::hub::market::clearing_index(
            pool.status
                .as_ref()
                .map(|s| s.clearing_prices.as_slice())
                .unwrap_or_default(),
            all_jobs.iter(),
            &name,
        ),
        settlement_account: pool
            .status
            .as_ref()
            .and_then(|s| s.settlement_account.clone()),
        conditions: pool
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default(),
    }
}

/// One namespace's use of one quota group as `status.quotaUsage` shows it: GPUs held and, for a
/// group with period limits, the current period's GPU-hours and (with a spend limit) tokens.
fn quota_usage_status(q: gpufed_scheduler::QuotaUse) -> QuotaUsage {
    let mut out = QuotaUsage {
        namespace: q.namespace,
        group: q.group,
        used: q.used,
        limit: q.nominal,
        borrowed: q.borrowed,
        ..QuotaUsage::default()
    };
    if let Some(p) = q.period {
        out.period = Some(match p.period {
            gpufed_scheduler::Period::Day => gpufed_crds::QuotaPeriod::Day,
            gpufed_scheduler::Period::Week => gpufed_crds::QuotaPeriod::Week,
            gpufed_scheduler::Period::Month => gpufed_crds::QuotaPeriod::Month,
        });
        out.period_start = i64::try_from(p.start)
            .ok()
            .and_then(|s| k8s_openapi::jiff::Timestamp::from_second(s).ok())
            .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time);
        out.gpu_hours_used = Some(gpufed_scheduler::period::format_gpu_hours(p.gpu_seconds));
        out.gpu_hours_limit = p
            .gpu_seconds_limit
            .and_then(|s| u32::try_from(s / 3600).ok());
        if let Some(limit) = p.spend_limit {
            out.spent = Some(TokenAmount::from_atto(p.spend));
            out.spend_limit = Some(TokenAmount::from_atto(limit));
        }
    }
    out
}

async fn reconcile(pool: Arc<GpuPool>, ctx: Arc<Context>) -> Result<Requeue> {
    let name = pool.name_any();
    if let Some(wait) = throttled(
        &ctx.pool_rollups,
        &name,
        pool.metadata.generation,
        Instant::now(),
    ) {
        return Ok(Requeue::requeue(wait));
    }
    let t0 = Instant::now();
    let members: Vec<Arc<MemberCluster>> = ctx
        .stores
        .members
        .state()
        .iter()
        .map(|m| ctx.stores.priced_member(m))
        .collect();
    let clock = crate::hub::period_usage::unix(&now());
    let mut status = roll_up(&pool, &members, &ctx.stores.every_job(), clock);
    if let Ok(mut trackers) = ctx.utilisation.lock() {
        let figure = trackers.entry(name.clone()).or_default().record(
            Instant::now(),
            status.total_gpus.saturating_sub(status.free_gpus),
            status.total_gpus,
        );
        let ratio = match figure.available_gpu_seconds {
            0 => 0.0,
            avail => figure.allocated_gpu_seconds as f64 / avail as f64,
        };
        ctx.metrics
            .pool_utilization
            .with_label_values(&[&name])
            .set(ratio);
        status.utilization = Some(figure);
    }
    for q in &status.quota_usage {
        let labels = [name.as_str(), q.namespace.as_str(), q.group.as_str()];
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        ctx.metrics
            .quota_used
            .with_label_values(&labels)
            .set(gauge(q.used));
        ctx.metrics
            .quota_limit
            .with_label_values(&labels)
            .set(gauge(q.limit));
        ctx.metrics
            .quota_borrowed
            .with_label_values(&labels)
            .set(gauge(q.borrowed));
        if let Some(hours) = q.gpu_hours_used.as_deref().and_then(|h| h.parse().ok()) {
            ctx.metrics
                .quota_period_gpu_hours
                .with_label_values(&labels)
                .set(hours);
        }
        if let Some(spent) = q.spent {
            ctx.metrics
                .quota_period_spent
                .with_label_values(&labels)
                .set(spent.atto() as f64 / gpufed_scheduler::ONE_TOKEN as f64);
        }
    }
    let exported: std::collections::BTreeSet<(String, String)> = status
        .quota_usage
        .iter()
        .map(|q| (q.namespace.clone(), q.group.clone()))
        .collect();
    if let Ok(mut series) = ctx.quota_series.lock() {
        let before = series
            .insert(name.clone(), exported.clone())
            .unwrap_or_default();
        for (ns, group) in before.difference(&exported) {
            let labels = [name.as_str(), ns.as_str(), group.as_str()];
            let _ = ctx.metrics.quota_used.remove_label_values(&labels);
            let _ = ctx.metrics.quota_limit.remove_label_values(&labels);
            let _ = ctx.metrics.quota_borrowed.remove_label_values(&labels);
            let _ = ctx
                .metrics
                .quota_period_gpu_hours
                .remove_label_values(&labels);
            let _ = ctx.metrics.quota_period_spent.remove_label_values(&labels);
        }
    }
    for sh in &status.shares {
        ctx.metrics
            .fair_share
            .with_label_values(&[name.as_str(), sh.namespace.as_str()])
            .set(sh.dominant_per_mille as f64 / 1000.0);
    }
    let exported: std::collections::BTreeSet<String> =
        status.shares.iter().map(|s| s.namespace.clone()).collect();
    if let Ok(mut series) = ctx.share_series.lock() {
        let before = series
            .insert(name.clone(), exported.clone())
            .unwrap_or_default();
        for ns in before.difference(&exported) {
            let _ = ctx
                .metrics
                .fair_share
                .remove_label_values(&[name.as_str(), ns.as_str()]);
        }
    }
    for m in &status.clearing_prices {
        ctx.metrics
            .clearing_price
            .with_label_values(&[name.as_str(), m.model.as_str()])
            .set(m.last.atto() as f64 / gpufed_scheduler::ONE_TOKEN as f64);
    }
    if pool.spec.chain.is_some() {
        let (ok, reason, message) = match ctx.chain(&pool).await {
            Ok(chain) => {
                status.settlement_account = Some(chain.hub_account.to_string());
                match chain.block_number().await {
                    Ok(_) => (
                        true,
                        "Connected",
                        format!("RPC answers; settling as {}", chain.hub_account),
                    ),
                    Err(e) => (false, "RpcUnavailable", e.to_string()),
                }
            }
            Err(e) => (false, "NotConfigured", e.to_string()),
        };
        conditions::set_condition(
            &mut status.conditions,
            conditions::condition(
                pool_cond::CHAIN_READY,
                ok,
                reason,
                message,
                pool.metadata.generation,
                now(),
            ),
        );
    }
    let mut current = pool.status.clone().unwrap_or_default();
    let changed = {
        current.last_update_time = None;
        current != status
    };
    if changed {
        status.last_update_time = Some(now());
        write_cluster(&ctx.client, pool.as_ref(), &status).await?;
    }
    let ready = members
        .iter()
        .filter(|m| {
            m.status
                .as_ref()
                .is_some_and(|s| conditions::is_true(&s.conditions, mc::READY))
        })
        .count() as i64;
    ctx.metrics.members.with_label_values(&["ready"]).set(ready);
    ctx.metrics
        .members
        .with_label_values(&["not_ready"])
        .set(members.len() as i64 - ready);
    ctx.backoffs.reset(&format!("pool/{name}"));
    if let Ok(mut r) = ctx.pool_rollups.lock() {
        r.insert(name, (Instant::now(), pool.metadata.generation));
    }
    ctx.metrics.reconciled(CONTROLLER, t0.elapsed());
    // Job counts change without a pool event: refresh regularly.
    Ok(Requeue::requeue(Duration::from_secs(10)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_is_rolled_up_at_most_every_interval_unless_its_spec_changed() {
        let rollups = std::sync::Mutex::new(std::collections::HashMap::new());
        let t0 = Instant::now();
        assert_eq!(
            throttled(&rollups, "default", Some(1), t0),
            None,
            "never rolled up"
        );
        rollups
            .lock()
            .unwrap()
            .insert("default".to_string(), (t0, Some(1)));
        let soon = t0 + Duration::from_millis(500);
        assert_eq!(
            throttled(&rollups, "default", Some(1), soon),
            Some(ROLLUP_EVERY - Duration::from_millis(500))
        );
        assert_eq!(
            throttled(&rollups, "default", Some(2), soon),
            None,
            "new spec"
        );
        assert_eq!(throttled(&rollups, "other", Some(1), soon), None);
        assert_eq!(
            throttled(&rollups, "default", Some(1), t0 + ROLLUP_EVERY),
            None
        );
    }
    use gpufed_crds::testing::member;
    use gpufed_crds::{Inventory, MemberClusterStatus, NodeInventory};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pool() -> GpuPool {
        gpufed_crds::testing::pool("default")
    }

    fn with_nodes(
        name: &str,
        model: &str,
        price: &str,
        ready: bool,
        nodes: &[(u32, u32)],
    ) -> Arc<MemberCluster> {
        let mut m = member(name, model, price).build();
        let t = Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap());
        m.status = Some(MemberClusterStatus {
            conditions: vec![conditions::condition(mc::READY, ready, "x", "", None, t)],
            inventory: Some(Inventory {
                update_time: None,
                nodes: nodes
                    .iter()
                    .enumerate()
                    .map(|(i, (alloc, free))| NodeInventory {
                        name: format!("{name}-{i}"),
                        model: model.into(),
                        gpu_memory_mib: 1,
                        allocatable_gpus: *alloc,
                        free_gpus: *free,
                        unhealthy_gpus: 0,
                        telemetry_stale: false,
                        utilization_percent: 0,
                        ready: true,
                        gpu_uuids: Vec::new(),
                    })
                    .collect(),
            }),
            ..Default::default()
        });
        Arc::new(m)
    }

    #[test]
    fn ready_members_roll_up_into_capacity_and_a_free_weighted_price_index() {
        let members = [
            with_nodes("a", "H100", "2.00", true, &[(8, 8)]),
            with_nodes("b", "H100", "4.00", true, &[(8, 0), (8, 8)]),
            with_nodes("c", "L4", "0.50", true, &[(4, 2)]),
            with_nodes("d", "H100", "1.00", false, &[(8, 8)]),
        ];
        let s = roll_up(&pool(), &members, &Jobs::cached_only(vec![]), 0);
        assert_eq!((s.members, s.ready_members), (4, 3));
        assert_eq!((s.total_gpus, s.free_gpus), (28, 18));
        let h100 = &s.capacity[0];
        assert_eq!(h100.model, "H100");
        assert_eq!(
            (h100.clusters, h100.total_gpus, h100.free_gpus),
            (2, 24, 16)
        );
        assert_eq!(h100.min_price.unwrap().to_string(), "2.00");
        assert_eq!(h100.max_price.unwrap().to_string(), "4.00");
        // 8 free at 2.00 and 8 free at 4.00.
        assert_eq!(h100.price_index.unwrap().to_string(), "3.00");
        assert_eq!(s.capacity[1].model, "L4");
    }

    #[test]
    fn gpus_of_a_model_without_a_price_are_not_counted() {
        let members = [with_nodes("a", "H100", "2.00", true, &[(8, 8)])];
        let mut m = members[0].as_ref().clone();
        m.spec.prices[0].model = "A100".into();
        let s = roll_up(&pool(), &[Arc::new(m)], &Jobs::cached_only(vec![]), 0);
        assert_eq!(s.total_gpus, 0);
        assert!(s.capacity.is_empty());
    }

    #[test]
    fn gpus_promised_to_attempts_not_yet_reported_are_not_free() {
        use gpufed_crds::{AttemptPhase, AttemptRecord, ComputeJobStatus, PlannedNode};
        let members = [with_nodes("a", "H100", "2.00", true, &[(8, 8)])];
        let mut j = gpufed_crds::testing::job("j").gpus(2).replicas(2).build();
        j.status = Some(ComputeJobStatus {
            phase: JobPhase::Placed,
            attempt: 1,
            attempts: vec![AttemptRecord {
                attempt: 1,
                cluster: "a".into(),
                placement: "p".into(),
                model: "H100".into(),
                price_per_gpu_hour: "2".parse().unwrap(),
                provider: None,
                phase: AttemptPhase::Placed,
                reason: None,
                message: None,
                placed_time: None,
                start_time: None,
                finish_time: None,
                gpu_seconds: 0,
                exits: vec![],
                planned_nodes: vec![PlannedNode {
                    node: "a-0".into(),
                    replicas: 2,
                }],
                settlement: None,
                unverified_member: false,
                usage_check: None,
                offer: None,
            }],
            ..Default::default()
        });
        let s = roll_up(&pool(), &members, &Jobs::cached_only(vec![Arc::new(j)]), 0);
        assert_eq!((s.total_gpus, s.free_gpus), (8, 4));
        assert_eq!(s.running_jobs, 1);
    }
}
