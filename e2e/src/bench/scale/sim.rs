//! Every member's agent at once, as one light set of tasks in the benchmark's process: the hub-side
//! calls a real agent makes (`operator/src/agent/{heartbeat,member_status,sync}.rs`), with the
//! same bodies, field manager and intervals, for all members:
//!
//! * **heartbeat**: a merge patch of the member's Lease (`holderIdentity`, `renewTime`,
//!   `leaseDurationSeconds`) every heartbeat interval;
//! * **inventory**: every inventory interval a read of the MemberCluster (the agent reads the
//!   pool's heartbeat timeout from it), then a server-side apply of the agent's status fields when
//!   the inventory changed *or the last one written is an interval old* — the agent's
//!   `inventory::needs_write`, so an unchanged inventory is still rewritten about once an
//!   interval. Free GPUs are the nodes' GPUs less those of the running placements;
//! * **placements**: a new Placement is reported `Accepted`, then at once `Running` (the jobs
//!   [`runs`] picks) or `Succeeded` with one container exit; a running placement's GPU-seconds
//!   are rewritten every usage-report interval.
//!
//! What differs from 1,000 agents: one admin client (`system:masters`, so RBAC is not evaluated)
//! instead of each member's credentials, one watch on every Placement instead of one per member
//! namespace, and no member-side clusters. Every write is counted by kind ([`SimTotals`]), so the
//! apiserver's counts split into the simulator's and the hub's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use gpufed_crds::naming::{heartbeat_lease_name, member_namespace};
use gpufed_crds::{ContainerExit, MemberCluster, NodeInventory, Placement, PlacementPhase};
use gpufed_crds::{Inventory, PlacementStatus};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};

use crate::bench::apimetrics::{RequestCount, RequestKey};
use crate::hubctl::node;

/// The agent's field manager on the hub (`operator/src/agent/api.rs`).
pub const FIELD_MANAGER: &str = "gpufed-agent";
/// GPUs per simulated node (8 × H100, 80 GiB).
pub const GPUS_PER_NODE: u32 = 8;
/// Requests of one kind in flight at once.
const IN_FLIGHT: usize = 16;
/// Heartbeat renewals in flight at once: 1,000 members in 5 s is 200 a second.
const HEARTBEATS_IN_FLIGHT: usize = 32;

/// The agent's intervals, from the member chart's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Intervals {
    /// `agent.heartbeatInterval`.
    pub heartbeat: Duration,
    /// `agent.inventoryInterval`.
    pub inventory: Duration,
    /// `agent.usageReportInterval`.
    pub usage: Duration,
    /// The pool's heartbeat timeout, written into each renewal as the agent does.
    pub pool_timeout: Duration,
}

/// Whether job number `index` is one that keeps running, for `per_million` running jobs in a
/// million: exactly `n × per_million / 1e6` of the first `n` jobs do, spread evenly.
pub fn runs(index: u64, per_million: u64) -> bool {
    (index + 1) * per_million / 1_000_000 > index * per_million / 1_000_000
}

/// How many of the first `jobs` jobs keep running (see [`runs`]).
pub fn running_of(jobs: u64, per_million: u64) -> u64 {
    jobs * per_million / 1_000_000
}

/// A member's inventory with `used` GPUs taken, node after node: what the agent reports.
pub fn inventory(member: &str, nodes: usize, used: u32) -> (Vec<NodeInventory>, u32, u32, String) {
    let mut left = used;
    let nodes: Vec<NodeInventory> = (0..nodes)
        .map(|n| {
            let taken = left.min(GPUS_PER_NODE);
            left -= taken;
            node(
                &format!("{member}-n{n}"),
                "H100",
                81559,
                GPUS_PER_NODE,
                GPUS_PER_NODE - taken,
            )
        })
        .collect();
    let total: u32 = nodes.iter().map(|n| n.allocatable_gpus).sum();
    let free: u32 = nodes.iter().map(|n| n.free_gpus).sum();
    let summary = if total > 0 {
        format!("H100x{total}")
    } else {
        String::new()
    };
    (nodes, total, free, summary)
}

