//! Translates the hub's view of the API (MemberClusters, ProviderBonds, ComputeJobs) into the plain
//! inputs of the scheduling core, and works out which GPUs are promised to attempts that the
//! members have not reported yet (reservations). Pure functions: unit-tested from fixtures.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};

use gpufed_crds::conditions::{self, member as mc};
use gpufed_crds::{
    AttemptPhase, AttemptRecord, ComputeJob, GpuPool, MemberCluster, ProviderBond, Strategy,
};
use gpufed_scheduler::{
    BondState, ClusterState, GroupQuota, JobRequest, NamespaceQuota, NodeState, Policy, QuotaUse,
    Reservation, Usage,
};

use crate::hub::at_rest::Jobs;

/// The scheduling policy of a pool.
pub fn policy(pool: &GpuPool) -> Policy {
    Policy {
        strategy: match pool.spec.strategy {
            Strategy::CheapestFit => gpufed_scheduler::Strategy::CheapestFit,
            Strategy::BinPack => gpufed_scheduler::Strategy::BinPack,
            Strategy::Spread => gpufed_scheduler::Strategy::Spread,
            Strategy::Auction => gpufed_scheduler::Strategy::Auction,
        },
    }
}

/// The pool's fair-share weights as the scheduler takes them, or `None` when the pool does not
/// share fairly (`spec.fairSharing` absent).
pub fn fair_share(pool: &GpuPool) -> Option<gpufed_scheduler::FairShare> {
    let fs = pool.spec.fair_sharing.as_ref()?;
    Some(gpufed_scheduler::FairShare {
        weights: fs
            .weights
            .iter()
            .map(|w| (w.namespace.clone(), w.weight))
            .collect(),
    })
}

/// The pool's namespace quotas as the scheduler takes them.
pub fn quotas(pool: &GpuPool) -> Vec<NamespaceQuota> {
    pool.spec
        .quotas
        .iter()
        .map(|q| NamespaceQuota {
            namespace: q.namespace.clone(),
            cohort: q.cohort.clone(),
            groups: q
                .groups
                .iter()
                .map(|g| GroupQuota {
                    name: g.name.clone(),
                    models: g.models.clone(),
                    nominal: u64::from(g.gpus),
                    borrowing_limit: g.borrowing_limit.map(u64::from),
                    per_period: g.period.map(|p| gpufed_scheduler::PeriodQuota {
                        period: match p {
                            gpufed_crds::QuotaPeriod::Day => gpufed_scheduler::Period::Day,
                            gpufed_crds::QuotaPeriod::Week => gpufed_scheduler::Period::Week,
                            gpufed_crds::QuotaPeriod::Month => gpufed_scheduler::Period::Month,
                        },
                        gpu_seconds: g.gpu_hours.map(|h| u64::from(h) * 3600),
                        spend: g.spend.map(|s| s.atto()),
                    }),
                })
                .collect(),
        })
        .collect()
}

/// GPUs held by the unfinished attempt of `job`, if it has one (placed, starting or running):
/// what the job counts against its namespace's quota.
pub fn quota_usage(job: &ComputeJob) -> Option<Usage> {
    let status = job.status.as_ref()?;
    if status.phase.is_finished() {
        return None;
    }
    let attempt = status
        .attempts
        .iter()
        .find(|a| a.attempt == status.attempt)?;
    if attempt.phase.is_finished() {
        return None;
    }
    Some(Usage {
        namespace: job.metadata.namespace.clone().unwrap_or_default(),
        model: attempt.model.clone(),
        gpus: u64::from(job.spec.replicas) * u64::from(job.spec.gpus_per_replica),
    })
}

/// Every quota group's use in `pool` from the jobs the cache shows, with the use of the current
/// periods at `now` (Unix seconds) where groups limit GPU-hours or spend. Jobs at rest count only
/// towards the periods (they hold no GPUs).
pub fn quota_report(pool: &GpuPool, jobs: &Jobs, now: u64) -> Vec<QuotaUse> {
    let name = pool.metadata.name.as_deref().unwrap_or_default();
    let usage: Vec<Usage> = jobs
        .cached()
        .iter()
        .filter(|j| j.spec.pool == name)
        .filter_map(|j| quota_usage(j))
        .collect();
    let mut book = gpufed_scheduler::QuotaBook::new(&quotas(pool), &usage);
    if crate::hub::period_usage::has_period_quotas(pool) {
        // Deleted jobs count through the pool's quota ledger (ADR 0019), jobs it names only there.
        let spent = crate::hub::period_usage::pool_usage(pool, jobs.iter(), |_| None, now);
        book = book.with_periods(now, &spent);
    }
    book.report()
}