/// The simulator's requests up to a moment, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimTotals {
    /// Lease renewals (merge patches), whatever the answer.
    pub renewals: u64,
    /// Of those, failed.
    pub renewals_failed: u64,
    /// Inventory applies (`memberclusters/status`).
    pub inventories: u64,
    /// Of those, failed.
    pub inventories_failed: u64,
    /// Placement status applies.
    pub statuses: u64,
    /// Of those, failed.
    pub statuses_failed: u64,
    /// Reads of a MemberCluster (GET).
    pub member_reads: u64,
    /// Placements reported Running.
    pub running: u64,
    /// Placements reported Succeeded.
    pub succeeded: u64,
}

impl SimTotals {
    /// What happened from `before` to `self`.
    pub fn since(&self, before: &SimTotals) -> SimTotals {
        SimTotals {
            renewals: self.renewals.saturating_sub(before.renewals),
            renewals_failed: self.renewals_failed.saturating_sub(before.renewals_failed),
            inventories: self.inventories.saturating_sub(before.inventories),
            inventories_failed: self
                .inventories_failed
                .saturating_sub(before.inventories_failed),
            statuses: self.statuses.saturating_sub(before.statuses),
            statuses_failed: self.statuses_failed.saturating_sub(before.statuses_failed),
            member_reads: self.member_reads.saturating_sub(before.member_reads),
            running: self.running.saturating_sub(before.running),
            succeeded: self.succeeded.saturating_sub(before.succeeded),
        }
    }

    /// The writes, in the apiserver's terms (`apiserver_request_total` labels).
    pub fn writes(&self) -> Vec<RequestCount> {
        let key = |group: &str, resource: &str, sub: &str, verb: &str| RequestKey {
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            verb: verb.into(),
        };
        [
            (
                key("coordination.k8s.io", "leases", "", "PATCH"),
                self.renewals,
                self.renewals_failed,
            ),
            (
                key("gpufed.io", "memberclusters", "status", "APPLY"),
                self.inventories,
                self.inventories_failed,
            ),
            (
                key("gpufed.io", "placements", "status", "APPLY"),
                self.statuses,
                self.statuses_failed,
            ),
        ]
        .into_iter()
        .filter(|(_, total, _)| *total > 0)
        .map(|(key, total, failed)| RequestCount { key, total, failed })
        .collect()
    }
}

#[derive(Default)]
struct Counts {
    renewals: AtomicU64,
    renewals_failed: AtomicU64,
    inventories: AtomicU64,
    inventories_failed: AtomicU64,
    statuses: AtomicU64,
    statuses_failed: AtomicU64,
    member_reads: AtomicU64,
    running: AtomicU64,
    succeeded: AtomicU64,
    heartbeat_round: Round,
    inventory_round: Round,
    /// Failed requests by what was asked and how it failed ([`failure_class`]).
    failures: Mutex<BTreeMap<String, u64>>,
}

/// The longest round of a periodic task since it was last taken, counting the round in progress.
#[derive(Default)]
struct Round {
    max: Mutex<Duration>,
    started: Mutex<Option<Instant>>,
}

impl Round {
    fn start(&self) {
        *lock(&self.started) = Some(Instant::now());
    }

    fn end(&self) {
        if let Some(t) = lock(&self.started).take() {
            let mut max = lock(&self.max);
            *max = (*max).max(t.elapsed());
        }
    }

    /// The longest round since the last call, the one still running included; resets.
    fn take(&self) -> Duration {
        let running = lock(&self.started).map_or(Duration::ZERO, |t| t.elapsed());
        std::mem::take(&mut *lock(&self.max)).max(running)
    }
}

/// Counts a request in `total`, and in `failed` and the failures by class when it failed.
fn count<T>(
    counts: &Counts,
    what: &str,
    total: &AtomicU64,
    failed: &AtomicU64,
    r: &Result<T, kube::Error>,
) {
    total.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = r {
        failed.fetch_add(1, Ordering::Relaxed);
        *lock(&counts.failures)
            .entry(format!("{what}: {}", failure_class(e)))
            .or_default() += 1;
    }
}

/// How a request failed, in few enough words that failures of one cause share it: the
/// apiserver's code and reason, or the client's error kind.
fn failure_class(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} {}", s.code, s.reason),
        other => other.to_string().chars().take(100).collect(),
    }
}

/// A placement reported Running.
struct Running {
    member: String,
    gpus: u32,
    start: Timestamp,
    replicas: u32,
    last_write: Instant,
}

type Key = (String, String);

struct State {
    client: Client,
    members: Vec<String>,
    nodes_per_member: usize,
    intervals: Intervals,
    running_per_million: u64,
    counts: Counts,
    running: Mutex<HashMap<Key, Running>>,
    /// Each job's index by UID, as the bench created them ([`Simulator::created`]): a Placement
    /// names its job by UID only (ADR 0037).
    indexes: Mutex<HashMap<String, u64>>,
    /// Last inventory written per member, with when.
    inventories: Mutex<HashMap<String, (u32, Instant)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The simulated agents, running until dropped.
pub struct Simulator {
    state: Arc<State>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Simulator {
    /// Starts every member's heartbeat, inventory and placement reporting.
    pub fn start(
        client: Client,
        members: Vec<String>,
        nodes_per_member: usize,
        intervals: Intervals,
        running_per_million: u64,
    ) -> Simulator {
        let state = Arc::new(State {
            client,
            members,
            nodes_per_member,
            intervals,
            running_per_million,
            counts: Counts::default(),
            running: Mutex::default(),
            indexes: Mutex::default(),
            inventories: Mutex::default(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let tasks = vec![
            tokio::spawn(heartbeats(state.clone())),
            tokio::spawn(inventories(state.clone())),
            tokio::spawn(watch_placements(state.clone(), tx)),
            tokio::spawn(take_on_placements(state.clone(), rx)),
            tokio::spawn(usage_reports(state.clone())),
        ];
        Simulator { state, tasks }
    }

    /// Notes that the job with `uid` was created as the `index`-th (`job-<index>`), so its
    /// Placement is run as [`runs`] says.
    pub fn created(&self, uid: &str, index: u64) {
        lock(&self.state.indexes).insert(uid.to_string(), index);
    }

    /// The requests made so far.
    pub fn totals(&self) -> SimTotals {
        let c = &self.state.counts;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SimTotals {
            renewals: n(&c.renewals),
            renewals_failed: n(&c.renewals_failed),
            inventories: n(&c.inventories),
            inventories_failed: n(&c.inventories_failed),
            statuses: n(&c.statuses),
            statuses_failed: n(&c.statuses_failed),
            member_reads: n(&c.member_reads),
            running: n(&c.running),
            succeeded: n(&c.succeeded),
        }
    }

    /// The failed requests so far by what was asked and how it failed, most first, e.g.
    /// `placement status: 504 Timeout ×12`; `none` without failures.
    pub fn failures(&self) -> String {
        let mut all: Vec<(String, u64)> = lock(&self.state.counts.failures)
            .iter()
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        if all.is_empty() {
            return "none".into();
        }
        all.iter()
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The longest heartbeat round and inventory round since the last call (a round still
    /// running counts for as long as it has run), in seconds: a round longer than its interval
    /// means the simulator, or the apiserver, did not keep up.
    pub fn take_round_max(&self) -> (f64, f64) {
        let c = &self.state.counts;
        (
            c.heartbeat_round.take().as_secs_f64(),
            c.inventory_round.take().as_secs_f64(),
        )
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn ticker(every: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(every);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

async fn heartbeats(state: Arc<State>) {
    let mut tick = ticker(state.intervals.heartbeat);
    let secs = i32::try_from(state.intervals.pool_timeout.as_secs().max(1)).unwrap_or(i32::MAX);
    loop {
        tick.tick().await;
        state.counts.heartbeat_round.start();
        futures::stream::iter(&state.members)
            .for_each_concurrent(HEARTBEATS_IN_FLIGHT, |m| {
                let state = &state;
                async move {
                    let api: Api<Lease> =
                        Api::namespaced(state.client.clone(), &member_namespace(m));
                    // The agent's renewal (`heartbeat::renewal`).
                    let body = serde_json::json!({"spec": {
                        "holderIdentity": format!("{m}-agent"),
                        "renewTime": MicroTime(Timestamp::now()),
                        "leaseDurationSeconds": secs,
                    }});
                    let r = api
                        .patch(
                            &heartbeat_lease_name(m),
                            &PatchParams::default(),
                            &Patch::Merge(&body),
                        )
                        .await;
                    let c = &state.counts;
                    count(c, "lease renewal", &c.renewals, &c.renewals_failed, &r);
                }
            })
            .await;
        state.counts.heartbeat_round.end();
    }
}

async fn inventories(state: Arc<State>) {
    let mut tick = ticker(state.intervals.inventory);
    loop {
        tick.tick().await;
        state.counts.inventory_round.start();
        let mut used: HashMap<String, u32> = HashMap::new();
        for r in lock(&state.running).values() {
            *used.entry(r.member.clone()).or_default() += r.gpus;
        }
        futures::stream::iter(&state.members)
            .for_each_concurrent(IN_FLIGHT, |m| {
                let state = &state;
                let used = used.get(m).copied().unwrap_or(0);
                async move { report_inventory(state, m, used).await }
            })
            .await;
        state.counts.inventory_round.end();
    }
}

async fn report_inventory(state: &State, member: &str, used: u32) {
    let api: Api<MemberCluster> = Api::all(state.client.clone());
    // The agent reads its MemberCluster first (the pool's heartbeat timeout).
    let read = api.get(member).await;
    state.counts.member_reads.fetch_add(1, Ordering::Relaxed);
    if read.is_err() {
        return;
    }
    let due = match lock(&state.inventories).get(member) {
        None => true,
        Some((was, at)) => *was != used || at.elapsed() >= state.intervals.inventory,
    };
    if !due {
        return;
    }
    let now = Timestamp::now();
    let (nodes, total, free, summary) = inventory(member, state.nodes_per_member, used);
    let body = serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "MemberCluster", "metadata": {"name": member},
        "status": {
            "inventory": Inventory { update_time: Some(Time(now)), nodes },
            "totalGpus": total, "freeGpus": free, "modelSummary": summary,
            "agentVersion": env!("CARGO_PKG_VERSION"),
        }
    });
    let r = api
        .patch_status(
            member,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await;
    let c = &state.counts;
    count(c, "inventory", &c.inventories, &c.inventories_failed, &r);
    if r.is_ok() {
        lock(&state.inventories).insert(member.to_string(), (used, Instant::now()));
    }
}

async fn watch_placements(state: Arc<State>, tx: mpsc::UnboundedSender<Placement>) {
    let mut seen: HashSet<Key> = HashSet::new();
    let api: Api<Placement> = Api::all(state.client.clone());
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                let key = (p.namespace().unwrap_or_default(), p.name_any());
                let reported = p.status.as_ref().is_some_and(|s| s.phase.is_some());
                if !reported && seen.insert(key) && tx.send(p).is_err() {
                    return;
                }
            }
            Ok(watcher::Event::Delete(p)) => {
                let key = (p.namespace().unwrap_or_default(), p.name_any());
                lock(&state.running).remove(&key);
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "simulator's placement watch"),
        }
    }
}

async fn take_on_placements(state: Arc<State>, mut rx: mpsc::UnboundedReceiver<Placement>) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(p) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            take_on(&state, &p).await;
        });
    }
}

/// Writes a Placement's status as the agent does (`sync::status_body`), retrying a failure until
/// it is written or the Placement is gone (as the agent's controller requeues a failed sync, with
/// a backoff capped at [`STATUS_RETRY_MAX`]); whether it was written. A simulator that gave up
/// would leave the Placement unreported until the hub's start timeout moved the job elsewhere,
/// which no agent does.
async fn write_status(state: &State, ns: &str, name: &str, status: &PlacementStatus) -> bool {
    let api: Api<Placement> = Api::namespaced(state.client.clone(), ns);
    for attempt in 1u64.. {
        let mut status = status.clone();
        status.last_update_time = Some(Time(Timestamp::now()));
        let body = serde_json::json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "Placement",
                                      "metadata": {"name": name}, "status": status});
        let r = api
            .patch_status(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await;
        let c = &state.counts;
        count(c, "placement status", &c.statuses, &c.statuses_failed, &r);
        match r {
            Ok(_) => return true,
            Err(kube::Error::Api(e)) if e.code == 404 => return false,
            Err(e) => {
                tracing::debug!(placement = %name, error = %e, "simulated status write");
                tokio::time::sleep(Duration::from_secs(attempt).min(STATUS_RETRY_MAX)).await;
            }
        }
    }
    false
}

/// The index the bench noted for the job with `uid`. The bench notes it as soon as the create
/// returns, long before the hub places the job; a Placement seen first waits for it a little.
async fn index_of(state: &State, uid: &str) -> Option<u64> {
    for _ in 0..100 {
        if let Some(i) = lock(&state.indexes).get(uid).copied() {
            return Some(i);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!(%uid, "a Placement of a job the bench did not create: it succeeds at once");
    None
}

/// The longest wait between two tries of a Placement status write.
const STATUS_RETRY_MAX: Duration = Duration::from_secs(10);

async fn take_on(state: &State, p: &Placement) {
    let (ns, name) = (p.namespace().unwrap_or_default(), p.name_any());
    let start = Time(Timestamp::now());
    let accepted = PlacementStatus {
        phase: Some(PlacementPhase::Accepted),
        local_job: Some(name.clone()),
        ..Default::default()
    };
    if !write_status(state, &ns, &name, &accepted).await {
        return;
    }
    let keeps_running = index_of(state, &p.spec.job.uid)
        .await
        .is_some_and(|i| runs(i, state.running_per_million));
    if keeps_running {
        let running = PlacementStatus {
            phase: Some(PlacementPhase::Running),
            active_replicas: p.spec.replicas,
            start_time: Some(start.clone()),
            ..accepted
        };
        if write_status(state, &ns, &name, &running).await {
            state.counts.running.fetch_add(1, Ordering::Relaxed);
            lock(&state.running).insert(
                (ns, name),
                Running {
                    member: p.spec.cluster.clone(),
                    gpus: p.spec.total_gpus,
                    start: start.0,
                    replicas: p.spec.replicas,
                    last_write: Instant::now(),
                },
            );
        }
        return;
    }
    let end = Time(Timestamp::now());
    let secs = end.0.duration_since(start.0).as_secs().max(1);
    let succeeded = PlacementStatus {
        phase: Some(PlacementPhase::Succeeded),
        succeeded_replicas: p.spec.replicas,
        start_time: Some(start.clone()),
        finish_time: Some(end.clone()),
        gpu_seconds: u64::from(p.spec.total_gpus) * u64::try_from(secs).unwrap_or(1),
        exits: vec![ContainerExit {
            replica: 0,
            container: "main".into(),
            exit_code: 0,
            reason: Some("Completed".into()),
            message: None,
            started_at: Some(start),
            finished_at: Some(end),
        }],
        ..accepted
    };
    if write_status(state, &ns, &name, &succeeded).await {
        state.counts.succeeded.fetch_add(1, Ordering::Relaxed);
    }
}

/// Rewrites each running placement's GPU-seconds once its last write is a usage interval old.
async fn usage_reports(state: Arc<State>) {
    let mut tick = ticker(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let due: Vec<(Key, PlacementStatus)> = {
            let running = lock(&state.running);
            let now = Timestamp::now();
            running
                .iter()
                .filter(|(_, r)| r.last_write.elapsed() >= state.intervals.usage)
                .map(|((ns, name), r)| {
                    let secs = u64::try_from(now.duration_since(r.start).as_secs()).unwrap_or(0);
                    let status = PlacementStatus {
                        phase: Some(PlacementPhase::Running),
                        local_job: Some(name.clone()),
                        active_replicas: r.replicas,
                        start_time: Some(Time(r.start)),
                        gpu_seconds: u64::from(r.gpus) * secs,
                        ..Default::default()
                    };
                    ((ns.clone(), name.clone()), status)
                })
                .collect()
        };
        futures::stream::iter(due)
            .for_each_concurrent(IN_FLIGHT, |(key, status)| {
                let state = &state;
                async move {
                    if write_status(state, &key.0, &key.1, &status).await
                        && let Some(r) = lock(&state.running).get_mut(&key)
                    {
                        r.last_write = Instant::now();
                    }
                }
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_still_running_counts_as_long_as_it_has_run() {
        let r = Round::default();
        r.start();
        r.end();
        assert!(r.take() < Duration::from_secs(1));
        r.start();
        *lock(&r.started) = Some(Instant::now() - Duration::from_secs(30));
        assert!(r.take() >= Duration::from_secs(30));
        assert!(r.take() >= Duration::from_secs(30), "still running");
        r.end();
        assert!(
            r.take() >= Duration::from_secs(30),
            "the longest finished round"
        );
        assert_eq!(r.take(), Duration::ZERO);
    }

    #[test]
    fn exactly_the_fraction_of_jobs_keeps_running_spread_evenly() {
        let per_million = 100_000; // 0.1
        let picked: Vec<u64> = (0..30).filter(|i| runs(*i, per_million)).collect();
        assert_eq!(picked, [9, 19, 29]);
        for n in [1_000, 10_000, 100_000] {
            let counted = (0..n).filter(|i| runs(*i, per_million)).count() as u64;
            assert_eq!(counted, running_of(n, per_million));
            assert_eq!(counted, n / 10);
        }
        assert_eq!((0..100).filter(|i| runs(*i, 0)).count(), 0);
        assert_eq!((0..100).filter(|i| runs(*i, 1_000_000)).count(), 100);
    }

    #[test]
    fn running_gpus_are_taken_from_the_inventory_node_after_node() {
        let (nodes, total, free, summary) = inventory("m0001", 2, 10);
        assert_eq!(nodes[0].name, "m0001-n0");
        assert_eq!((nodes[0].free_gpus, nodes[1].free_gpus), (0, 6));
        assert_eq!((total, free, summary.as_str()), (16, 6, "H100x16"));
        let (_, _, free, _) = inventory("m0001", 1, 50);
        assert_eq!(free, 0, "never below zero");
    }

    #[test]
    fn the_simulators_writes_are_keyed_as_the_apiserver_counts_them() {
        let before = SimTotals {
            renewals: 100,
            ..Default::default()
        };
        let after = SimTotals {
            renewals: 300,
            renewals_failed: 2,
            statuses: 40,
            member_reads: 7,
            ..Default::default()
        };
        let w = after.since(&before).writes();
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[0].key.resource_label(), "leases (coordination.k8s.io)");
        assert_eq!(
            (w[0].key.verb.as_str(), w[0].total, w[0].failed),
            ("PATCH", 200, 2)
        );
        assert_eq!(w[1].key.resource_label(), "placements/status (gpufed.io)");
        assert_eq!(w[1].key.verb, "APPLY");
    }
}