/// Whether the pool pays on chain and requires a positive bond.
fn requires_bond(pool: &GpuPool) -> bool {
    pool.spec.chain.as_ref().is_some_and(|c| c.bond.is_some())
        && pool.spec.min_bond.is_some_and(|b| b.atto() > 0)
}

/// The bond state of a member in `pool`, from its mirrored ProviderBond (if any).
pub fn bond_state(
    pool: &GpuPool,
    member: &MemberCluster,
    bond: Option<&ProviderBond>,
) -> BondState {
    if pool.spec.chain.is_some() && member.spec.wallet.is_none() {
        return BondState::NoWallet;
    }
    if !requires_bond(pool) {
        return BondState::NotRequired;
    }
    let Some(status) = bond.and_then(|b| b.status.as_ref()) else {
        return BondState::Unknown;
    };
    if status.eligible {
        BondState::Eligible
    } else {
        BondState::Insufficient {
            bonded: status.bonded.map(|b| b.atto()).unwrap_or(0),
            required: status
                .required
                .or(pool.spec.min_bond)
                .map(|b| b.atto())
                .unwrap_or(0),
        }
    }
}

/// A member as the scheduler sees it.
pub fn cluster_state(
    pool: &GpuPool,
    member: &MemberCluster,
    bond: Option<&ProviderBond>,
) -> ClusterState {
    let status = member.status.as_ref();
    let ready = status.is_some_and(|s| conditions::is_true(&s.conditions, mc::READY));
    let inventory = status.and_then(|s| s.inventory.as_ref());
    ClusterState {
        name: member.metadata.name.clone().unwrap_or_default(),
        region: member.spec.region.clone(),
        ready,
        cordoned: member.spec.cordoned,
        bond: bond_state(pool, member, bond),
        verification: crate::hub::challenges::verification_state(pool, member),
        below_floor: crate::hub::reputation::below_floor(pool, member),
        prices: member
            .spec
            .prices
            .iter()
            .map(|p| (p.model.clone(), p.price_per_gpu_hour.atto()))
            .collect(),
        durations: member
            .spec
            .prices
            .iter()
            .filter(|p| p.min_duration.is_some() || p.max_duration.is_some())
            .map(|p| {
                (
                    p.model.clone(),
                    gpufed_scheduler::DurationLimits {
                        min_secs: p.min_duration.map_or(0, |d| d.as_secs_ceil()),
                        max_secs: p.max_duration.map_or(u64::MAX, |d| d.as_secs_ceil()),
                    },
                )
            })
            .collect(),
        nodes: inventory
            .map(|inv| {
                inv.nodes
                    .iter()
                    .map(|n| NodeState {
                        name: n.name.clone(),
                        model: n.model.clone(),
                        gpu_memory_mib: n.gpu_memory_mib,
                        allocatable_gpus: n.allocatable_gpus,
                        free_gpus: n.free_gpus,
                        unhealthy_gpus: n.unhealthy_gpus,
                        ready: n.ready,
                        utilization_percent: n.utilization_percent,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        has_inventory: inventory.is_some(),
    }
}

/// GPUs held per (cluster, model) by the attempts of `jobs` that have not ended.
pub fn held_gpus<J: Borrow<ComputeJob>>(jobs: &[J]) -> HashMap<(String, String), u64> {
    let mut held: HashMap<(String, String), u64> = HashMap::new();
    for job in jobs.iter().map(Borrow::borrow) {
        let Some(status) = job.status.as_ref().filter(|s| !s.phase.is_finished()) else {
            continue;
        };
        let Some(a) = status
            .attempts
            .iter()
            .find(|a| a.attempt == status.attempt && !a.phase.is_finished())
        else {
            continue;
        };
        *held
            .entry((a.cluster.clone(), a.model.clone()))
            .or_default() += u64::from(job.spec.replicas) * u64::from(job.spec.gpus_per_replica);
    }
    held
}

/// Whether some member's prices count GPUs (`gpus`), so that [`held_gpus`] is worth counting.
pub fn any_counted<'a>(members: impl IntoIterator<Item = &'a MemberCluster>) -> bool {
    members
        .into_iter()
        .any(|m| m.spec.prices.iter().any(|p| p.gpus.is_some()))
}

/// GPUs of each model that `member`'s offer still offers to the pool: its `gpus` per model less
/// what the pool's attempts of that model that have not ended hold there (`held`, from
/// [`held_gpus`]; ADR 0024). Models without a count are absent (every free GPU is offered).
pub fn offered_left(
    member: &MemberCluster,
    held: &HashMap<(String, String), u64>,
) -> BTreeMap<String, u64> {
    let name = member.metadata.name.clone().unwrap_or_default();
    member
        .spec
        .prices
        .iter()
        .filter_map(|p| {
            let cap = u64::from(p.gpus?);
            let used = held
                .get(&(name.clone(), p.model.clone()))
                .copied()
                .unwrap_or(0);
            Some((p.model.clone(), cap.saturating_sub(used)))
        })
        .collect()
}

/// Lowers the free GPUs of `cluster`'s nodes so that, after the scheduler takes `reservations`
/// off them, no more than `left` GPUs of each counted model are free in all (nodes by name).
pub fn cap_offered(
    cluster: &mut ClusterState,
    left: &BTreeMap<String, u64>,
    reservations: &[Reservation],
) {
    if left.is_empty() {
        return;
    }
    let mut budget = left.clone();
    // GPUs reserved per node of this cluster, summed in one pass over the reservations.
    let mut reserved_on: BTreeMap<&str, u32> = BTreeMap::new();
    for r in reservations.iter().filter(|r| r.cluster == cluster.name) {
        let e = reserved_on.entry(r.node.as_str()).or_default();
        *e = e.saturating_add(r.gpus);
    }
    let mut order: Vec<usize> = (0..cluster.nodes.len()).collect();
    order.sort_by(|&a, &b| cluster.nodes[a].name.cmp(&cluster.nodes[b].name));
    for i in order {
        let node = &mut cluster.nodes[i];
        let Some(b) = budget.get_mut(&node.model) else {
            continue;
        };
        let reserved = reserved_on.get(node.name.as_str()).copied().unwrap_or(0);
        let offered = node.offered_gpus();
        let available = u64::from(offered.saturating_sub(reserved));
        let keep = available.min(*b);
        *b -= keep;
        let cut = u32::try_from(available - keep).unwrap_or(u32::MAX);
        node.free_gpus = offered.saturating_sub(cut);
    }
}

/// `namespace/name` of a job: the key the scheduler and the hub use for it.
pub fn job_key(job: &ComputeJob) -> String {
    format!(
        "{}/{}",
        job.metadata.namespace.as_deref().unwrap_or_default(),
        job.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Clusters where an earlier attempt of the job failed or was lost.
pub fn failed_on(job: &ComputeJob) -> Vec<String> {
    let mut clusters: Vec<String> = job
        .status
        .iter()
        .flat_map(|s| &s.attempts)
        .filter(|a| matches!(a.phase, AttemptPhase::Failed | AttemptPhase::Lost))
        .map(|a| a.cluster.clone())
        .collect();
    clusters.sort();
    clusters.dedup();
    clusters
}

/// Members that published no sealing key (`status.sealingKey`, ADR 0020): an agent older than
/// sealed secrets, or one that has not reported yet. Jobs that use Secrets are not placed there.
pub fn keyless_members<'a>(members: impl IntoIterator<Item = &'a MemberCluster>) -> Vec<String> {
    members
        .into_iter()
        .filter(|m| {
            m.status
                .as_ref()
                .and_then(|s| s.sealing_key.as_deref())
                .is_none_or(str::is_empty)
        })
        .map(|m| m.metadata.name.clone().unwrap_or_default())
        .collect()
}

/// A pending job as the scheduler sees it. `order` is its place in the queue (creation order).
pub fn job_request(job: &ComputeJob, order: u64) -> JobRequest {
    let spec = &job.spec;
    JobRequest {
        key: job_key(job),
        replicas: spec.replicas,
        gpus_per_replica: spec.gpus_per_replica,
        models: spec.gpu.models.clone(),
        min_gpu_memory_mib: u64::from(spec.gpu.min_memory_gib) * 1024,
        max_price: spec.max_price_per_gpu_hour.map(|p| p.atto()),
        regions: spec.regions.clone().unwrap_or_default(),
        exclude: spec.exclude_clusters.clone().unwrap_or_default(),
        failed_on: failed_on(job),
        // The pool's `verification.allowUnverifiedJobs` is applied where the pool is known.
        allow_unverified: spec.allow_unverified,
        // The priority admission granted (a class's value), else the raw one.
        priority: job
            .status
            .as_ref()
            .and_then(|s| s.priority)
            .unwrap_or(spec.priority),
        order,
        max_duration_secs: spec.max_duration.as_secs_ceil(),
        max_spend: crate::hub::settlement::lock_amount(job).map(|a| a.atto()),
    }
}

/// Creation time of an object in seconds since the epoch (its queue order); 0 if unset.
pub fn creation_order(job: &ComputeJob) -> u64 {
    job.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| u64::try_from(t.0.as_second()).unwrap_or(0))
        .unwrap_or(0)
}

/// GPUs promised to active attempts that the members' inventories do not show yet.
///
/// An attempt reserves `replicas × gpusPerReplica` on the nodes the hub planned until its member
/// reports it Running *and* the member's inventory was taken after the pods started (from then on
/// the inventory's free count already excludes them).
pub fn reservations<J, M>(jobs: &[J], members: &BTreeMap<String, M>) -> Vec<Reservation>
where
    J: Borrow<ComputeJob>,
    M: Borrow<MemberCluster>,
{
    let mut out = vec![];
    for job in jobs.iter().map(Borrow::borrow) {
        let Some(status) = job.status.as_ref() else {
            continue;
        };
        if status.phase.is_finished() {
            continue;
        }
        let Some(attempt) = status.attempts.iter().find(|a| a.attempt == status.attempt) else {
            continue;
        };
        if attempt.phase.is_finished() {
            continue;
        }
        if inventory_shows(attempt, members) {
            continue;
        }
        for planned in &attempt.planned_nodes {
            out.push(Reservation {
                cluster: attempt.cluster.clone(),
                node: planned.node.clone(),
                gpus: planned.replicas.saturating_mul(job.spec.gpus_per_replica),
            });
        }
    }
    out
}

/// Whether the inventory of `attempt`'s member already counts its GPUs as used: it runs, and the
/// inventory was taken after its pods started. Both times are whole seconds, so an inventory
/// stamped with the second the pods started in may have been taken before them (its free count
/// still including their GPUs): only one of a later second counts.
pub fn inventory_shows<M: Borrow<MemberCluster>>(
    attempt: &AttemptRecord,
    members: &BTreeMap<String, M>,
) -> bool {
    if attempt.phase != AttemptPhase::Running {
        return false;
    }
    let inventory_time = members
        .get(&attempt.cluster)
        .and_then(|m| m.borrow().status.as_ref())
        .and_then(|s| s.inventory.as_ref())
        .and_then(|i| i.update_time.as_ref());
    match (inventory_time, attempt.start_time.as_ref()) {
        (Some(inv), Some(start)) => inv.0.as_second() > start.0.as_second(),
        _ => false,
    }
}

/// GPUs reserved per `(cluster, node)`, summed: one map per pass instead of a scan of every
/// reservation for every node.
pub fn reserved_by_node(reservations: &[Reservation]) -> HashMap<(&str, &str), u32> {
    let mut out: HashMap<(&str, &str), u32> = HashMap::new();
    for r in reservations {
        *out.entry((r.cluster.as_str(), r.node.as_str()))
            .or_default() += r.gpus;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufed_crds::testing::{job, member};
    use gpufed_crds::{
        AttemptRecord, ChainSpec, ComputeJobStatus, GpuPoolSpec, Inventory, JobPhase,
        MemberClusterStatus, NodeInventory, PlannedNode, ProviderBondSpec, ProviderBondStatus,
        SecretKeyRef,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn pool(chain: bool, min_bond: Option<&str>) -> GpuPool {
        let addr = || {
            "0x5FbDB2315678afecb367f032d93F642f64180aa3"
                .parse()
                .unwrap()
        };
        GpuPool::new(
            "default",
            GpuPoolSpec {
                strategy: Strategy::BinPack,
                min_bond: min_bond.map(|b| b.parse().unwrap()),
                chain: chain.then(|| ChainSpec {
                    rpc_url: "http://127.0.0.1:8545".into(),
                    chain_id: 31337,
                    token: addr(),
                    escrow: addr(),
                    bond: Some(addr()),
                    hub_key_secret_ref: SecretKeyRef {
                        namespace: "gpufed-system".into(),
                        name: "k".into(),
                        key: "k".into(),
                    },
                    lock_grace: "1h".parse().unwrap(),
                    tx_timeout: gpufed_crds::KubeDuration::from_secs(60),
                    confirmations: 1,
                    log_block_range: 5000,
                }),
                ..gpufed_crds::testing::pool_spec()
            },
        )
    }

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn ready_member(name: &str) -> MemberCluster {
        let mut m = member(name, "H100", "2.40").region("eu-west").build();
        m.status = Some(MemberClusterStatus {
            conditions: vec![conditions::condition(
                mc::READY,
                true,
                "Heartbeat",
                "",
                None,
                at(1),
            )],
            inventory: Some(Inventory {
                update_time: Some(at(100)),
                nodes: vec![NodeInventory {
                    name: "n1".into(),
                    model: "H100".into(),
                    gpu_memory_mib: 81559,
                    allocatable_gpus: 8,
                    free_gpus: 6,
                    unhealthy_gpus: 0,
                    telemetry_stale: false,
                    utilization_percent: 40,
                    ready: true,
                    gpu_uuids: Vec::new(),
                }],
            }),
            ..Default::default()
        });
        m
    }

    #[test]
    fn a_ready_member_becomes_a_cluster_with_nodes_and_prices() {
        let c = cluster_state(&pool(false, None), &ready_member("alpha"), None);
        assert_eq!(c.name, "alpha");
        assert!(c.ready && c.has_inventory && !c.cordoned);
        assert_eq!(c.prices["H100"], 2_400_000_000_000_000_000);
        assert_eq!(c.nodes[0].free_gpus, 6);
        assert_eq!(c.bond, BondState::NotRequired);
    }

    #[test]
    fn the_scheduler_sees_the_members_verification_only_in_pools_that_require_it() {
        use gpufed_scheduler::VerificationState;
        let mut p = pool(false, None);
        let m = ready_member("alpha");
        assert_eq!(
            cluster_state(&p, &m, None).verification,
            VerificationState::NotRequired
        );
        p.spec.verification = Some(
            serde_json::from_value(serde_json::json!({"required": true, "image": "probe:1"}))
                .unwrap(),
        );
        assert_eq!(
            cluster_state(&p, &m, None).verification,
            VerificationState::Unverified {
                message: "no challenge answered yet; set spec.allowUnverified: true on the job to accept it".into()
            }
        );
        // The hub's own challenges are decided under the pool without required verification.
        assert_eq!(
            cluster_state(&crate::hub::challenges::hub_pool(&p), &m, None).verification,
            VerificationState::NotRequired
        );
    }

    #[test]
    fn a_member_without_status_is_not_ready_and_has_no_inventory() {
        let c = cluster_state(
            &pool(false, None),
            &member("beta", "A100", "1").build(),
            None,
        );
        assert!(!c.ready && !c.has_inventory && c.nodes.is_empty());
    }

    #[test]
    fn bonds_matter_only_in_pools_with_a_chain_and_a_minimum() {
        let m = ready_member("alpha");
        assert_eq!(bond_state(&pool(true, None), &m, None), BondState::NoWallet);
        let mut with_wallet = m.clone();
        with_wallet.spec.wallet = Some(
            "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            bond_state(&pool(true, None), &with_wallet, None),
            BondState::NotRequired
        );
        assert_eq!(
            bond_state(&pool(true, Some("100")), &with_wallet, None),
            BondState::Unknown
        );
        let mut bond = ProviderBond::new(
            "alpha",
            ProviderBondSpec {
                member_cluster: "alpha".into(),
                pool: "default".into(),
                provider: with_wallet.spec.wallet.clone().unwrap(),
            },
        );
        bond.status = Some(ProviderBondStatus {
            bonded: Some("50".parse().unwrap()),
            required: Some("100".parse().unwrap()),
            eligible: false,
            ..Default::default()
        });
        assert_eq!(
            bond_state(&pool(true, Some("100")), &with_wallet, Some(&bond)),
            BondState::Insufficient {
                bonded: 50 * gpufed_scheduler::ONE_TOKEN,
                required: 100 * gpufed_scheduler::ONE_TOKEN
            }
        );
        bond.status.as_mut().unwrap().eligible = true;
        assert_eq!(
            bond_state(&pool(true, Some("100")), &with_wallet, Some(&bond)),
            BondState::Eligible
        );
    }

    #[test]
    fn members_without_a_sealing_key_are_listed_as_keyless() {
        let old = member("old", "H100", "2").build();
        let mut new = member("new", "H100", "2").build();
        new.status.get_or_insert_with(Default::default).sealing_key = Some("a2V5".into());
        assert_eq!(keyless_members([&old, &new]), ["old"]);
    }

    #[test]
    fn a_job_becomes_a_request_with_memory_in_mib_and_clusters_it_failed_on() {
        let mut j = job("train")
            .gpus(8)
            .models(&["H100"])
            .min_memory_gib(80)
            .max_price("3")
            .build();
        j.status = Some(ComputeJobStatus {
            attempts: vec![
                attempt(1, "alpha", AttemptPhase::Lost),
                attempt(2, "beta", AttemptPhase::Failed),
            ],
            ..Default::default()
        });
        let r = job_request(&j, 7);
        assert_eq!(r.key, "team-a/train");
        assert_eq!(r.min_gpu_memory_mib, 80 * 1024);
        // Reported sizes are a little below the advertised 80 GB: an H100 80GB (81,559 MiB)
        // qualifies, a 40 GB A100 does not; the Placement tells the member the same threshold.
        assert!(r.memory_threshold_mib() <= 81_559 && r.memory_threshold_mib() > 40_960);
        assert_eq!(r.memory_threshold_mib(), j.spec.gpu.min_gpu_memory_mib());
        assert_eq!(r.max_price, Some(3 * gpufed_scheduler::ONE_TOKEN));
        assert_eq!(r.failed_on, ["alpha", "beta"]);
        assert_eq!(r.order, 7);
    }

    fn attempt(n: u32, cluster: &str, phase: AttemptPhase) -> AttemptRecord {
        AttemptRecord {
            planned_nodes: vec![PlannedNode {
                node: "n1".into(),
                replicas: 2,
            }],
            ..gpufed_crds::testing::attempt(n, cluster, phase)
        }
    }

    fn active(phase: AttemptPhase, start: Option<i64>) -> ComputeJob {
        let mut j = job("j").gpus(4).replicas(2).build();
        let mut a = attempt(1, "alpha", phase);
        a.start_time = start.map(at);
        j.status = Some(ComputeJobStatus {
            phase: JobPhase::Placed,
            attempt: 1,
            attempts: vec![a],
            ..Default::default()
        });
        j
    }

    #[test]
    fn placed_attempts_reserve_their_gpus_on_the_planned_nodes() {
        let members = BTreeMap::from([("alpha".to_string(), ready_member("alpha"))]);
        let r = reservations(&[active(AttemptPhase::Placed, None)], &members);
        assert_eq!(
            r,
            [Reservation {
                cluster: "alpha".into(),
                node: "n1".into(),
                gpus: 8
            }]
        );
    }

    #[test]
    fn running_attempts_stop_reserving_once_the_inventory_shows_them() {
        let members = BTreeMap::from([("alpha".to_string(), ready_member("alpha"))]);
        // Inventory taken at t=100: pods that started at 90 are in it, pods that started at 110 are not.
        assert!(reservations(&[active(AttemptPhase::Running, Some(90))], &members).is_empty());
        assert!(reservations(&[active(AttemptPhase::Running, Some(99))], &members).is_empty());
        assert_eq!(
            reservations(&[active(AttemptPhase::Running, Some(110))], &members).len(),
            1
        );
        // Pods that started in the second the inventory was taken in may have started after it.
        assert_eq!(
            reservations(&[active(AttemptPhase::Running, Some(100))], &members).len(),
            1
        );
    }

    #[test]
    fn an_offer_of_n_gpus_caps_what_the_scheduler_sees_after_the_pools_attempts_and_reservations() {
        // alpha offers 10 H100s; an active attempt of 2 × 4 holds 8 of them (its model is H100).
        let mut m = member("alpha", "H100", "2").build();
        m.spec.prices[0].gpus = Some(10);
        let mut busy = active(AttemptPhase::Placed, None);
        busy.status.as_mut().unwrap().attempts[0].model = "H100".into();
        let mut ended = active(AttemptPhase::Succeeded, None);
        ended.status.as_mut().unwrap().attempts[0].model = "H100".into();
        let held = held_gpus(&[busy.clone(), ended]);
        assert_eq!(held.len(), 1);
        let left = offered_left(&m, &held);
        assert_eq!(left, BTreeMap::from([("H100".to_string(), 2)]));
        assert!(any_counted([&m]));
        // Without a count nothing is capped.
        let plain = member("alpha", "H100", "2").build();
        assert!(offered_left(&plain, &held).is_empty());
        assert!(!any_counted([&plain]));

        // Two 8-GPU nodes, 8 and 6 free; the attempt's 8 GPUs still reserved on n1 (not yet in the
        // inventory): the scheduler may use 2 in all, after it takes the reservation off n1.
        let node = |name: &str, free: u32| NodeState {
            name: name.into(),
            model: "H100".into(),
            gpu_memory_mib: 81_559,
            allocatable_gpus: 8,
            free_gpus: free,
            unhealthy_gpus: 0,
            ready: true,
            utilization_percent: 0,
        };
        let mut c = ClusterState {
            name: "alpha".into(),
            nodes: vec![node("n2", 6), node("n1", 8)],
            ..Default::default()
        };
        let held = [Reservation {
            cluster: "alpha".into(),
            node: "n1".into(),
            gpus: 8,
        }];
        cap_offered(&mut c, &left, &held);
        let free: Vec<(String, u32)> = c
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.free_gpus))
            .collect();
        // n1: 8 offered, 8 reserved, nothing left to cut; n2: 2 of its 6 kept.
        assert_eq!(free, [("n2".to_string(), 2), ("n1".to_string(), 8)]);
        // A model the offer does not count is left alone.
        let mut l4 = ClusterState {
            name: "alpha".into(),
            nodes: vec![NodeState {
                model: "L4".into(),
                ..node("n3", 4)
            }],
            ..Default::default()
        };
        cap_offered(&mut l4, &left, &[]);
        assert_eq!(l4.nodes[0].free_gpus, 4);
    }

    #[test]
    fn an_offers_duration_limits_reach_the_scheduler() {
        let mut m = member("alpha", "H100", "2").price("L4", "1").build();
        m.spec.prices[0].min_duration = Some(gpufed_crds::KubeDuration::from_secs(600));
        m.spec.prices[0].max_duration = Some(gpufed_crds::KubeDuration::from_secs(7200));
        let c = cluster_state(&pool(false, None), &m, None);
        assert_eq!(
            c.durations,
            BTreeMap::from([(
                "H100".to_string(),
                gpufed_scheduler::DurationLimits {
                    min_secs: 600,
                    max_secs: 7200
                }
            )])
        );
    }

    #[test]
    fn finished_attempts_reserve_nothing() {
        let members: BTreeMap<String, MemberCluster> = BTreeMap::new();
        for phase in [
            AttemptPhase::Succeeded,
            AttemptPhase::Failed,
            AttemptPhase::Lost,
        ] {
            assert!(
                reservations(&[active(phase, None)], &members).is_empty(),
                "{phase:?}"
            );
        }
    }

    #[test]
    fn the_pool_strategy_maps_onto_the_core() {
        assert_eq!(
            policy(&pool(false, None)).strategy,
            gpufed_scheduler::Strategy::BinPack
        );
    }
}
